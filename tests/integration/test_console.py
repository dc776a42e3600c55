"""The moderators' console in a real headless Chromium (Playwright), against the real tansu
broker, Postgres and a worker: log in, a post appears live, confirm it with the keyboard, the
Feedback record reaches the feedback topic for an independent consumer, the audit row exists;
claims hide an item from a second session; roles and CSRF are enforced on the server; a post's
markup is shown as text and never runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import expect

from tests.conftest import consume_until, eventually, produce
from tests.fakes import cosine_is_probability
from tests.integration.test_worker import seed_corpus
from worker.adapter.runtime import running
from worker.adapter.topics import ensure_topics
from worker.configs import rollout_config
from worker.console.auth import hash_password
from worker.console.runtime import ConsoleRuntime
from worker.core.rollout import promote
from worker.domain import Threshold
from worker.settings import Settings

CHROMIUM = shutil.which("chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> 5G spreads the virus'


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if CHROMIUM is None:
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def console_settings(kafka: str, database_url: str, make_settings: Callable[..., Settings]) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    settings = make_settings(
        kafka_bootstrap=kafka,
        database_url=database_url,
        topic_feedback=f"feedback-{suffix}",
        feedback_group_id=f"feedback-{suffix}",
        console_group_id=f"console-{suffix}",
        console_port=0,
        console_undo_s=1.0,
        console_lease_s=60,
    )
    await ensure_topics(settings, partitions=3)
    return settings


async def tier_everything(runtime: Any) -> None:
    """A decision model for the tiny random model: every candidate is at least a suggestion."""
    version = runtime.models.current().version
    cuts = [Threshold("*", tier, 0.0, 0.9, 0.9, 0.9, 10) for tier in ("match", "suggestion")]  # type: ignore[arg-type]
    await runtime.store.decisions.save_decision(version, cosine_is_probability().to_dict(), cuts, source="test")

    async def tiered() -> bool:
        return bool(runtime.models.current().decisions.thresholds)

    assert await eventually(tiered, 15)


async def sign_in(browser: Any, base: str, name: str) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill('input[name="name"]', name)
    await page.fill('input[name="password"]', f"{name}-password")
    await page.click('button[type="submit"]')
    await page.wait_for_selector("body[data-page=queue]")
    return page


async def test_a_moderator_works_the_live_queue_in_a_real_browser(
    console_settings: Settings, browser: Any, tmp_path: Path
) -> None:
    settings = console_settings
    await seed_corpus(settings)
    async with running(settings) as worker:
        await tier_everything(worker)
        for name, role in (("ana", "moderator"), ("bob", "moderator"), ("root", "admin")):
            await worker.store.accounts.put_user(name, role, hash_password(f"{name}-password"))  # type: ignore[arg-type]
        console = ConsoleRuntime(settings)
        port = await console.start()
        base = f"http://127.0.0.1:{port}"
        try:
            ana = await sign_in(browser, base, "ana")
            assert await ana.locator("li.empty").count() == 1
            await ana.screenshot(path=str(tmp_path / "empty.png"))
            # A post produced to `posts` appears in the open queue, no reload.
            sent = time.monotonic()
            await produce(
                settings.kafka_bootstrap,
                settings.topic_posts,
                [(b"p-1", json.dumps({"id": "p-1", "text": "5G towers spread the coronavirus"}).encode())],
            )
            await ana.wait_for_selector('li.row[data-post="p-1"]', timeout=60_000)
            print(f"post produced -> row shown live: {time.monotonic() - sent:.2f} s")
            await produce(
                settings.kafka_bootstrap,
                settings.topic_posts,
                [(b"p-2", json.dumps({"id": "p-2", "text": HOSTILE, "platform": "x"}).encode())],
            )
            await ana.wait_for_selector('li.row[data-post="p-2"]', timeout=60_000)
            assert await ana.locator("#depth").text_content() == "2"
            if os.environ.get("FACTMATCH_SCREENSHOTS"):
                await ana.screenshot(path=str(DOCS / "console-queue.png"))

            # Keyboard first: select p-1's row, open it, confirm its first match.
            order = await ana.eval_on_selector_all("li.row", "rows => rows.map(r => r.dataset.post)")
            for _ in range(order.index("p-1")):
                await ana.keyboard.press("j")
            await ana.keyboard.press("Enter")
            await ana.wait_for_selector('#item[data-post="p-1"]')

            # The session cookie is HttpOnly and SameSite=Strict.
            (cookie,) = await ana.context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            # A second session does not see the item ana holds.
            bob = await sign_in(browser, base, "bob")
            assert await bob.locator('li.row[data-post="p-1"]').count() == 0
            assert await bob.locator('li.row[data-post="p-2"]').count() == 1
            taken = await bob.goto(f"{base}/items/p-1")
            assert taken is not None and taken.status == 409

            if os.environ.get("FACTMATCH_SCREENSHOTS"):
                await ana.screenshot(path=str(DOCS / "console-item.png"))
            first = await ana.locator("li.match").first.get_attribute("data-fact-check")
            await ana.keyboard.press("c")
            await expect(ana.locator("#status")).to_have_text(re.compile("^done"))

            # The verdict leaves after its undo window, as one Feedback record, for any consumer.
            records = await consume_until(
                settings.kafka_bootstrap, [settings.topic_feedback], lambda rs: len(rs) >= 1, timeout_s=30
            )
            (feedback,) = [json.loads(r.value) for r in records]
            assert feedback["post_id"] == "p-1" and feedback["fact_check_id"] == first
            assert feedback["verdict"] == "confirm" and feedback["moderator"] == "ana"
            assert feedback["post_text"] == "5G towers spread the coronavirus"
            assert feedback["model_version"] == worker.models.current().version
            audit = await worker.store.reviews.audit_log("p-1")
            assert [(a["action"], a["user_name"], a["verdict"]) for a in audit if a["action"] == "verdict"] == [
                ("verdict", "ana", "confirm")
            ]

            metrics = await (await ana.request.get(f"{base}/metrics")).text()
            assert 'factmatch_console_verdicts_total{verdict="confirm"} 1.0' in metrics

            # A post's markup is text: shown as typed, never run.
            await ana.goto(f"{base}/items/p-2")
            shown = await ana.locator("#post-text").text_content()
            assert shown is not None and "<script>window.__pwned = 1</script>" in shown and "onerror=" in shown
            assert await ana.locator("#post-text script, #post-text img").count() == 0
            assert await ana.evaluate("window.__pwned === undefined")

            # "None of these", then undo within the window: nothing is sent.
            matches = await ana.locator("li.match").count()
            await ana.keyboard.press("n")
            await expect(ana.locator("#undo")).to_be_enabled()
            await ana.keyboard.press("u")
            await expect(ana.locator("#status")).to_have_text(re.compile("^undone"))
            states = [v.state for v in await worker.store.reviews.verdicts("p-2")]
            assert states == ["undone"] * matches

            # The server enforces roles and CSRF, whatever a page shows.
            csrf = await bob.locator('meta[name="csrf"]').get_attribute("content")
            refused = await bob.request.post(f"{base}/admin/rollback", form={"csrf": csrf, "confirm": "rollback"})
            assert refused.status == 403
            assert (await bob.request.get(f"{base}/admin")).status == 403
            forged = await ana.request.post(f"{base}/items/p-2/verdicts", form={"verdict": "none"})
            assert forged.status == 403
            assert [v.state for v in await worker.store.reviews.verdicts("p-2")] == ["undone"] * matches
            # Admins: versions, the dead letters (a post that is not JSON, its markup shown as
            # text), and a quarantine cleared from the page.
            await produce(settings.kafka_bootstrap, settings.topic_posts, [(b"bad", b"<b>not json</b> \x00 tail")])
            await worker.store.quarantine.quarantine(first or "", "over-match (test)", "test")

            async def lettered() -> bool:
                return bool((await worker.store.reviews.dead_letters())[0])

            assert await eventually(lettered, 60)
            root = await sign_in(browser, base, "root")
            admin = await root.goto(f"{base}/admin")
            assert admin is not None and admin.status == 200
            assert await root.locator("table.versions td").first.text_content() == worker.models.current().version
            assert "invalid_json: 1" in (await root.locator("p.counts").text_content() or "")
            preview = await root.locator("table.letters code").first.text_content()
            assert preview is not None and preview.startswith("<b>not json</b>")
            assert await root.locator("table.letters b").count() == 0
            await root.click("ul.quarantine button")
            await expect(root.locator("#status")).to_contain_text('"cleared":true')
            assert first not in await worker.store.quarantine.quarantined()

            # An admin rolls back from the page: a newer version was promoted, the page brings
            # the earlier one back after the typed confirmation.
            earlier = worker.models.current()
            registered = await worker.store.registry.get_version(earlier.version)
            assert registered is not None
            await worker.store.registry.register_version("v-next", registered.path, registered.dimension)
            await promote(worker.store, rollout_config(settings), "v-next", earlier.encoder, progress=False)
            await root.goto(f"{base}/admin")
            await root.fill('#rollback input[name="confirm"]', "rollback")
            await root.click('#rollback button[type="submit"]')
            await expect(root.locator("#status")).to_contain_text(earlier.version)
            active = await worker.store.registry.active_version()
            assert active is not None and active.version == earlier.version
        finally:
            await console.stop()


@pytest.mark.parametrize(("proxies", "expected"), [("127.0.0.1", 200), ("10.9.8.7", 401)])
async def test_an_identity_header_is_believed_only_from_the_trusted_proxy(
    console_settings: Settings, proxies: str, expected: int
) -> None:
    from playwright.async_api import async_playwright

    settings = console_settings.model_copy(
        update={"console_proxy_user_header": "X-Forwarded-User", "console_trusted_proxies": proxies}
    )
    console = ConsoleRuntime(settings)
    port = await console.start()
    try:
        await console.store.accounts.put_user("ana", "moderator", None)
        async with async_playwright() as p:
            client = await p.request.new_context(base_url=f"http://127.0.0.1:{port}")
            named = await client.get("/queue/rows", headers={"X-Forwarded-User": "ana"})
            assert named.status == expected
            stranger = await client.get("/queue/rows", headers={"X-Forwarded-User": "mallory"})
            assert stranger.status == 401, "the account must exist"
            await client.dispose()
    finally:
        await console.stop()


def test_console_user_add_reads_the_password_from_stdin_and_refuses_a_short_one(
    database_url: str, tmp_path: Path
) -> None:
    import asyncio
    import subprocess
    import sys

    from argon2 import PasswordHasher

    from worker.storage import Store

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTMATCH_")}
    env["FACTMATCH_DATABASE_URL"] = database_url

    def add(name: str, password: str, *role: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "console", "user", "add", name, *role],
            input=password + "\n",
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    created = add("lee", "a long enough password", "--role", "admin")
    assert created.returncode == 0 and "created lee (admin)" in created.stdout, created.stderr
    assert "a long enough password" not in created.stdout + created.stderr
    short = add("kim", "short")
    assert short.returncode == 2 and "8 characters" in short.stderr
    assert add("kim", "a long enough password", "--role", "owner").returncode == 2

    async def stored() -> tuple[str, str | None, bool]:
        store = Store(database_url)
        await store.open()
        try:
            lee, kim = await store.accounts.user("lee"), await store.accounts.user("kim")
        finally:
            await store.close()
        assert lee is not None and lee.password_hash is not None
        return lee.role, lee.password_hash, kim is None

    role, hashed, no_kim = asyncio.run(stored())
    assert role == "admin" and no_kim and hashed is not None
    assert PasswordHasher().verify(hashed, "a long enough password")


async def test_the_trending_page_shows_a_fact_check_the_stream_keeps_matching_with_its_sparkline(
    console_settings: Settings, browser: Any
) -> None:
    # The copies' claim texts are the same text, so one vector; a cut near 1 keeps the other claim
    # out whatever the tiny model's build (two unrelated claims reach 0.86-0.94 across builds).
    settings = console_settings.model_copy(update={"cluster_similarity": 0.99})
    await seed_corpus(settings)
    async with running(settings) as worker:
        await tier_everything(worker)
        await worker.store.accounts.put_user("ana", "moderator", hash_password("ana-password"))
        claim = "5G towers spread the coronavirus"
        copies = [claim, f"RT @a: {claim}", f"{claim} https://t.co/x", f"{claim} \U0001f631", f"  {claim}"]
        posts = [(f"t-{i}".encode(), json.dumps({"id": f"t-{i}", "text": t}).encode()) for i, t in enumerate(copies)]
        await produce(settings.kafka_bootstrap, settings.topic_posts, posts)
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 5)
        top = {json.loads(r.value)["matches"][0]["fact_check_id"] for r in records}
        assert len(top) == 1, "one claim, one best match"
        [fact_check] = top
        console = ConsoleRuntime(settings)
        port = await console.start()
        try:
            page = await sign_in(browser, f"http://127.0.0.1:{port}", "ana")
            await page.click('a[href="/trending"]')
            row = page.locator(f'table.trending tr[data-fact-check="{fact_check}"]')
            await expect(row).to_have_count(1)
            cells = await row.locator("td").all_text_contents()
            assert cells[2:5] == ["5", "5", "5"]  # last hour, day, week
            assert cells[7].strip() == "unknown 5"
            points = await row.locator("svg.spark polyline").get_attribute("points")
            assert points is not None and len(points.split()) == 24
            if os.environ.get("FACTMATCH_SCREENSHOTS"):
                await page.screenshot(path=str(DOCS / "console-trending.png"))
        finally:
            await console.stop()


async def test_a_claim_no_fact_check_matches_is_listed_as_needing_a_fact_check(
    console_settings: Settings, browser: Any
) -> None:
    settings = console_settings
    await seed_corpus(settings)
    async with running(settings) as worker:  # never calibrated: the worker abstains on every post
        await worker.store.accounts.put_user("ana", "moderator", hash_password("ana-password"))
        claim = "Purple elephants secretly run the national weather service"
        copies = [claim, f"RT @a: {claim}", f"{claim} https://t.co/y", f"{claim} \U0001f418"]
        posts = [(f"e-{i}".encode(), json.dumps({"id": f"e-{i}", "text": t}).encode()) for i, t in enumerate(copies)]
        await produce(settings.kafka_bootstrap, settings.topic_posts, posts)
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 4)
        clusters = {json.loads(r.value)["cluster_id"] for r in records}
        assert len(clusters) == 1
        [cluster] = clusters
        console = ConsoleRuntime(settings)
        port = await console.start()
        try:
            page = await sign_in(browser, f"http://127.0.0.1:{port}", "ana")
            await page.click('a[href="/emerging"]')
            row = page.locator(f'table.emerging tr[data-cluster="{cluster}"]')
            await expect(row).to_have_count(1)
            cells = await row.locator("td").all_text_contents()
            assert claim in cells[0] and cells[2:4] == ["4", "4"]
            assert await page.locator("table.emerging tr[data-cluster]").count() == 1
            if os.environ.get("FACTMATCH_SCREENSHOTS"):
                await page.screenshot(path=str(DOCS / "console-emerging.png"))
        finally:
            await console.stop()


async def test_a_moderator_confirms_a_claims_copies_at_once_on_its_cluster_page(
    console_settings: Settings, browser: Any
) -> None:
    # The copies' claim texts are the same text, so one vector; a cut near 1 keeps the other claim
    # out whatever the tiny model's build (two unrelated claims reach 0.86-0.94 across builds).
    settings = console_settings.model_copy(update={"cluster_similarity": 0.99})
    await seed_corpus(settings)
    async with running(settings) as worker:
        await tier_everything(worker)
        await worker.store.accounts.put_user("ana", "moderator", hash_password("ana-password"))
        claim = "5G towers spread the coronavirus"
        texts = [claim, f"RT @a: {claim}", f"{claim} https://t.co/z", "The moon landing was staged in a studio"]
        posts = [(f"c-{i}".encode(), json.dumps({"id": f"c-{i}", "text": t}).encode()) for i, t in enumerate(texts)]
        await produce(settings.kafka_bootstrap, settings.topic_posts, posts)
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 4)
        clusters = {json.loads(r.value)["post_id"]: json.loads(r.value)["cluster_id"] for r in records}
        seen = [(json.loads(r.value)["post_id"], json.loads(r.value).get("cluster"), r.offset) for r in records]
        assert clusters["c-0"] == clusters["c-1"] == clusters["c-2"] != clusters["c-3"], seen
        console = ConsoleRuntime(settings)
        port = await console.start()
        base = f"http://127.0.0.1:{port}"
        try:
            page = await sign_in(browser, base, "ana")
            # Four posts, two entries: the claim's three copies are one row.
            row = page.locator(f'li.row[data-cluster="{clusters["c-0"]}"]')
            await expect(row).to_have_count(1, timeout=60_000)
            await expect(page.locator("li.row")).to_have_count(2)
            assert (await row.locator(".posts").text_content() or "").strip() == "×3"
            order = await page.eval_on_selector_all("li.row", "rows => rows.map(r => r.dataset.cluster || '')")
            for _ in range(order.index(str(clusters["c-0"]))):
                await page.keyboard.press("j")
            await page.keyboard.press("Enter")
            await page.wait_for_selector(f'#item[data-cluster="{clusters["c-0"]}"]')
            listed = await page.eval_on_selector_all("li.cluster-post", "ps => ps.map(p => p.dataset.post)")
            assert sorted(listed) == ["c-0", "c-1", "c-2"]
            if os.environ.get("FACTMATCH_SCREENSHOTS"):
                await page.screenshot(path=str(DOCS / "console-cluster.png"))
            first = await page.locator("li.match").first.get_attribute("data-fact-check")
            await page.keyboard.press("c")
            await expect(page.locator("#status")).to_have_text(re.compile("^done for 3 post"))
            await expect(page.locator("li.cluster-post.done")).to_have_count(3)

            # One Feedback record per post reaches the feedback topic, after the undo window.
            sent = await consume_until(
                settings.kafka_bootstrap, [settings.topic_feedback], lambda rs: len(rs) >= 3, timeout_s=30
            )
            feedback = sorted((json.loads(r.value) for r in sent), key=lambda f: f["post_id"])
            assert [(f["post_id"], f["fact_check_id"], f["verdict"]) for f in feedback] == [
                (p, first, "confirm") for p in ("c-0", "c-1", "c-2")
            ]
            assert [f["post_text"] for f in feedback] == texts[:3], "each record carries its own post's text"
            await page.goto(base + "/")
            await expect(page.locator("li.row")).to_have_count(1)
            assert await page.locator('li.row[data-post="c-3"]').count() == 1
        finally:
            await console.stop()


async def test_the_console_shows_a_posts_images_through_itself_never_the_original_bytes(
    console_settings: Settings,
) -> None:
    """A post's image link and its fact-check's image, fetched by the console under the workers'
    network policy and served re-encoded; a refused link is a 404; only a signed-in session asks."""
    from playwright.async_api import async_playwright

    from tests.integration.test_image_fetch import HOST, PNG, _serve
    from tests.unit.test_images import photo
    from worker.images.decode import decode
    from worker.images.pdq import hamming, pdq_hash

    runner, port = await _serve()
    cdn = f"http://{HOST}:{port}"
    settings = console_settings.model_copy(
        update={
            "image_allow_networks": f"{HOST}/32",
            "console_proxy_user_header": "X-Forwarded-User",
            "console_trusted_proxies": "127.0.0.1",
        }
    )
    await seed_corpus(settings)
    try:
        async with running(settings) as worker:
            await tier_everything(worker)
            await worker.store.accounts.put_user("ana", "moderator", None)
            fc = {"id": "fc-photo", "claim": "A shark swims on a flooded highway", "images": [{"url": f"{cdn}/image"}]}
            await produce(settings.kafka_bootstrap, settings.topic_factchecks, [(b"fc-photo", json.dumps(fc).encode())])

            async def indexed() -> bool:
                return await worker.store.images.image_links("fc-photo") == [f"{cdn}/image"]

            assert await eventually(indexed, 30)
            links = [{"url": f"{cdn}/image"}, {"url": f"http://127.0.0.1:{port}/image"}]
            post = {"id": "p/img 1", "text": "look at this", "images": links}
            await produce(settings.kafka_bootstrap, settings.topic_posts, [(b"p", json.dumps(post).encode())])
            console = ConsoleRuntime(settings)
            console_port = await console.start()
            try:

                async def queued() -> bool:
                    return await console.store.reviews.item("p/img 1") is not None

                assert await eventually(queued, 30)
                async with async_playwright() as p:
                    client = await p.request.new_context(base_url=f"http://127.0.0.1:{console_port}")
                    ana = {"X-Forwarded-User": "ana"}
                    shown = await client.get("/images/posts/0/p%2Fimg%201", headers=ana)
                    assert shown.status == 200 and shown.headers["content-type"] == "image/jpeg"
                    body = await shown.body()
                    assert body != PNG and body[:3] == b"\xff\xd8\xff"  # re-encoded, not the original
                    near = hamming(pdq_hash(decode(body, 10**7)).hex, pdq_hash(np.asarray(photo(7))).hex)
                    assert near <= 31
                    refused = await client.get("/images/posts/1/p%2Fimg%201", headers=ana)
                    assert refused.status == 404 and "address_refused" in await refused.text()
                    assert (await client.get("/images/posts/5/p%2Fimg%201", headers=ana)).status == 404
                    assert (await client.get("/images/fact-checks/0/fc-photo", headers=ana)).status == 200
                    assert (await client.get("/images/posts/0/p%2Fimg%201")).status == 401
                    page = await (await client.get("/items/p%2Fimg%201", headers=ana)).text()
                    assert 'src="/images/posts/0/p/img%201"' in page and "not read (address_refused)" in page
                    assert 'src="/images/fact-checks/0/fc-photo"' in page and "same image" in page
                    await client.dispose()
            finally:
                await console.stop()
    finally:
        await runner.cleanup()
