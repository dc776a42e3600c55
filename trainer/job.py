"""The trainer job: data, train, gate, register and (optionally) roll out one candidate.

``factmatch train`` runs this on demand; a Kubernetes CronJob runs it periodically.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.lora import describe as describe_lora
from trainer.plan import plan_memory
from trainer.plots import plot_versions
from trainer.train import (
    TrainingData,
    collect_data,
    evaluate_model,
    new_version_name,
    train_candidate,
    write_report,
)
from worker.configs import (
    calibration_config,
    encoder_loader,
    memes_read,
    reranker_loader,
    rollout_config,
    torch_encoder_loader,
)
from worker.core.rollout import prepare, promote, start_shadow
from worker.domain import Encoder, ModelVersion
from worker.local.models import default_model_ref
from worker.retrieval.calibrate import LabelledPosts, calibrate_version
from worker.retrieval.openset import open_set_split
from worker.retrieval.rerank import Reranker
from worker.settings import Settings
from worker.storage import Store

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    version: str
    status: str
    candidate: dict[str, float]
    active: dict[str, float] | None
    reason: str
    path: Path
    plot: Path | None


def gate(settings: Settings, candidate: dict[str, float], active: dict[str, float] | None) -> tuple[bool, str]:
    """A candidate passes only if it beats the active version's primary metric by the margin."""
    metric = settings.gate_metric
    if active is None:
        return True, "no active version to beat"
    ours, theirs = candidate.get(metric, 0.0), active.get(metric, 0.0)
    if ours > theirs + settings.gate_margin:
        return True, f"{metric} {ours:.4f} beats active {theirs:.4f} by more than {settings.gate_margin:+.4f}"
    return False, f"{metric} {ours:.4f} does not beat active {theirs:.4f} by more than {settings.gate_margin:+.4f}"


def training_record(settings: Settings, ranks: distributed.Ranks) -> dict[str, Any]:
    """How a version was trained, as the registry keeps it beside its metrics."""
    record: dict[str, Any] = {
        "method": settings.train_method,
        "world_size": ranks.world_size,
        "parallel": "fsdp" if settings.train_fsdp and ranks.distributed else ("ddp" if ranks.distributed else None),
        "gather_across_devices": ranks.distributed and settings.train_gather_across_devices,
        "gradient_checkpointing": settings.train_gradient_checkpointing,
        "batch_size_per_device": settings.train_batch_size,
        "mini_batch_size": settings.train_mini_batch_size,
    }
    if settings.train_method == "lora":
        record["lora"] = describe_lora(settings)
    return record


async def run_training(
    store: Store,
    settings: Settings,
    *,
    base: str | None = None,
    train_files: list[tuple[Path, Path]] | None = None,
    eval_files: tuple[Path, Path] | None = None,
    use_feedback: bool = True,
    version: str | None = None,
    promote_if_better: bool = False,
) -> TrainOutcome:
    """Snapshot the data, train a candidate, gate it against the active version, register it,
    and (with ``promote_if_better``) roll it out: prepared, calibrated, then shadow or active."""
    ranks = distributed.init()
    active = await store.registry.active_version()
    base_ref = base or (active.path if active else None) or settings.model or default_model_ref(settings.model_store)
    memory = plan_memory(settings, base_ref, ranks.world_size)
    if not memory.fits:
        raise ValueError(memory.refusal())

    async def snapshot() -> TrainingData:
        return await collect_data(
            store, settings, train_files=train_files or [], eval_files=eval_files, use_feedback=use_feedback
        )

    # Rank 0 reads the data once and hands it round, so every rank trains on one snapshot.
    data = await distributed.from_main(ranks, snapshot)
    if ranks.main:
        log.info("training data", extra=data.snapshot)
    active_metrics = (
        await asyncio.to_thread(evaluate_model, active.path, settings, data) if active and ranks.main else None
    )

    async def make_output() -> Path:
        name = version or new_version_name(active.version if active else None)
        path = settings.model_store / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    output = await distributed.from_main(ranks, make_output)
    candidate = await asyncio.to_thread(train_candidate, settings, base_ref, data, output, ranks)
    if not ranks.main:
        reason = f"rank {ranks.rank} of {ranks.world_size} trained; rank 0 gates and registers"
        return TrainOutcome(output.name, "trained", {}, None, reason, output, None)
    if settings.rerank_top_n > 0 and active is not None:
        candidate.update(await train_version_reranker(store, settings, active, data, output))
    return await conclude(
        store, settings, output, base_ref, data, candidate, active, active_metrics, ranks, promote_if_better
    )


async def conclude(
    store: Store,
    settings: Settings,
    output: Path,
    base_ref: str,
    data: TrainingData,
    candidate: dict[str, Any],
    active: ModelVersion | None,
    active_metrics: dict[str, float] | None,
    ranks: distributed.Ranks,
    promote_if_better: bool,
) -> TrainOutcome:
    """Rank 0's part after training: gate, register, then reject, keep as a candidate, or roll out."""
    passed, reason = gate(settings, candidate, active_metrics)
    metrics: dict[str, Any] = {
        "candidate": candidate,
        "active": active_metrics,
        "active_version": active.version if active else None,
        "training": training_record(settings, ranks),
        "gate": {"metric": settings.gate_metric, "margin": settings.gate_margin, "passed": passed, "reason": reason},
    }
    await register_candidate(store, settings, output, base_ref, metrics, data)
    if not passed:
        await store.registry.set_status(output.name, "rejected", notes=reason)
        status = "rejected"
    elif promote_if_better:
        status, note = await roll_out(store, settings, output, data)
        reason += note
    else:
        status = "candidate"
    plot = plot_versions(await store.registry.list_versions(), settings.model_store / "metrics.png")
    return TrainOutcome(output.name, status, candidate, active_metrics, reason, output, plot)


