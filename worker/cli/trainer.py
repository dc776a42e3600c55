"""Commands that make and move model versions: train, roll out, roll back, and moderator feedback."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from worker.cli.common import JsonFlag, act_on_version, console, fail, load_settings, print_json, run
from worker.core.lifecycle import LifecycleError
from worker.settings import Settings

app = typer.Typer()


@app.command()
def train(
    queries: Annotated[list[Path] | None, typer.Option(help="Training queries JSONL (repeatable).")] = None,
    qrels: Annotated[list[Path] | None, typer.Option(help="query_id<TAB>fact_check_id TSV, one per --queries.")] = None,
    eval_queries: Annotated[Path | None, typer.Option(help="Held-out queries (default: a share of the data).")] = None,
    eval_qrels: Annotated[Path | None, typer.Option()] = None,
    base: Annotated[str | None, typer.Option(help="Start from this model (default: the active version).")] = None,
    version: Annotated[str | None, typer.Option(help="Name of the new version.")] = None,
    feedback: Annotated[bool, typer.Option(help="Use moderator feedback from match_feedback.")] = True,
    promote: Annotated[bool, typer.Option(help="Roll the candidate out if it passes the gate.")] = False,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    mini_batch_size: Annotated[int | None, typer.Option()] = None,
    gate_margin: Annotated[float | None, typer.Option()] = None,
    method: Annotated[str | None, typer.Option(help="full or lora (default: the train_method setting).")] = None,
    plan: Annotated[bool, typer.Option(help="Print the memory plan per GPU and exit.")] = False,
    gpus: Annotated[int | None, typer.Option(help="GPUs to plan for (default: torchrun's world size).")] = None,
) -> None:
    """Fine-tune a candidate, evaluate it against the active version, gate it, and optionally roll it out.

    Under torchrun (`torchrun --nproc-per-node N --no-python factmatch train ...`) every GPU trains
    and rank 0 registers, gates and rolls out.
    """
    from trainer.job import run_training_job

    settings = load_settings(
        train_epochs=epochs,
        train_max_steps=max_steps,
        train_learning_rate=learning_rate,
        train_batch_size=batch_size,
        train_mini_batch_size=mini_batch_size,
        gate_margin=gate_margin,
        train_method=method,
    )
    if plan:
        show_plan(settings, base, gpus)
        return
    queries, qrels = queries or [], qrels or []
    if len(queries) != len(qrels):
        raise fail("give one --qrels for each --queries")
    if (eval_queries is None) != (eval_qrels is None):
        raise fail("--eval-queries and --eval-qrels go together")
    started = time.perf_counter()
    outcome = run(
        run_training_job(
            settings,
            base=base,
            train_files=list(zip(queries, qrels, strict=True)),
            eval_files=(eval_queries, eval_qrels) if eval_queries and eval_qrels else None,
            use_feedback=feedback,
            version=version,
            promote_if_better=promote,
        ),
        failures=(ValueError,),
        code=2,
    )
    show_outcome(outcome, time.perf_counter() - started)


def show_outcome(outcome: Any, seconds: float) -> None:
    """A training job's outcome: the active version's and the candidate's metrics, the gate's word."""
    table = Table(title=f"{outcome.version}: {outcome.status} ({seconds:.0f}s)")
    table.add_column("metric")
    table.add_column("active", justify="right")
    table.add_column("candidate", justify="right")
    for name in ("ndcg@10", "map@5", "map@100", "mrr@10", "accuracy@1", "accuracy@5", "recall@10"):
        active = f"{outcome.active[name]:.4f}" if outcome.active and name in outcome.active else ""
        table.add_row(name, active, f"{outcome.candidate.get(name, 0.0):.4f}")
    console.print(table)
    console.print(f"gate: {outcome.reason}")
    console.print(f"model: {outcome.path}")
    if outcome.plot:
        console.print(f"plot: {outcome.plot}")


def show_plan(settings: Settings, base: str | None, gpus: int | None) -> None:
    """The memory plan for ``base`` (default: what `train` would start from) on ``gpus`` devices."""
    from trainer.distributed import current
    from trainer.plan import GIB, plan_memory
    from worker.configs import eval_model_ref

    # What `train` starts from: the named model, else the active version's, else the bootstrap one.
    model = run(eval_model_ref(settings, base))
    try:
        memory = plan_memory(settings, model, gpus or current().world_size)
    except ValueError as exc:
        raise fail(str(exc)) from None
    table = Table(title=f"{memory.model}: {memory.method}, {memory.world_size} device(s), {memory.parallel}")
    table.add_column("per device")
    table.add_column("GiB", justify="right")
    for name, gib in memory.rows():
        table.add_row(name, f"{gib:.1f}")
    table.add_row("total", f"{memory.total / GIB:.1f}")
    console.print(table)
    console.print(
        f"parameters {memory.params / 1e6:,.1f} M, trainable {memory.trainable / 1e6:,.1f} M; "
        f"{memory.tokens_per_step:,} tokens per mini-batch; activations "
        f"{memory.activations_without_checkpointing / GIB:.1f} GiB without gradient checkpointing, "
        f"{memory.activations_with_checkpointing / GIB:.1f} GiB with"
    )
    if memory.device_memory is None:
        console.print("device memory unknown (no GPU here): set FACTMATCH_TRAIN_GPU_MEMORY_GIB to check a fit")
    elif memory.fits:
        console.print(f"fits {memory.device_memory / GIB:.1f} GiB per device")
    else:
        raise fail(memory.refusal())


@app.command()
def recalibrate(
    force: Annotated[
        bool, typer.Option(help="Refit even if fewer new verdicts arrived than the setting asks.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Refit the active version's decision from the moderators' verdicts, gated on held-out verdicts.

    Does nothing until FACTMATCH_RECALIBRATE_MIN_VERDICTS new verdicts arrived; a refit that lowers
    the held-out precision is refused. Each refit and refusal is kept: `factmatch models refits`.
    """
    from trainer.recalibrate import recalibrate as refit
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> Any:
        async with open_store(settings) as store:
            return await refit(store, settings, force=force)

    outcome = run(go(), failures=(LookupError, ValueError))
    if as_json:
        print_json(dataclasses.asdict(outcome))
        return
    console.print(f"{outcome.version or 'no active version'}: {outcome.outcome} ({outcome.reason})")


