"""The moderators' console under load, on the embedded stack (tansu + Postgres), one console process.

1. Pages: the queue page (grouped by claim cluster), an item page and a cluster page (claims
   up to 100 posts) with ``--items`` (100,000) review items in Postgres: one viral cluster holds
   every tenth item, the rest are in clusters of five; p50 / p95 over ``--requests`` requests
   each (a signed-in session, over HTTP).
2. Live: a result produced to ``matches`` -> its row in an open queue page, in a real headless
   Chromium, p50 / p95 over ``--live`` results.
3. Concurrency: ``--sessions`` (20) moderators at once, each opening and confirming items from its
   own queue: errors, and items two sessions held at once (must be 0).

    .venv/bin/python benchmarks/console.py [--items 100000] [--out benchmarks/results/console_2core.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.console.auth import hash_password
from worker.console.runtime import ConsoleRuntime
from worker.local.stack import start_broker, start_database
from worker.settings import Settings
from worker.storage import Store, apply_migrations
from worker.wire import Match, MatchResult

PASSWORD = "benchmark-password"


def result(i: int, at: datetime) -> MatchResult:
    tier = "match" if i % 3 == 0 else "suggestion"
    matches = [
        Match(
            fact_check_id=f"fc-{(i * 7 + k) % 5000}",
            score=0.8,
            rank=k + 1,
            claim=f"claim {(i * 7 + k) % 5000}",
            title=f"title {k}",
            tier=tier,  # type: ignore[arg-type]
            probability=round(0.5 + (i % 50) / 100, 2),
            shared_terms=["vaccin"],
        )
        for k in range(3)
    ]
    return MatchResult(
        post_id=f"p-{i}",
        lang=("en", "es", "fr", "de", "pt")[i % 5],
        platform=("x", "tiktok", "facebook")[i % 3],
        matches=matches,
        model_version="v1",
        processed_at=at + timedelta(seconds=i),
        text=f"post {i}: vaccines contain microchips, a claim said again",
        cluster_id=cluster_of(i),
    )


def cluster_of(i: int) -> int:
    """Every tenth post in one viral cluster (1), the others in clusters of five."""
    return 1 if i % 10 == 0 else 2 + i % 18_000


class Client:
    """A signed-in session over plain HTTP (cookies and the CSRF token kept)."""

    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.csrf = ""
        body = urllib.parse.urlencode({"name": name, "password": PASSWORD}).encode()
        page = self.opener.open(f"{base}/login", data=body, timeout=30).read().decode()
        self.csrf = page.split('name="csrf" content="', 1)[1].split('"', 1)[0]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(f"{self.base}{path}", timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def post(self, path: str, fields: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"{self.base}{path}", data=urllib.parse.urlencode(fields).encode(), headers={"X-CSRF-Token": self.csrf}
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "n": len(ordered),
    }


def timed(client: Client, path: str, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        status, _ = client.get(path)
        samples.append(time.perf_counter() - started)
        assert status == 200, (path, status)
    return percentiles(samples)


async def live(base: str, settings: Settings, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer
    from playwright.async_api import async_playwright

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    samples = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page()
        await page.goto(f"{base}/login")
        await page.fill('input[name="name"]', "m0")
        await page.fill('input[name="password"]', PASSWORD)
        await page.click('button[type="submit"]')
        await page.wait_for_selector("body[data-page=queue]")
        for i in range(n):
            live_result = result(10_000_000 + i, datetime.now(UTC) - timedelta(days=3650))
            # The oldest surest match: the new item sorts first, so it is on the page.
            surest = [m.model_copy(update={"tier": "match", "probability": 1.0}) for m in live_result.matches]
            live_result = live_result.model_copy(update={"matches": surest, "cluster_id": None})
            await producer.send_and_wait(settings.topic_matches, live_result.model_dump_json().encode())
            sent = time.perf_counter()
            await page.wait_for_selector(f'li.row[data-post="{live_result.post_id}"]', timeout=30_000)
            samples.append(time.perf_counter() - sent)
        await browser.close()
    await producer.stop()
    return percentiles(samples)


def moderator(base: str, name: str, rounds: int) -> dict[str, Any]:
    client = Client(base, name)
    held: list[tuple[str, float, float]] = []
    errors = 0
    for _ in range(rounds):
        status, rows = client.get("/queue/rows")
        if status != 200:
            errors += 1
            continue
        ids = [chunk.split('"', 1)[0] for chunk in rows.split('data-post="')[1:]]
        for post_id in ids[:5]:
            started = time.time()
            status, _ = client.get(f"/items/{post_id}")
            if status == 409:
                continue  # another moderator holds it: the queue's claim at work
            if status != 200:
                errors += 1
                break
            code = client.post(f"/items/{post_id}/verdicts", {"verdict": "none"})
            if code not in (200, 409):
                errors += 1
            held.append((post_id, started, time.time()))
            break
    return {"held": held, "errors": errors}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database = start_database(Path(tmp) / "pg")
        broker = start_broker()
        try:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=database.url,
                kafka_bootstrap=broker.bootstrap,
                console_port=0,
                console_undo_s=0,
                console_login_attempts_per_minute=1000,
            )
            from worker.adapter.topics import ensure_topics

            await ensure_topics(settings)
            await apply_migrations(database.url)
            store = Store(database.url)
            await store.open()
            started = time.perf_counter()
            at = datetime.now(UTC) - timedelta(days=2)
            for first in range(0, args.items, 2000):
                await store.reviews.add_results([result(i, at) for i in range(first, min(args.items, first + 2000))])
            loaded_s = time.perf_counter() - started
            for k in range(args.sessions):
                await store.accounts.put_user(f"m{k}", "moderator", hash_password(PASSWORD))
            await store.close()
            print(f"{args.items} review items loaded in {loaded_s:.1f} s", flush=True)

            console = ConsoleRuntime(settings)
            port = await console.start()
            base = f"http://127.0.0.1:{port}"
            try:
                client = await asyncio.to_thread(Client, base, "m0")
                pages = {
                    "queue_page": await asyncio.to_thread(timed, client, "/", args.requests),
                    "queue_filtered_page": await asyncio.to_thread(
                        timed, client, "/?lang=fr&tier=match", args.requests
                    ),
                    "item_page": await asyncio.to_thread(timed, client, "/items/p-4243", args.requests),
                    "cluster_page": await asyncio.to_thread(timed, client, "/clusters/1", args.requests),
                }
                print(json.dumps(pages), flush=True)
                sse = await live(base, settings, args.live)
                print(f"live: {sse}", flush=True)
                runs = await asyncio.gather(
                    *(asyncio.to_thread(moderator, base, f"m{k}", args.rounds) for k in range(args.sessions))
                )
            finally:
                await console.stop()
        finally:
            broker.stop()
            database.stop()

    held = [h for run in runs for h in run["held"]]
    twice = len(held) - len({post_id for post_id, _, _ in held})
    report = {
        "items": args.items,
        **pages,
        "live_result_to_row": sse,
        "sessions": args.sessions,
        "items_worked": len(held),
        "items_held_by_two_sessions": twice,
        "errors": sum(run["errors"] for run in runs),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