async def register_candidate(
    store: Store, settings: Settings, output: Path, base_ref: str, metrics: dict[str, Any], data: TrainingData
) -> None:
    """The trained model in the registry as a candidate, with its metrics and data snapshot."""
    version = output.name
    path = str(await asyncio.to_thread(output.resolve))
    # Loaded on CPU only to read its output dimension, through the one torch encoder factory.
    dimension = torch_encoder_loader(settings.model_copy(update={"device": "cpu"}))(path).dimension
    await store.registry.register_version(
        version,
        path,
        dimension,
        status="candidate",
        base=base_ref,
        metrics=metrics,
        data_snapshot=data.snapshot,
    )
    write_report(output, {"version": version, "base": base_ref, **metrics, "data": data.snapshot})


async def roll_out(store: Store, settings: Settings, output: Path, data: TrainingData) -> tuple[str, str]:
    """A passed candidate indexed and calibrated (before anything serves with it), then in shadow
    when the gate asks for shadow evidence, else active. -> (status, note for the reason)."""
    version = output.name
    config = rollout_config(settings)
    encoder = torch_encoder_loader(settings)(str(output))
    await prepare(store, config, version, encoder)
    await calibrate_candidate(store, settings, version, encoder, data)
    if settings.gate_shadow_min_posts > 0:
        await start_shadow(store, config, version, encoder)
        note = (
            f"; runs in shadow until it has {settings.gate_shadow_min_posts} posts"
            f" (`factmatch shadow report`, then `factmatch rollout {version}`)"
        )
        return "shadow", note
    await promote(store, config, version, encoder)
    return "active", ""


async def calibrate_candidate(
    store: Store, settings: Settings, version: str, encoder: Encoder, data: TrainingData
) -> None:
    """The new version's decision model and tiers, fitted on an open-set split of its held-out
    posts (half of them lose their fact-checks, as most posts of a stream have none)."""
    twins = await store.corpus.fact_check_twins(sorted(set().union(*data.eval_relevant.values())))
    split = open_set_split(list(data.eval_queries), data.eval_relevant, 0.5, settings.train_seed, twins)
    labelled = LabelledPosts(dict(data.eval_queries), {}, split.qrels, exclude=split.removed)
    labelled = labelled.with_feedback(await store.feedback.feedback())
    read = await asyncio.to_thread(memes_read, settings, labelled.queries)
    try:
        calibration = await calibrate_version(
            store.candidates,
            store.decisions,
            calibration_config(settings),
            version,
            encoder,
            labelled,
            source="trainer held-out split (open-set half)",
            reranker=await version_reranker(store, settings, version),
            read=read,
        )
    except ValueError as exc:
        log.warning("version %s is not calibrated: %s", version, exc)
    else:
        log.info(
            "calibrated %s: %d tier cut(s), open-set report %s",
            version,
            len(calibration.thresholds),
            calibration.report,
        )


async def version_reranker(store: Store, settings: Settings, version: str) -> Reranker | None:
    """With reranking on, the version's cross-encoder, whose score becomes a decision feature."""
    load = reranker_loader(settings)
    mv = await store.registry.get_version(version)
    if load is None or mv is None:
        return None
    return await asyncio.to_thread(load, mv.path)


async def train_version_reranker(
    store: Store, settings: Settings, active: ModelVersion, data: TrainingData, output: Path
) -> dict[str, float]:
    """The candidate's reranker (rerank_top_n > 0): its own weights as a cross-encoder, trained on
    the training posts with hard negatives mined by the serving version's retriever (distilled into
    fewer layers with ``train_reranker_layers``)."""
    from trainer.rerank import fit_reranker, mine_pairs

    miner = encoder_loader(settings)(active.path)
    train = await mine_pairs(
        store, settings, active.version, miner, LabelledPosts(data.train_queries, {}, data.train_relevant)
    )
    heldout = await mine_pairs(
        store, settings, active.version, miner, LabelledPosts(data.eval_queries, {}, data.eval_relevant)
    )
    metrics = await asyncio.to_thread(fit_reranker, settings, str(output), train, output, heldout=heldout)
    return {f"reranker_{k}": v for k, v in metrics.items()}


async def run_training_job(settings: Settings, **kwargs: Any) -> TrainOutcome:
    """:func:`run_training` as a job: its own metrics port (the CronJob's pod is scraped like a
    worker), the run's outcome, held-out metrics and duration exported."""
    import time

    from worker.configs import open_store
    from worker.observability import HealthServer, Metrics

    metrics = Metrics()

    async def alive() -> tuple[bool, str]:
        return True, "training"

    server = HealthServer(metrics, {"trainer": alive}, port=settings.metrics_port)
    # One metrics port per pod: under torchrun only rank 0 serves it.
    serving = settings.metrics_enabled and distributed.current().main
    if serving:
        await server.start()
    started = time.perf_counter()
    try:
        async with open_store(settings) as store:
            outcome = await run_training(store, settings, **kwargs)
        metrics.trainer_runs.labels(outcome=outcome.status).inc()
        for role, values in (("candidate", outcome.candidate), ("active", outcome.active or {})):
            for name, value in values.items():
                metrics.trainer_heldout.labels(model_version=outcome.version, role=role, metric=name).set(value)
        return outcome
    except Exception:
        metrics.trainer_runs.labels(outcome="failed").inc()
        raise
    finally:
        metrics.trainer_seconds.set(time.perf_counter() - started)
        if serving:
            await server.stop()
        distributed.shutdown(distributed.current())
