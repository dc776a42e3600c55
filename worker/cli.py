"""``factmatch``: one command line for the demo, the local stack, the worker and its tools.

Every command builds one :class:`Settings` from the environment (``FACTMATCH_*``) and
applies its flags on top; bad values stop it before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from worker.settings import Settings

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
STATE_FILE = Path(".factmatch") / "stack.env"

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_cli = typer.Typer(no_args_is_help=True, help="Model versions.")
cli.add_typer(models_cli, name="models")
# Piped output (CI, `| tee`) would otherwise wrap the results table at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, ``.env`` and the local stack's state file, then flags."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    env_files = [p for p in (Path(".env"), STATE_FILE) if p.is_file()]
    try:
        return Settings(_env_file=env_files or None, **clean)  # type: ignore[call-arg]
    except ValidationError as exc:
        err.print("[red]invalid settings:[/red]")
        for e in exc.errors():
            name = ".".join(str(p) for p in e["loc"]) or "settings"
            err.print(f"  FACTMATCH_{name.upper()}: {e['msg']}")
        raise typer.Exit(2) from None


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- local stack -----------------------------------------------------------------------


@contextlib.contextmanager
def _local_services(data_dir: Path | None) -> Iterator[tuple[str, str]]:
    from worker.local import local_stack

    with console.status("starting tansu broker and embedded Postgres..."), contextlib.ExitStack() as stack:
        broker, database = stack.enter_context(local_stack(data_dir))
        console.print(f"broker [bold]{broker.bootstrap}[/bold], Postgres [bold]{database.url}[/bold]")
        yield broker.bootstrap, database.url


async def _prepare_database(settings: Settings, fact_checks_file: Path | None) -> None:
    from worker.evaluation import corpus_from_rows, load_jsonl
    from worker.store import Store, apply_migrations

    url = settings.require_database_url()
    await apply_migrations(url)
    if fact_checks_file is not None:
        store = Store(url)
        await store.open()
        try:
            await store.upsert_fact_checks(corpus_from_rows(load_jsonl(fact_checks_file)))
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def _running_worker(settings: Settings) -> AsyncIterator[Any]:
    from worker.app import WorkerRuntime
    from worker.topics import ensure_topics

    await ensure_topics(settings)
    runtime = WorkerRuntime(settings)
    with console.status("loading the model and indexing fact-checks..."):
        await runtime.start()
    if settings.metrics_enabled:
        base = f"http://127.0.0.1:{runtime.health.port}"
        console.print(f"metrics: {base}/metrics  health: {base}/healthz  readiness: {base}/readyz")
    try:
        yield runtime
    finally:
        await runtime.stop()


def _row(post: dict[str, Any], result: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False, expand=False)
    table.add_column(width=6)
    table.add_column(width=4)
    table.add_column(width=44, overflow="ellipsis", no_wrap=True)
    table.add_column(width=44, overflow="ellipsis", no_wrap=True)
    table.add_column(width=6, justify="right")
    table.add_column(width=24, overflow="ellipsis", no_wrap=True)
    best = result["matches"][0] if result["matches"] else None
    table.add_row(
        str(result["post_id"]),
        str(post.get("lang") or ""),
        str(post.get("text", "")),
        (best.get("title") or best["claim"]) if best else "[dim]no match[/dim]",
        f"{best['score']:.3f}" if best else "",
        result["model_version"],
    )
    return table


async def _stream_demo(
    settings: Settings, posts: list[dict[str, Any]], bad: list[bytes], timeout_s: float
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        settings.topic_matches,
        settings.topic_dead_letter,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"factmatch-demo-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    by_id = {str(p["id"]): p for p in posts}
    results: dict[str, dict[str, Any]] = {}
    dead: list[dict[str, Any]] = []
    header = Table(show_header=True, box=None, pad_edge=False)
    for name, width in (
        ("post", 6),
        ("lang", 4),
        ("text", 44),
        ("best fact-check", 44),
        ("score", 6),
        ("model version", 24),
    ):
        header.add_column(name, width=width)
    console.print(header)
    started = time.perf_counter()
    try:
        for post in posts:
            await producer.send(
                settings.topic_posts, json.dumps(post, ensure_ascii=False).encode(), key=str(post["id"]).encode()
            )
        for payload in bad:
            await producer.send(settings.topic_posts, payload, key=b"malformed")
        await producer.flush()
        deadline = time.monotonic() + timeout_s
        while (len(results) < len(by_id) or len(dead) < len(bad)) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    body = json.loads(record.value)
                    if record.topic == settings.topic_dead_letter:
                        dead.append(body)
                        console.print(f"[yellow]dead letter[/yellow] {body['reason']}: {body['error'][:90]}")
                    elif body["post_id"] in by_id and body["post_id"] not in results:
                        results[body["post_id"]] = body
                        console.print(_row(by_id[body["post_id"]], body))
    finally:
        await producer.stop()
        await consumer.stop()
    return {"results": results, "dead": dead, "seconds": time.perf_counter() - started}


def _expected_fact_check(post: dict[str, Any]) -> str | None:
    meta = post.get("meta")
    value = meta.get("expected_fact_check_id") if isinstance(meta, dict) else None
    return str(value) if value else None


@cli.command()
def demo(
    posts_file: Annotated[Path, typer.Option("--posts", help="Posts JSONL.")] = DEMO_DIR / "posts.jsonl",
    fact_checks_file: Annotated[Path, typer.Option("--fact-checks", help="Fact-checks JSONL.")] = DEMO_DIR
    / "factchecks.jsonl",
    model: Annotated[str | None, typer.Option(help="Model directory or hub name.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every result.")] = 180.0,
) -> None:
    """Start a local broker and Postgres, index the sample fact-checks, stream the sample posts, print matches."""
    from worker.evaluation import load_jsonl

    wall = time.perf_counter()
    posts = load_jsonl(posts_file)
    bad = [b"{not json", b'{"id": "p-bad", "text": ""}', b"\xff\xfe not utf-8"]
    with _local_services(None) as (bootstrap, url):
        settings = load_settings(kafka_bootstrap=bootstrap, database_url=url, model=model, metrics_port=0)

        async def go() -> dict[str, Any]:
            await _prepare_database(settings, fact_checks_file)
            async with _running_worker(settings):
                return await _stream_demo(settings, posts, bad, timeout)

        outcome = _run(go())
    results, dead = outcome["results"], outcome["dead"]
    expected = {str(p["id"]): _expected_fact_check(p) for p in posts}
    labelled = [pid for pid, fc in expected.items() if fc]
    hits = sum(
        1
        for pid in labelled
        if pid in results and results[pid]["matches"] and results[pid]["matches"][0]["fact_check_id"] == expected[pid]
    )
    console.print(
        f"\n{len(results)}/{len(posts)} posts matched and published, {len(dead)}/{len(bad)} malformed messages "
        f"dead-lettered; best match correct for {hits}/{len(labelled)} posts with a known fact-check. "
        f"Stream time {outcome['seconds']:.1f}s, wall time {time.perf_counter() - wall:.1f}s."
    )
    if len(results) != len(posts) or len(dead) != len(bad):
        err.print("[red]demo incomplete: not every message came back[/red]")
        raise typer.Exit(1)


@cli.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Where Postgres keeps its data.")] = Path(".factmatch/pg"),
    fact_checks_file: Annotated[Path | None, typer.Option("--fact-checks")] = DEMO_DIR / "factchecks.jsonl",
    model: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run the local stack and a worker until Ctrl-C; `factmatch post` talks to it."""
    with _local_services(data_dir) as (bootstrap, url):
        settings = load_settings(kafka_bootstrap=bootstrap, database_url=url, model=model)
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(f"FACTMATCH_KAFKA_BOOTSTRAP={bootstrap}\nFACTMATCH_DATABASE_URL={url}\n")

        async def go() -> None:
            await _prepare_database(settings, fact_checks_file)
            async with _running_worker(settings):
                console.print(
                    f'[green]ready[/green]: post with `factmatch post "some text"`, or produce JSON to '
                    f"'{settings.topic_posts}' on {bootstrap}; results on '{settings.topic_matches}'. Ctrl-C stops."
                )
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()

        try:
            _run(go())
        finally:
            STATE_FILE.unlink(missing_ok=True)
    console.print("stopped")


