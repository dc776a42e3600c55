"""The lifecycle's rules, written once against the store's narrow parts.

Each check moves versions through :mod:`worker.core.rollout` (and follows them with
:class:`worker.core.serving.ModelManager`) over a store it is given: the in-memory store in the
unit tier (``tests/unit/test_rollout.py``) and the Postgres store in the integration tier
(``tests/integration/test_store_contract.py``). The same outcome from both is the contract that
lets core's rules be unit-tested without Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.fakes import FakeEncoder, cosine_is_probability
from worker.core.lifecycle import LifecycleError
from worker.core.rollout import (
    Bootstrap,
    RolloutConfig,
    ShippedDecision,
    apply_retention,
    bootstrap,
    prepare,
    promote,
    rollback,
    rollback_target,
    start_shadow,
)
from worker.core.serving import ModelManager, ServingEvents
from worker.domain import ShadowRow, Threshold
from worker.wire import FactCheck

DIM = 8
CONFIG = RolloutConfig(retain_versions=1)
MODEL = cosine_is_probability().to_dict()


def cut(threshold: float) -> Threshold:
    return Threshold("*", "match", threshold, 0.95, 0.96, 0.8, 40)


def corpus(n: int = 5, *, tag: str = "") -> list[FactCheck]:
    return [FactCheck(id=f"fc-{i}", claim=f"claim number {i} {tag}", title=f"title {i}", lang="en") for i in range(n)]


async def register(store: Any, version: str) -> None:
    await store.registry.register_version(version, f"/models/{version}", DIM, status="candidate")


async def status(store: Any, version: str) -> str:
    mv = await store.registry.get_version(version)
    assert mv is not None
    return str(mv.status)


async def a_fresh_store_is_bootstrapped_once_with_its_shipped_decision(store: Any) -> None:
    await store.corpus.upsert_fact_checks(corpus())
    refs: list[str] = []

    def model_ref() -> str:
        refs.append("called")
        return "/models/boot"

    shipped = ShippedDecision(MODEL, [cut(0.9)])
    boot = Bootstrap(model_ref, lambda _v, _p: FakeEncoder(DIM), lambda _ref: "boot-v1", shipped=lambda _r: shipped)
    first, second = await asyncio.gather(bootstrap(store, CONFIG, boot), bootstrap(store, CONFIG, boot))
    assert first.version == second.version == "boot-v1" and first.status == "active"
    assert len(refs) == 1, "two replicas starting together bootstrap once"
    assert await store.embeddings.count_embeddings("boot-v1") == 5
    assert await store.corpus.fact_checks_missing("boot-v1") == []
    stored = await store.decisions.stored_decision("boot-v1")
    assert stored is not None and stored.cuts[("*", "match")] == pytest.approx(0.9)
    assert (await bootstrap(store, CONFIG, boot)).version == "boot-v1" and len(refs) == 1


async def a_promotion_indexes_everything_before_it_activates_and_retires_the_old_version(store: Any) -> None:
    await store.corpus.upsert_fact_checks(corpus())
    for version in ("v1", "v2"):
        await register(store, version)
        await promote(store, CONFIG, version, FakeEncoder(DIM), progress=False)
    assert await status(store, "v1") == "retired" and await status(store, "v2") == "active"
    assert await store.embeddings.count_embeddings("v2") == 5
    active = await store.registry.active_version()
    assert active is not None and active.version == "v2" and active.indexed_at is not None
    await register(store, "v3")
    await store.registry.set_status("v3", "rejected")
    with pytest.raises(RuntimeError, match="only a candidate or ready"):
        await promote(store, CONFIG, "v3", FakeEncoder(DIM), progress=False)
    await register(store, "v4")
    with pytest.raises(RuntimeError, match="no complete index"):
        await store.registry.activate("v4")
    assert (await store.registry.active_version()).version == "v2"  # type: ignore[union-attr]


async def the_shadow_gate_refuses_a_promotion_without_enough_agreeing_evidence(store: Any) -> None:
    await store.corpus.upsert_fact_checks(corpus())
    await register(store, "v1")
    await promote(store, CONFIG, "v1", FakeEncoder(DIM), progress=False)
    await register(store, "v2")
    with pytest.raises(RuntimeError, match="not a ready"):
        await store.shadow.set_shadow("v2")
    shadowed = await start_shadow(store, CONFIG, "v2", FakeEncoder(DIM), progress=False)
    assert shadowed.status == "ready" and shadowed.shadow
    assert await store.shadow.shadow_version_name() == "v2"
    gated = RolloutConfig(retain_versions=1, gate_shadow_min_posts=4, gate_shadow_min_agreement=0.75)
    with pytest.raises(LifecycleError, match="0 shadow post"):
        await promote(store, gated, "v2", FakeEncoder(DIM), progress=False)

    def row(i: int, agree: bool) -> ShadowRow:
        return ShadowRow("v2", "v1", f"p{i}", "en", "fc-1", "fc-1" if agree else "fc-2", 0.9, 0.8)

    await store.shadow.record_shadow([row(0, True), row(1, True), row(2, False), row(3, False)])
    with pytest.raises(LifecycleError, match=r"50\.0%"):
        await promote(store, gated, "v2", FakeEncoder(DIM), progress=False)
    await store.shadow.record_shadow([row(i, True) for i in range(4, 8)])
    assert (await store.shadow.shadow_report("v2")).posts == 8
    await promote(store, gated, "v2", FakeEncoder(DIM), progress=False)
    assert await status(store, "v2") == "active"
    assert await store.shadow.shadow_version_name() is None, "an activated version stops being the shadow"


async def retention_keeps_the_newest_retired_index_and_rollback_catches_up(store: Any) -> None:
    await store.corpus.upsert_fact_checks(corpus())
    for version in ("v1", "v2", "v3"):
        await register(store, version)
        await promote(store, CONFIG, version, FakeEncoder(DIM), progress=False)
    # retain_versions=1: v1's embeddings were dropped when v3 retired v2.
    v1 = await store.registry.get_version("v1")
    assert v1 is not None and v1.indexed_at is None and await store.embeddings.count_embeddings("v1") == 0
    assert await apply_retention(store, 1) == []
    target = await rollback_target(store, None)
    assert target.version == "v2"
    with pytest.raises(RuntimeError, match="no kept index"):
        await rollback_target(store, "v1")
    with pytest.raises(RuntimeError, match="already active"):
        await rollback_target(store, "v3")

    loads: list[int] = []

    def encoder() -> FakeEncoder:
        loads.append(1)
        return FakeEncoder(DIM)

    # A fact-check that changed while v2 was retired is embedded before v2 serves again.
    await store.corpus.upsert_fact_checks(corpus(1, tag="corrected"))
    assert await rollback(store, CONFIG, target, encoder) == 1 and loads == [1]
    assert await status(store, "v2") == "active" and await status(store, "v3") == "retired"
    assert await store.corpus.fact_checks_missing("v2") == []
    # v3 was retired when the fact-check changed: it catches up too.
    again = await rollback_target(store, None)
    assert again.version == "v3" and await rollback(store, CONFIG, again, encoder) == 1 and loads == [1, 1]
    # v2 served until a moment ago and nothing changed since: rolling back loads no encoder at all.
    last = await rollback_target(store, None)
    assert last.version == "v2" and await rollback(store, CONFIG, last, encoder) == 0 and loads == [1, 1]


async def the_serving_manager_follows_activations_and_never_serves_an_incomplete_index(store: Any) -> None:
    await store.corpus.upsert_fact_checks(corpus())
    await register(store, "v1")
    await promote(store, CONFIG, "v1", FakeEncoder(DIM), progress=False)
    switches: list[int] = []
    manager = ModelManager(store, lambda _path: FakeEncoder(DIM), ServingEvents(switched=lambda: switches.append(1)))
    assert (await manager.load_active()).version == "v1"
    assert await manager.refresh() is False
    await register(store, "v2")
    await prepare(store, CONFIG, "v2", FakeEncoder(DIM), progress=False)
    assert await status(store, "v2") == "ready" and await manager.refresh() is False
    await store.registry.activate("v2")
    assert await manager.refresh() is True and manager.current().version == "v2" and switches == [1]
    # A decision fitted later for the serving version is picked up without a switch.
    await store.decisions.save_decision("v2", MODEL, [cut(0.5)], source="refit")
    assert await manager.refresh() is False
    assert manager.current().decisions.thresholds.get(("*", "match")) == pytest.approx(0.5)


CHECKS: list[Callable[[Any], Awaitable[None]]] = [
    a_fresh_store_is_bootstrapped_once_with_its_shipped_decision,
    a_promotion_indexes_everything_before_it_activates_and_retires_the_old_version,
    the_shadow_gate_refuses_a_promotion_without_enough_agreeing_evidence,
    retention_keeps_the_newest_retired_index_and_rollback_catches_up,
    the_serving_manager_follows_activations_and_never_serves_an_incomplete_index,
]
