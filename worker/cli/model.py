"""Commands that measure and tune model versions: evaluation, calibration, the registry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import console, err, fail, load_settings, run
from worker.retrieval.modes import MODE_NAMES, ModeName

app = typer.Typer()
models = typer.Typer(no_args_is_help=True, help="Model versions.")


@app.command("eval")
def evaluate(
    corpus: Annotated[Path, typer.Option(help="Fact-checks JSONL (id, text/claim, title).")],
    queries: Annotated[Path, typer.Option(help="Queries JSONL (id, text).")],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>corpus_id TSV.")],
    model: Annotated[str | None, typer.Option(help="Model directory or hub name (default: the active one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON last on stdout.")] = False,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help=f"{', '.join(MODE_NAMES)} (repeatable; default: all).")
    ] = None,
) -> None:
    """Evaluate a model on a labelled set with the worker's encoder and pgvector search."""
    from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
    from worker.core.models import eval_model_ref, version_name_for
    from worker.retrieval.evaluation import METRIC_ORDER, evaluation_config, load_labelled_set, run_evaluation

    settings = load_settings()
    chosen: list[ModeName] = [m for m in MODE_NAMES if m in (modes or MODE_NAMES)]
    if modes and set(modes) - set(MODE_NAMES):
        raise fail(f"unknown mode in {modes}; use {', '.join(MODE_NAMES)}")
    try:
        labelled = load_labelled_set(corpus, queries, qrels)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the labelled set: {exc}") from None

    async def go(url: str) -> dict[str, dict[str, float]]:
        ref = await eval_model_ref(settings, model)
        encoder = SentenceTransformerEncoder(ref, EncoderOptions.from_settings(settings))
        err.print(f"evaluating {ref} on {len(labelled.queries)} queries against {len(labelled.corpus)} fact-checks")
        return await run_evaluation(
            url,
            labelled,
            encoder,
            evaluation_config(settings),
            version=f"eval-{version_name_for(ref)}",
            modes=chosen,
            ef_search=settings.ef_search,
        )

    started = time.perf_counter()
    if settings.database_url is not None:
        metrics = run(go(settings.require_database_url()))
    else:
        from worker.local.stack import start_database

        database = start_database()
        try:
            metrics = run(go(database.url))
        finally:
            database.stop()
    table = Table(title=f"retrieval metrics ({time.perf_counter() - started:.0f}s)")
    table.add_column("metric")
    for mode in chosen:
        table.add_column(mode, justify="right")
    for name in METRIC_ORDER:
        table.add_row(
            name, *(f"{metrics[m][name]:.0f}" if name == "queries" else f"{metrics[m][name]:.4f}" for m in chosen)
        )
    (err if as_json else console).print(table)
    if as_json:
        print(json.dumps({m: {k: metrics[m][k] for k in METRIC_ORDER} for m in chosen}))


@app.command()
def calibrate(
    queries: Annotated[Path, typer.Option(help="Labelled posts JSONL (id, text, lang?).")],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>fact_check_id TSV.")],
    match_precision: Annotated[float | None, typer.Option(help="Target precision of the 'match' tier.")] = None,
    suggestion_precision: Annotated[float | None, typer.Option(help="Target precision of 'suggestion'.")] = None,
    min_support: Annotated[int | None, typer.Option(help="Fewest candidates above a cut for its own cut.")] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: the active one).")] = None,
) -> None:
    """Fit per-language score thresholds for the active version's tiers and store them with it."""
    from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
    from worker.retrieval.calibrate import calibrate_version
    from worker.retrieval.evaluation import read_qrels, read_queries
    from worker.storage import open_store

    settings = load_settings(
        tier_match_precision=match_precision,
        tier_suggestion_precision=suggestion_precision,
        tier_min_support=min_support,
    )
    texts, langs = read_queries(queries)
    relevant = read_qrels(qrels)

    async def go() -> tuple[str, list[Any]]:
        async with open_store(settings) as store:
            mv = await store.get_version(version) if version else await store.active_version()
            if mv is None:
                raise LookupError("no such model version (and no active one)")
            encoder = SentenceTransformerEncoder(mv.path, EncoderOptions.from_settings(settings))
            fitted = await calibrate_version(
                store, settings, mv.version, encoder, texts, langs, relevant, source=str(queries)
            )
            return mv.version, fitted

    fitted_version, fitted = run(go(), failures=(LookupError,))
    table = Table(
        "lang",
        "tier",
        "threshold",
        "target",
        "precision",
        "recall",
        "support",
        title=f"thresholds for {fitted_version}",
    )
    for t in fitted:
        table.add_row(
            t.lang,
            t.tier,
            f"{t.threshold:.4f}",
            f"{t.target_precision:.2f}",
            f"{t.fitted_precision:.3f}",
            f"{t.fitted_recall:.3f}",
            str(t.support),
        )
    console.print(table)
    if not fitted:
        err.print("[yellow]no threshold reached its target precision with enough support[/yellow]")


@models.command("list")
def models_list() -> None:
    """List registered model versions."""
    from worker.storage import open_store

    settings = load_settings()

    async def go() -> list[Any]:
        async with open_store(settings, migrate_first=False) as store:
            return await store.list_versions()

    table = Table("version", "status", "dim", "created", "activated", "path")
    for mv in run(go()):
        table.add_row(
            mv.version,
            mv.status,
            str(mv.dimension),
            f"{mv.created_at:%Y-%m-%d %H:%M}",
            f"{mv.activated_at:%Y-%m-%d %H:%M}" if mv.activated_at else "",
            mv.path,
        )
    console.print(table)