@cli.command()
def post(
    text: Annotated[str, typer.Argument(help="The post's text.")],
    post_id: Annotated[str | None, typer.Option("--id")] = None,
    lang: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = True,
    timeout: Annotated[float, typer.Option()] = 30.0,
) -> None:
    """Send one post to the posts topic (of `factmatch up`, or FACTMATCH_KAFKA_BOOTSTRAP) and print its result."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from worker.wire import Post

    settings = load_settings()
    message = Post(id=post_id or f"cli-{uuid.uuid4().hex[:12]}", text=text, lang=lang, platform="cli")

    async def go() -> dict[str, Any] | None:
        consumer = None
        if wait:
            consumer = AIOKafkaConsumer(
                settings.topic_matches,
                bootstrap_servers=settings.kafka_bootstrap,
                auto_offset_reset="latest",
                enable_auto_commit=False,
                group_id=f"factmatch-cli-{uuid.uuid4().hex[:8]}",
            )
            await consumer.start()
            # Join the group before producing, so "latest" cannot skip our own result.
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                settings.topic_posts, message.model_dump_json().encode(), key=message.id.encode()
            )
        finally:
            await producer.stop()
        if consumer is None:
            return None
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        body: dict[str, Any] = json.loads(record.value)
                        if body.get("post_id") == message.id:
                            return body
            return None
        finally:
            await consumer.stop()

    result = _run(go())
    if not wait:
        console.print(f"sent {message.id}")
        return
    if result is None:
        err.print(f"[red]no result for {message.id} within {timeout:.0f}s[/red]")
        raise typer.Exit(1)
    console.print_json(json.dumps(result))


@cli.command()
def worker() -> None:
    """Run the worker (the same app as `faststream run worker.app:app`)."""
    from worker.app import create_app

    app = create_app(load_settings())
    _run(app.run())


@cli.command()
def migrate(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the database to accept connections.")] = 0.0,
) -> None:
    """Apply the database migrations (idempotent; safe to run from several pods at once)."""
    import psycopg

    from worker.store import apply_migrations

    settings = load_settings()

    async def go() -> list[str]:
        deadline = time.monotonic() + wait
        while True:
            try:
                return await apply_migrations(settings.require_database_url())
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise
                err.print(f"database not reachable yet ({type(exc).__name__}); retrying")
                await asyncio.sleep(2)

    try:
        applied = _run(go())
    except psycopg.OperationalError as exc:
        # libpq's message may quote the connection string: print only the error class.
        err.print(f"[red]database unreachable after {wait:.0f}s: {type(exc).__name__}[/red]")
        raise typer.Exit(1) from None
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")


@cli.command()
def load(
    path: Annotated[Path, typer.Argument(help="Fact-checks JSONL: id, claim (or text), title, url, lang, ...")],
) -> None:
    """Load fact-checks and embed them under every serving model version."""
    from worker.evaluation import corpus_from_rows, load_jsonl
    from worker.indexer import CorpusIndexer
    from worker.models import ModelManager, bootstrap_active_version, encoder_loader
    from worker.store import Store, apply_migrations

    settings = load_settings()
    try:
        fact_checks = corpus_from_rows(load_jsonl(path))
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {path}: {exc}[/red]")
        raise typer.Exit(2) from None

    async def go() -> Any:
        url = settings.require_database_url()
        await apply_migrations(url)
        store = Store(url, max_size=settings.db_pool_max)
        await store.open()
        try:
            manager = ModelManager(store, encoder_loader(settings))
            if await store.active_version() is None:
                # Rows first, index after: the bootstrap embeds everything, then builds the index.
                await store.upsert_fact_checks(fact_checks)
                await bootstrap_active_version(store, settings, manager)
                return len(fact_checks)
            change = await CorpusIndexer(store, manager.encoder_for).upsert(fact_checks, progress=True)
            return change.upserted
        finally:
            await store.close()

    count = _run(go())
    console.print(f"loaded {count} fact-check(s)")


@cli.command("eval")
def evaluate(
    corpus: Annotated[Path, typer.Option(help="Fact-checks JSONL (id, text/claim, title).")],
    queries: Annotated[Path, typer.Option(help="Queries JSONL (id, text).")],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>corpus_id TSV.")],
    model: Annotated[str | None, typer.Option(help="Model directory or hub name (default: the active one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON last on stdout.")] = False,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help="dense, lexical, hybrid (repeatable; default: all three).")
    ] = None,
) -> None:
    """Evaluate a model on a labelled set with the worker's encoder and pgvector search."""
    from worker.encoder import EncoderOptions, SentenceTransformerEncoder, default_model_ref
    from worker.evaluation import METRIC_ORDER, load_labelled_set, run_evaluation
    from worker.models import version_name_for

    settings = load_settings()
    try:
        labelled = load_labelled_set(corpus, queries, qrels)
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read the labelled set: {exc}[/red]")
        raise typer.Exit(2) from None

    async def active_model_path(url: str) -> str | None:
        from worker.store import Store

        store = Store(url)
        await store.open()
        try:
            mv = await store.active_version()
        finally:
            await store.close()
        return mv.path if mv else None

    from worker.fusion import FusionConfig

    chosen = modes or ["dense", "lexical", "hybrid"]
    if not set(chosen) <= {"dense", "lexical", "hybrid"}:
        err.print(f"[red]unknown mode in {chosen}; use dense, lexical or hybrid[/red]")
        raise typer.Exit(2)

    async def go(url: str) -> dict[str, dict[str, float]]:
        ref = (
            model
            or (await active_model_path(url) if settings.database_url else None)
            or settings.model
            or default_model_ref(settings.model_store)
        )
        encoder = SentenceTransformerEncoder(ref, EncoderOptions.from_settings(settings))
        err.print(f"evaluating {ref} on {len(labelled.queries)} queries against {len(labelled.corpus)} fact-checks")
        return await run_evaluation(
            url,
            labelled,
            encoder,
            version=f"eval-{version_name_for(ref)}",
            ef_search=settings.ef_search,
            modes=chosen,  # type: ignore[arg-type]
            fusion=FusionConfig("hybrid", settings.rrf_k, settings.dense_weight, settings.lexical_weight),
            candidates=max(100, settings.retrieval_candidates),
        )

    started = time.perf_counter()
    if settings.database_url is not None:
        metrics = _run(go(settings.require_database_url()))
    else:
        from worker.local import start_database

        database = start_database()
        try:
            metrics = _run(go(database.url))
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


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Any]:
    from worker.store import Store, apply_migrations

    url = settings.require_database_url()
    await apply_migrations(url)
    store = Store(url, max_size=settings.db_pool_max)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@cli.command()
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
) -> None:
    """Fine-tune a candidate, evaluate it against the active version, gate it, and optionally roll it out."""
    from trainer.job import run_training

    settings = load_settings(
        train_epochs=epochs,
        train_max_steps=max_steps,
        train_learning_rate=learning_rate,
        train_batch_size=batch_size,
        train_mini_batch_size=mini_batch_size,
        gate_margin=gate_margin,
    )
    queries, qrels = queries or [], qrels or []
    if len(queries) != len(qrels):
        err.print("[red]give one --qrels for each --queries[/red]")
        raise typer.Exit(2)
    if (eval_queries is None) != (eval_qrels is None):
        err.print("[red]--eval-queries and --eval-qrels go together[/red]")
        raise typer.Exit(2)
    eval_files = (eval_queries, eval_qrels) if eval_queries and eval_qrels else None

    async def go() -> Any:
        from worker.observability import HealthServer, Metrics

        metrics = Metrics()

        async def alive() -> tuple[bool, str]:
            return True, "training"

        # Trainer runs are scrapeable too (the CronJob's pod exposes the same port as workers).
        server = HealthServer(metrics, {"trainer": alive}, port=settings.metrics_port)
        if settings.metrics_enabled:
            await server.start()
        run_started = time.perf_counter()
        try:
            async with _store(settings) as store:
                outcome = await run_training(
                    store,
                    settings,
                    base=base,
                    train_files=list(zip(queries, qrels, strict=True)),
                    eval_files=eval_files,
                    use_feedback=feedback,
                    version=version,
                    promote_if_better=promote,
                )
            metrics.trainer_runs.labels(outcome=outcome.status).inc()
            for role, values in (("candidate", outcome.candidate), ("active", outcome.active or {})):
                for name, value in values.items():
                    metrics.trainer_heldout.labels(model_version=outcome.version, role=role, metric=name).set(value)
            return outcome
        except Exception:
            metrics.trainer_runs.labels(outcome="failed").inc()
            raise
        finally:
            metrics.trainer_seconds.set(time.perf_counter() - run_started)
            await server.stop()

    started = time.perf_counter()
    try:
        outcome = _run(go())
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"{outcome.version}: {outcome.status} ({time.perf_counter() - started:.0f}s)")
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


