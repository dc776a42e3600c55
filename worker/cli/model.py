"""Commands that measure and tune model versions: evaluation, calibration (the registry: `versions.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import JsonFlag, ReadTextFlag, console, err, fail, load_settings, print_json, run
from worker.domain import MODE_NAMES, ModeName
from worker.retrieval.evaluation import METRIC_ORDER
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.core.evaluate import Evaluation
    from worker.retrieval.calibrate import Calibration

app = typer.Typer()


@app.command("eval")
def evaluate(
    corpus: Annotated[Path, typer.Option(help="Fact-checks JSONL (id, text/claim, title).")],
    queries: Annotated[Path, typer.Option(help="Posts JSONL (id, text, lang?); a post with no qrels line has none.")],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>corpus_id TSV.")],
    model: Annotated[str | None, typer.Option(help="Model directory or hub name (default: the active one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON last on stdout.")] = False,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help=f"{', '.join(MODE_NAMES)} (repeatable; default: all).")
    ] = None,
    holdout_share: Annotated[
        float, typer.Option(help="Open-set split: this share of posts lose their fact-checks from the corpus.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the open-set split.")] = 0,
    decisions: Annotated[
        str | None,
        typer.Option(help="Decision model to judge with: a version name, or a JSON file (default: the active one's)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the open-set precision/recall plot (PNG) here.")] = None,
    cache: Annotated[
        bool, typer.Option(help="Keep the corpus's vectors under <model_store>/eval-cache for the next run.")
    ] = True,
) -> None:
    """Evaluate a model on a labelled set with the worker's encoder and pgvector search.

    With a decision model (the active version's, or --decisions), the posts are also judged
    open-set: per-tier precision, recall and false alarms, and the AUROC.
    """
    from worker.retrieval.evaluation import load_labelled_set, with_open_set

    settings = load_settings()
    chosen: list[ModeName] = [m for m in MODE_NAMES if m in (modes or MODE_NAMES)]
    if modes and set(modes) - set(MODE_NAMES):
        raise fail(f"unknown mode in {modes}; use {', '.join(MODE_NAMES)}")
    if settings.retrieval_mode in chosen:  # the serving mode first: the open-set figures use it
        chosen.remove(settings.retrieval_mode)
        chosen.insert(0, settings.retrieval_mode)
    try:
        labelled = load_labelled_set(corpus, queries, qrels, open_set=True)
        if holdout_share:
            labelled = with_open_set(labelled, holdout_share, seed)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the labelled set: {exc}") from None
    started = time.perf_counter()
    with database_url(settings) as url:
        result = run(
            _evaluate(settings, url, labelled, model, decisions, chosen, cache), failures=(LookupError, ValueError)
        )
    out = err if as_json else console
    out.print(metrics_table(result.by_mode, chosen, time.perf_counter() - started))
    if result.open_set is not None:
        out.print(open_set_table(result.open_set, f"open-set decisions ({chosen[0]})"))
        if plot is not None and result.curve:
            from worker.retrieval.openset import plot_precision_recall

            out.print(f"plot: {plot_precision_recall({chosen[0]: result.curve}, plot)}")
    if as_json:
        metrics = result.by_mode
        print(
            json.dumps({**{m: {k: metrics[m][k] for k in METRIC_ORDER} for m in chosen}, "open_set": result.open_set})
        )


async def _evaluate(
    settings: Settings,
    url: str,
    labelled: Any,
    model: str | None,
    decisions: str | None,
    modes: list[ModeName],
    cache: bool,
) -> Evaluation:
    from worker.configs import encoder_loader, eval_model_ref, evaluation_config, with_document_cache
    from worker.core.evaluate import run_evaluation
    from worker.core.serving import version_name_for
    from worker.storage.scratch import scratch_store

    ref = await eval_model_ref(settings, model)
    judge = await load_decisions(settings, decisions, default_active=model is None)
    encoder = await asyncio.to_thread(encoder_loader(settings), ref)
    err.print(f"evaluating {ref} on {len(labelled.queries)} posts against {len(labelled.corpus)} fact-checks")
    config = evaluation_config(settings)
    cached = with_document_cache(settings, ref, encoder) if cache else None
    evaluation = await run_evaluation(
        lambda: scratch_store(url, ef_search=max(settings.ef_search, config.top_k)),
        labelled,
        cached or encoder,
        config,
        version=f"eval-{version_name_for(ref)}",
        modes=modes,
        decisions=judge,
    )
    if cached is not None:
        err.print(f"fact-check vectors: {cached.hits} from {cached.directory}, {cached.misses} encoded")
    return evaluation


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database, or (none configured) an embedded Postgres for the length of the block."""
    if settings.database_url is not None:
        yield settings.require_database_url()
        return
    from worker.local.stack import start_database

    database = start_database()
    try:
        yield database.url
    finally:
        database.stop()


def metrics_table(metrics: dict[str, dict[str, float]], modes: list[ModeName], seconds: float) -> Table:
    table = Table(title=f"retrieval metrics, posts with a fact-check ({seconds:.0f}s)")
    table.add_column("metric")
    for mode in modes:
        table.add_column(mode, justify="right")
    for name in METRIC_ORDER:
        table.add_row(
            name, *(f"{metrics[m][name]:.0f}" if name == "queries" else f"{metrics[m][name]:.4f}" for m in modes)
        )
    return table


async def load_decisions(settings: Any, ref: str | None, *, default_active: bool) -> Any:
    """A decision model from a JSON file or a version (the active one by default); None without one."""
    from worker.retrieval.decision import Decisions

    if ref is not None and ref.endswith(".json"):
        return await asyncio.to_thread(Decisions.read, Path(ref))
    if settings.database_url is None or (ref is None and not default_active):
        return None
    from worker.configs import open_store

    async with open_store(settings, migrate_first=False) as store:
        mv = await store.registry.get_version(ref) if ref else await store.registry.active_version()
        if mv is None:
            if ref:
                raise LookupError(f"no model version {ref}")
            return None
        found = Decisions.from_stored(await store.decisions.stored_decision(mv.version), mv.version)
    return found if found.model is not None else None


def open_set_table(report: dict[str, Any], title: str) -> Table:
    from worker.retrieval.openset import fmt

    table = Table("tier", "precision", "recall", "false alarms", "shown", title=title)
    for tier in ("match", "match_or_suggestion"):
        row = report[tier]
        table.add_row(tier, fmt(row["precision"]), fmt(row["recall"]), fmt(row["false_alarm"]), str(row["shown"]))
    table.caption = (
        f"{report['answerable']} posts with a fact-check, {report['unanswerable']} without;"
        f" AUROC of the rank-1 probability {fmt(report['auroc'])}"
    )
    return table


@app.command()
def calibrate(
    queries: Annotated[
        Path, typer.Option(help="Labelled posts JSONL (id, text, lang?); no qrels line: no fact-check.")
    ],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>fact_check_id TSV.")],
    match_precision: Annotated[float | None, typer.Option(help="Target precision of the 'match' tier.")] = None,
    suggestion_precision: Annotated[float | None, typer.Option(help="Target precision of 'suggestion'.")] = None,
    match_false_alarm: Annotated[
        float | None, typer.Option(help="Most posts with no fact-check that may get a 'match' (share).")
    ] = None,
    suggestion_false_alarm: Annotated[
        float | None, typer.Option(help="Most posts with no fact-check that may be shown anything (share).")
    ] = None,
    min_support: Annotated[int | None, typer.Option(help="Fewest candidates above a cut for its own cut.")] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: the active one).")] = None,
    holdout_share: Annotated[
        float, typer.Option(help="Open-set split: this share of posts have their fact-checks left out.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the open-set split.")] = 0,
    feedback: Annotated[bool, typer.Option(help="Include the moderators' verdicts.")] = True,
    read_text: ReadTextFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit the version's decision model (match probability) and its per-language tier cuts, and store them."""
    from worker.retrieval.evaluation import read_qrels, read_queries
    from worker.retrieval.openset import open_set_split

    settings = load_settings(
        tier_match_precision=match_precision,
        tier_suggestion_precision=suggestion_precision,
        tier_match_false_alarm=match_false_alarm,
        tier_suggestion_false_alarm=suggestion_false_alarm,
        tier_min_support=min_support,
        calibrate_read_text=read_text,
    )
    try:
        texts, langs = read_queries(queries)
        relevant = read_qrels(qrels)
        open_set_split(list(texts), relevant, holdout_share, seed)  # refuses a bad share before any work
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the labelled posts: {exc}") from None

    async def go() -> tuple[str, Calibration]:
        return await _calibrate(settings, version, texts, langs, relevant, holdout_share, seed, str(queries), feedback)

    fitted_version, calibration = run(go(), failures=(LookupError, ValueError))
    if as_json:
        thresholds = [dataclasses.asdict(t) for t in calibration.thresholds]
        print_json({"version": fitted_version, "thresholds": thresholds, "open_set": calibration.report})
        return
    console.print(tiers_table(fitted_version, calibration.thresholds, calibration.report.get("cuts", [])))
    console.print(open_set_table(calibration.report, "open-set decisions (cross-validated)"))
    if not calibration.thresholds:
        err.print("[yellow]no tier reached its target precision with enough support[/yellow]")
    cut = calibration.report.get("cluster_cut")
    if cut:
        console.print(
            f"claim-cluster cut {cut['cut']:.4f} (between different claims' {cut['different_claims']:.4f}"
            f" and near-copies' {cut['same_claim']:.4f})"
        )


async def _calibrate(
    settings: Settings,
    version: str | None,
    texts: dict[str, str],
    langs: dict[str, str | None],
    relevant: dict[str, set[str]],
    holdout_share: float,
    seed: int,
    source: str,
    feedback: bool,
) -> tuple[str, Calibration]:
    from worker.configs import calibration_config, encoder_loader, memes_read, open_store, reranker_loader
    from worker.retrieval.calibrate import LabelledPosts, calibrate_version
    from worker.retrieval.openset import open_set_split

    async with open_store(settings) as store:
        mv = await store.registry.get_version(version) if version else await store.registry.active_version()
        if mv is None:
            raise LookupError("no such model version (and no active one)")
        twins = await store.corpus.fact_check_twins(sorted(set().union(*relevant.values())))
        split = open_set_split(list(texts), relevant, holdout_share, seed, twins)
        labelled = LabelledPosts(texts, langs, split.qrels, exclude=split.removed)
        if feedback:
            labelled = labelled.with_feedback(await store.feedback.feedback())
        encoder = await asyncio.to_thread(encoder_loader(settings), mv.path)
        load = reranker_loader(settings)
        read = await asyncio.to_thread(memes_read, settings, labelled.queries)
        fitted = await calibrate_version(
            store.candidates,
            store.decisions,
            calibration_config(settings),
            mv.version,
            encoder,
            labelled,
            source=source,
            reranker=await asyncio.to_thread(load, mv.path) if load else None,
            read=read,
            progress=True,
        )
        return mv.version, fitted


def tiers_table(version: str, thresholds: Any, bounds: list[dict[str, Any]]) -> Table:
    """The fitted cuts, each with what bound it (its precision target or a false-alarm budget)."""
    bound = {(b["lang"], b["tier"]): str(b["bound"]) for b in bounds}
    table = Table(
        "lang",
        "tier",
        "probability cut",
        "target",
        "precision",
        "recall",
        "support",
        "bound by",
        title=f"tiers of {version}",
    )
    for t in thresholds:
        table.add_row(
            t.lang,
            t.tier,
            f"{t.threshold:.4f}",
            f"{t.target_precision:.2f}",
            f"{t.fitted_precision:.3f}",
            f"{t.fitted_recall:.3f}",
            str(t.support),
            bound.get((t.lang, t.tier), "precision"),
        )
    return table
