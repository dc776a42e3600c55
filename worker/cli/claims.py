"""``factmatch claims``: what the stream is saying, claim by claim (trending fact-checks, emerging claims).

Reads what the workers count as they put posts in claim clusters (:mod:`worker.storage.trends`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from worker.cli.common import JsonFlag, console, fail, load_settings, print_json, run
from worker.domain import EmergingClaim, TrendingFactCheck

app = typer.Typer(no_args_is_help=True, help="Claims in the stream: trending fact-checks, emerging claims.")

SPARKS = " ▁▂▃▄▅▆▇█"

# The options both lists take.
At = Annotated[
    str | None, typer.Option(help="ISO 8601 moment to look back from (default: now; a replayed stream's end).")
]
Limit = Annotated[int, typer.Option(min=1, max=1000)]
MinPosts = Annotated[int, typer.Option(min=1, help="Fewest posts in the last day to be listed.")]


def sparkline(values: list[int]) -> str:
    top = max(values) or 1
    return "".join(SPARKS[round(v / top * (len(SPARKS) - 1))] for v in values)


def moment_of(at: str | None) -> datetime:
    """``--at`` as an aware datetime (UTC when it names no zone); now when absent."""
    try:
        moment = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError as exc:
        raise fail(f"--at: {exc}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def counted(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items(), key=lambda kv: -kv[1]))


@app.command()
def trending(
    at: At = None,
    limit: Limit = 20,
    min_posts: MinPosts = 3,
    as_json: JsonFlag = False,
) -> None:
    """The fact-checks the stream's posts match most, fastest rising first (spike against their own week)."""
    from worker.configs import open_store

    settings = load_settings()
    moment = moment_of(at)

    async def go() -> list[TrendingFactCheck]:
        async with open_store(settings, migrate_first=False) as store:
            return await store.trends.trending(moment, limit=limit, min_posts=min_posts)

    rows = run(go())
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    table = Table("fact-check", "spike", "1 h", "24 h", "7 d", "last 24 h", "languages", "platforms")
    table.title = f"trending fact-checks at {moment:%Y-%m-%d %H:%M} UTC"
    for r in rows:
        langs, platforms = counted(r.langs), counted(r.platforms)
        table.add_row(
            r.fact_check_id,
            f"{r.spike:.1f}",
            str(r.last_hour),
            str(r.last_day),
            str(r.last_week),
            sparkline(r.hourly),
            langs,
            platforms,
        )
    console.print(table)


@app.command()
def emerging(
    at: At = None,
    limit: Limit = 20,
    min_posts: MinPosts = 3,
    as_json: JsonFlag = False,
) -> None:
    """Claims the stream keeps making that no fact-check matches yet, fastest growing first."""
    from worker.configs import open_store

    settings = load_settings()
    moment = moment_of(at)

    async def go() -> list[EmergingClaim]:
        async with open_store(settings, migrate_first=False) as store:
            active = await store.registry.active_version()
            if active is None:
                raise fail("no active model version")
            return await store.trends.emerging(active.version, moment, limit=limit, min_posts=min_posts)

    rows = run(go())
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    table = Table("cluster", "growth", "24 h", "size", "claim", "languages", "platforms")
    table.title = f"emerging claims (no fact-check yet) at {moment:%Y-%m-%d %H:%M} UTC"
    for r in rows:
        table.add_row(
            str(r.cluster_id), f"{r.growth:.1f}", str(r.last_day), str(r.size), r.representative[:120],
            counted(r.langs), counted(r.platforms),
        )  # fmt: skip
    console.print(table)