@cli.command()
def rollout(version: Annotated[str, typer.Argument(help="A candidate or ready version.")]) -> None:
    """Re-embed the corpus under VERSION, build its index, then make it active."""
    from trainer.rollout import promote
    from worker.encoder import EncoderOptions, SentenceTransformerEncoder

    settings = load_settings()

    async def go() -> None:
        async with _store(settings) as store:
            mv = await store.get_version(version)
            if mv is None:
                raise LookupError(f"unknown model version {version!r}")
            encoder = SentenceTransformerEncoder(mv.path, EncoderOptions.from_settings(settings))
            await promote(store, settings, version, encoder)

    try:
        _run(go())
    except (LookupError, RuntimeError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{version} is active")


@cli.command()
def rollback(version: Annotated[str | None, typer.Argument(help="Default: the most recently retired.")] = None) -> None:
    """Make a retained earlier version active again, at once."""
    from trainer.rollout import rollback as do_rollback
    from trainer.rollout import rollback_target
    from worker.encoder import EncoderOptions, SentenceTransformerEncoder

    settings = load_settings()

    async def go() -> str:
        async with _store(settings) as store:
            mv = await rollback_target(store, version)
            encoder = SentenceTransformerEncoder(mv.path, EncoderOptions.from_settings(settings))
            await do_rollback(store, settings, mv, encoder)
            return mv.version

    try:
        target = _run(go())
    except (LookupError, RuntimeError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"rolled back: {target} is active")


@cli.command("feedback")
def send_feedback(
    post_id: Annotated[str, typer.Argument()],
    fact_check_id: Annotated[str, typer.Argument()],
    verdict: Annotated[str, typer.Argument(help="confirm or reject")],
    text: Annotated[str, typer.Option(help="The post's text.")],
    moderator: Annotated[str, typer.Option(help="Who decided.")],
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Send a moderator's verdict on a match to the match-feedback topic."""
    from aiokafka import AIOKafkaProducer

    from worker.wire import Feedback

    settings = load_settings()
    try:
        item = Feedback.model_validate(
            {
                "post_id": post_id,
                "post_text": text,
                "fact_check_id": fact_check_id,
                "verdict": verdict,
                "moderator": moderator,
                "note": note,
            }
        )
    except ValidationError as exc:
        err.print(f"[red]invalid feedback: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}[/red]")
        raise typer.Exit(2) from None

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic_feedback, item.model_dump_json().encode(), key=post_id.encode())
        finally:
            await producer.stop()

    _run(go())
    console.print(f"feedback sent: {verdict} {post_id} -> {fact_check_id}")


@cli.command()
def calibrate(
    queries: Annotated[Path, typer.Option(help="Labelled posts JSONL (id, text, lang?).")],
    qrels: Annotated[Path, typer.Option(help="query_id<TAB>fact_check_id TSV.")],
    match_precision: Annotated[float | None, typer.Option(help="Target precision of the 'match' tier.")] = None,
    suggestion_precision: Annotated[float | None, typer.Option(help="Target precision of 'suggestion'.")] = None,
    min_support: Annotated[int | None, typer.Option(help="Fewest candidates above a cut for its own cut.")] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: the active one).")] = None,
) -> None:
    """Fit per-language score thresholds for the active version's tiers and store them with it."""
    from worker.calibration import fit_thresholds
    from worker.encoder import EncoderOptions, SentenceTransformerEncoder
    from worker.evaluation import load_jsonl, score_labelled
    from worker.fusion import FusionConfig

    settings = load_settings(
        tier_match_precision=match_precision,
        tier_suggestion_precision=suggestion_precision,
        tier_min_support=min_support,
    )
    rows = load_jsonl(queries)
    texts = {str(r["id"]): str(r["text"]) for r in rows}
    langs = {str(r["id"]): (str(r["lang"]) if r.get("lang") else None) for r in rows}
    relevant: dict[str, set[str]] = {}
    for line in qrels.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2:
            relevant.setdefault(parts[0], set()).add(parts[1])

    async def go() -> tuple[str, list[Any]]:
        async with _store(settings) as store:
            mv = await store.get_version(version) if version else await store.active_version()
            if mv is None:
                raise LookupError("no such model version (and no active one)")
            encoder = SentenceTransformerEncoder(mv.path, EncoderOptions.from_settings(settings))
            fusion = FusionConfig(
                settings.retrieval_mode, settings.rrf_k, settings.dense_weight, settings.lexical_weight
            )
            scored = await score_labelled(
                store,
                mv.version,
                encoder,
                texts,
                langs,
                relevant,
                fusion=fusion,
                top_k=settings.top_k,
                candidates=settings.retrieval_candidates,
            )
            fitted = fit_thresholds(
                scored,
                {"match": settings.tier_match_precision, "suggestion": settings.tier_suggestion_precision},
                settings.tier_min_support,
            )
            await store.save_thresholds(mv.version, fitted, source=str(queries))
            return mv.version, fitted

    try:
        fitted_version, fitted = _run(go())
    except LookupError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
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


@models_cli.command("list")
def models_list() -> None:
    """List registered model versions."""
    from worker.store import Store

    settings = load_settings()

    async def go() -> list[Any]:
        store = Store(settings.require_database_url())
        await store.open()
        try:
            return await store.list_versions()
        finally:
            await store.close()

    table = Table("version", "status", "dim", "created", "activated", "path")
    for mv in _run(go()):
        table.add_row(
            mv.version,
            mv.status,
            str(mv.dimension),
            f"{mv.created_at:%Y-%m-%d %H:%M}",
            f"{mv.activated_at:%Y-%m-%d %H:%M}" if mv.activated_at else "",
            mv.path,
        )
    console.print(table)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