@app.command()
def rollout(version: Annotated[str, typer.Argument(help="A candidate or ready version.")]) -> None:
    """Re-embed the corpus under VERSION, build its index, then make it active."""
    from worker.core.rollout import promote

    act_on_version(load_settings(), version, promote)
    console.print(f"{version} is active")


@app.command()
def rollback(version: Annotated[str | None, typer.Argument(help="Default: the most recently retired.")] = None) -> None:
    """Make a retained earlier version active again, at once."""
    from worker.configs import encoder_loader, open_store, rollout_config
    from worker.core.rollout import rollback as roll_back
    from worker.core.rollout import rollback_target

    settings = load_settings()

    async def go() -> str:
        async with open_store(settings) as store:
            mv = await rollback_target(store, version)
            # The encoder is loaded only when fact-checks changed while the version was retired.
            await roll_back(store, rollout_config(settings), mv, lambda: encoder_loader(settings)(mv.path))
            return mv.version

    target = run(go(), failures=(LookupError, RuntimeError, LifecycleError))
    console.print(f"rolled back: {target} is active")


@app.command("feedback")
def send_feedback(
    post_id: Annotated[str, typer.Argument()],
    fact_check_id: Annotated[str, typer.Argument()],
    verdict: Annotated[str, typer.Argument(help="confirm or reject")],
    text: Annotated[str, typer.Option(help="The post's text.")],
    moderator: Annotated[str, typer.Option(help="Who decided.")],
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Send a moderator's verdict on a match to the match-feedback topic."""
    from worker.adapter.conversations import send_feedback as send
    from worker.wire import Feedback

    fields = {"post_id": post_id, "post_text": text, "fact_check_id": fact_check_id}
    try:
        item = Feedback.model_validate({**fields, "verdict": verdict, "moderator": moderator, "note": note})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(f"invalid feedback: {first['loc'][0]}: {first['msg']}") from None
    run(send(load_settings(), item))
    console.print(f"feedback sent: {verdict} {post_id} -> {fact_check_id}")
