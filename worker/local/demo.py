"""What ``factmatch demo`` and ``factmatch up`` do with the embedded stack: prepare the
database, run a worker in-process, and judge the demo's results against its labels."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from worker.adapter.runtime import WorkerRuntime, running
from worker.adapter.topics import ensure_topics
from worker.configs import index_fact_check_images, open_store
from worker.local.demo_images import with_demo_images
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.settings import Settings
from worker.storage import apply_migrations

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
# Three kinds of bad input the demo mixes into its stream; each must come back as a dead letter.
MALFORMED = [b"{not json", b'{"id": "p-bad", "text": ""}', b"\xff\xfe not utf-8"]


def is_demo_file(path: Path, name: str) -> bool:
    """Whether ``path`` is the demo's own ``name`` (the demo's images go with its own data only)."""
    return path.resolve() == (DEMO_DIR / name).resolve()


async def prepare_database(settings: Settings, fact_checks_file: Path | None) -> None:
    """Migrations, then the fact-check rows (embedded when the worker bootstraps its model) and
    their images' hashes; the demo's own fact-checks get the photo one of them debunks."""
    await apply_migrations(settings.require_database_url())
    if fact_checks_file is not None:
        fact_checks = corpus_from_rows(load_jsonl(fact_checks_file))
        if is_demo_file(fact_checks_file, "factchecks.jsonl"):
            fact_checks = with_demo_images(fact_checks)
        async with open_store(settings, migrate_first=False) as store:
            await store.corpus.upsert_fact_checks(fact_checks)
            await index_fact_check_images(store, settings, fact_checks)


@contextlib.asynccontextmanager
async def local_console(settings: Settings) -> AsyncIterator[tuple[str, str, str]]:
    """The console on the local stack, with an admin login made for it: (url, name, password)."""
    import secrets

    from worker.console.auth import hash_password
    from worker.console.runtime import ConsoleRuntime

    runtime = ConsoleRuntime(settings)
    port = await runtime.start()
    try:
        name, password = "moderator", secrets.token_urlsafe(9)
        await runtime.store.accounts.put_user(name, "admin", hash_password(password))
        yield f"http://{settings.console_host}:{port}/", name, password
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[WorkerRuntime]:
    await ensure_topics(settings)
    async with running(settings) as runtime:
        yield runtime


def expected_fact_check(post: dict[str, Any]) -> str | None:
    meta = post.get("meta")
    value = meta.get("expected_fact_check_id") if isinstance(meta, dict) else None
    return str(value) if value else None


def correct_best_matches(posts: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(posts whose best match is their labelled fact-check, posts with a label)."""
    expected = {str(p["id"]): expected_fact_check(p) for p in posts}
    labelled = [pid for pid, fc in expected.items() if fc]
    hits = sum(
        1
        for pid in labelled
        if pid in results and results[pid]["matches"] and results[pid]["matches"][0]["fact_check_id"] == expected[pid]
    )
    return hits, len(labelled)


def abstentions(posts: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(posts with no fact-check that got no match, posts with no fact-check): the demo's chit-chat."""
    unlabelled = [str(p["id"]) for p in posts if not expected_fact_check(p)]
    return sum(1 for pid in unlabelled if pid in results and not results[pid]["matches"]), len(unlabelled)
