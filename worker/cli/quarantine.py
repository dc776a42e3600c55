"""``factmatch quarantine``: the fact-checks demoted for over-matching, and clearing them.

A worker's over-match watch quarantines a fact-check that suddenly matches far more posts
than its baseline (:mod:`worker.retrieval.overmatch`); a moderator looks at it, fixes the
fact-check if it was a bad edit, and clears it here. Every worker sees the change within
``quarantine_refresh_s``.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import JsonFlag, console, fail, load_settings, print_json, run

app = typer.Typer(no_args_is_help=True, help="Fact-checks demoted a tier (never 'match') for over-matching.")


@app.command("list")
def list_quarantine(
    everything: Annotated[bool, typer.Option("--all", help="Include cleared quarantines.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The quarantined fact-checks, with why and since when."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> list[dict[str, Any]]:
        async with open_store(settings, migrate_first=False) as store:
            return await store.quarantine.quarantine_log()

    rows = [row for row in run(go()) if row["cleared_at"] is None or everything]
    if as_json:
        print_json(rows)
        return
    table = Table("fact-check", "since", "by", "reason", "cleared", title="quarantined fact-checks")
    for row in rows:
        cleared = f"{row['cleared_at']:%Y-%m-%d %H:%M} by {row['cleared_by']}" if row["cleared_at"] else ""
        table.add_row(
            row["fact_check_id"], f"{row['flagged_at']:%Y-%m-%d %H:%M}", row["flagged_by"], row["reason"], cleared
        )
    console.print(table)


@app.command()
def clear(
    fact_check_id: Annotated[str, typer.Argument(help="The fact-check to give its tiers back.")],
    by: Annotated[str | None, typer.Option(help="Who clears it (default: the login name).")] = None,
) -> None:
    """Give a quarantined fact-check its tiers back."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> bool:
        async with open_store(settings, migrate_first=False) as store:
            return await store.quarantine.clear_quarantine(fact_check_id, by or getpass.getuser())

    if not run(go()):
        raise fail(f"{fact_check_id} is not quarantined")
    console.print(f"cleared {fact_check_id}; workers pick it up within {settings.quarantine_refresh_s:.0f}s")


@app.command()
def add(
    fact_check_id: Annotated[str, typer.Argument(help="The fact-check to demote.")],
    reason: Annotated[str, typer.Option(help="Why (shown by `quarantine list`).")],
    by: Annotated[str | None, typer.Option(help="Who (default: the login name).")] = None,
) -> None:
    """Demote a fact-check by hand (never 'match'; a suggestion is withheld)."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> bool:
        async with open_store(settings, migrate_first=False) as store:
            return await store.quarantine.quarantine(fact_check_id, reason, by or getpass.getuser())

    if not run(go()):
        raise fail(f"{fact_check_id} is already quarantined")
    console.print(f"quarantined {fact_check_id}")
