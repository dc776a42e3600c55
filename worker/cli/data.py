"""Commands about what is stored and exchanged: the schema, the fact-check corpus, the topics and their contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import console, err, fail, load_settings, run

app = typer.Typer()


@app.command()
def migrate(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the database to accept connections.")] = 0.0,
) -> None:
    """Apply the database migrations (idempotent; safe to run from several pods at once)."""
    import psycopg

    from worker.storage import migrate as apply

    settings = load_settings()
    try:
        applied = run(apply(settings.require_database_url(), wait))
    except psycopg.OperationalError as exc:
        # libpq's message may quote the connection string: print only the error class.
        err.print(f"[red]database unreachable after {wait:.0f}s: {type(exc).__name__}[/red]")
        raise typer.Exit(1) from None
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")


@app.command()
def load(
    path: Annotated[Path, typer.Argument(help="Fact-checks JSONL: id, claim (or text), title, url, lang, ...")],
) -> None:
    """Load fact-checks and embed them under every serving model version."""
    from worker.configs import load_fact_checks, open_store
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl

    settings = load_settings()
    try:
        fact_checks = corpus_from_rows(load_jsonl(path))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None

    async def go() -> int:
        async with open_store(settings) as store:
            return await load_fact_checks(store, settings, fact_checks)

    console.print(f"loaded {run(go())} fact-check(s)")


@app.command()
def topics(
    partitions: Annotated[int | None, typer.Option(help="Default: FACTMATCH_TOPIC_PARTITIONS.")] = None,
    replication: Annotated[int | None, typer.Option(help="Default: FACTMATCH_TOPIC_REPLICATION.")] = None,
) -> None:
    """Create factmatch's topics where missing (workers never create them); existing ones are left as they are."""
    from worker.adapter.topics import ensure_topics

    created = run(ensure_topics(load_settings(), partitions, replication))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or 'none needed'}")


@app.command()
def contract(
    out: Annotated[
        Path | None, typer.Option(help="Directory to write; default: the repository's docs/contract.")
    ] = None,
) -> None:
    """Write the topics' AsyncAPI document and the wire models' JSON Schemas (generated from the code)."""
    from worker.adapter.contract import CONTRACT_DIR, write_contract

    written = write_contract(out or CONTRACT_DIR)
    console.print(f"wrote {len(written)} file(s) under {out or CONTRACT_DIR}")
