"""Shadow evaluation on a live stream: a candidate answers posts beside the active version,
publishes nothing, and its evidence gates the promotion."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import consume_until, produce
from tests.integration.test_worker import bodies, post, seed_corpus
from tests.tiny_models import build_tiny_bert
from worker.adapter.runtime import running
from worker.configs import rollout_config
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.core.lifecycle import LifecycleError
from worker.core.rollout import promote, start_shadow
from worker.wire import Feedback

TEXTS = [
    "5G towers spread the coronavirus",
    "vaccines cause autism",
    "drinking bleach cures covid",
    "the moon landing was faked",
    "garlic protects against the virus",
]


async def _until(check: Any, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_a_shadow_version_answers_live_posts_unpublished_and_gates_the_promotion(
    stack_settings: Any, tmp_path: Path
) -> None:
    settings = stack_settings.model_copy(update={"shadow_share": 1.0, "model_poll_interval_s": 0.5})
    await seed_corpus(settings)
    other = build_tiny_bert(tmp_path / "other", seed=1)
    n = 30
    async with running(settings) as runtime:
        store = runtime.store
        active = runtime.models.current().version
        await store.registry.register_version("shadow-v", str(other), 64, status="candidate", base=str(other))
        encoder = SentenceTransformerEncoder(str(other), EncoderOptions(device="cpu"))
        await start_shadow(store, rollout_config(settings), "shadow-v", encoder, progress=False)

        async def loaded() -> bool:
            shadow = runtime.models.shadow()
            return shadow is not None and shadow.version == "shadow-v"

        await _until(loaded)
        await produce(settings.kafka_bootstrap, settings.topic_posts, [post(i, TEXTS[i % 5]) for i in range(n)])
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= n)

        async def recorded() -> bool:
            return (await store.shadow.shadow_report("shadow-v")).posts >= n

        await _until(recorded)
        results = bodies(records, settings.topic_matches)
        published = {r["post_id"]: (r["matches"][0]["fact_check_id"] if r["matches"] else None) for r in results}
        # Moderators judged two posts: the shadow's rank 1 confirmed on one, rejected on the other.
        with psycopg.connect(settings.require_database_url()) as conn:
            rows = conn.execute(
                "SELECT post_id, active_version, active_fact_check_id, shadow_fact_check_id FROM shadow_results"
                " WHERE model_version = 'shadow-v' ORDER BY post_id"
            ).fetchall()
        judged = [r for r in rows if r[3] is not None][:2]
        await store.feedback.insert_feedback(
            [
                Feedback(post_id=pid, post_text="x", fact_check_id=fc, verdict=verdict, moderator="ana")
                for (pid, _, _, fc), verdict in zip(judged, ("confirm", "reject"), strict=True)
            ]
        )
        report = await store.shadow.shadow_report("shadow-v")
        posts = runtime.metrics.registry.get_sample_value("factmatch_shadow_posts_total", {"model_version": "shadow-v"})

        # The gate: not enough shadow posts -> refused; enough -> promoted, and the shadow flag goes.
        strict = settings.model_copy(update={"gate_shadow_min_posts": 10 * n})
        with pytest.raises(LifecycleError, match="shadow post"):
            await promote(store, rollout_config(strict), "shadow-v", encoder, progress=False)
        # Two different random encoders cannot agree on every post's rank 1.
        assert report.agreement is not None and report.agreement < 1.0
        picky = settings.model_copy(update={"gate_shadow_min_posts": n, "gate_shadow_min_agreement": 1.0})
        with pytest.raises(LifecycleError, match="agrees"):
            await promote(store, rollout_config(picky), "shadow-v", encoder, progress=False)
        await promote(
            store, rollout_config(settings.model_copy(update={"gate_shadow_min_posts": n})), "shadow-v", encoder
        )
        promoted = await store.registry.get_version("shadow-v")
        assert promoted is not None and promoted.status == "active" and not promoted.shadow
        assert await store.shadow.shadow_version_name() is None

    # Nothing reached `matches` from the shadow: one result per post, all from the active version.
    assert len(results) == n and len(published) == n
    assert {r["model_version"] for r in results} == {active}
    # What the shadow recorded as the active answer is what was published.
    assert len(rows) == n and all(r[1] == active and r[2] == published[r[0]] for r in rows)
    assert report.posts == n and report.agreement is not None and 0 <= report.agreement <= 1
    assert report.score_shift and all(-2 <= v <= 2 for v in report.score_shift.values()), report
    assert report.judged == 2 and report.precision == 0.5
    assert posts == n


async def test_shadow_commands_start_report_gate_and_stop(
    database_url: str, make_settings: Any, tmp_path: Path
) -> None:
    import shutil
    import subprocess
    import sys

    from tests.conftest import settings_env
    from worker.storage import Store

    settings = make_settings(database_url=database_url, model_store=tmp_path / "store")
    await seed_corpus(settings)
    other = build_tiny_bert(tmp_path / "other", seed=1)
    store = Store(database_url)
    await store.open()
    try:
        await store.registry.register_version("shadow-v", str(other), 64, status="candidate", base=str(other))
    finally:
        await store.close()
    factmatch = shutil.which("factmatch", path=str(Path(sys.executable).parent))
    assert factmatch
    env = settings_env(settings)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [factmatch, *args], env={**env, **extra}, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    started = await asyncio.to_thread(cli, "shadow", "start", "shadow-v")
    assert started.returncode == 0, started.stderr
    listed = await asyncio.to_thread(cli, "models", "list")
    assert "ready (shadow)" in listed.stdout, listed.stdout
    as_json = json.loads((await asyncio.to_thread(cli, "models", "list", "--json")).stdout)
    assert {(v["version"], v["status"], v["shadow"]) for v in as_json} >= {("shadow-v", "ready", True)}
    # A left-over local-stack file in the working directory is named, on stderr (stdout stays JSON).
    (tmp_path / ".factmatch").mkdir()
    (tmp_path / ".factmatch" / "stack.env").write_text("FACTMATCH_LOG_LEVEL=INFO\n")
    noted = await asyncio.to_thread(cli, "quarantine", "list", "--json")
    assert json.loads(noted.stdout) == [] and ".factmatch/stack.env" in noted.stderr.replace("\n", "")
    (tmp_path / ".factmatch" / "stack.env").unlink()
    gated = await asyncio.to_thread(cli, "rollout", "shadow-v", FACTMATCH_GATE_SHADOW_MIN_POSTS="5")
    assert gated.returncode == 1 and "has 0 shadow post(s); the gate needs 5" in gated.stderr.replace("\n", " ")
    assert "Traceback" not in gated.stderr
    reported = await asyncio.to_thread(cli, "shadow", "report")
    assert reported.returncode == 0 and "shadow evidence for shadow-v" in reported.stdout
    reported_json = json.loads((await asyncio.to_thread(cli, "shadow", "report", "--json")).stdout)
    assert reported_json["version"] == "shadow-v" and reported_json["posts"] == 0
    stopped = await asyncio.to_thread(cli, "shadow", "stop")
    assert stopped.returncode == 0
    store = Store(database_url)
    await store.open()
    try:
        assert await store.shadow.shadow_version_name() is None
        mv = await store.registry.get_version("shadow-v")
        assert mv is not None and mv.status == "ready" and mv.indexed_at is not None
    finally:
        await store.close()
