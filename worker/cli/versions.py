"""``factmatch models``: the registered model versions, and their decisions' refits from verdicts."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import JsonFlag, console, load_settings, print_json, run

models = typer.Typer(no_args_is_help=True, help="Model versions.")


@models.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """List registered model versions."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> list[tuple[Any, dict[str, Any] | None, Any]]:
        async with open_store(settings, migrate_first=False) as store:
            return [
                (mv, await store.decisions.decision_report(mv.version), await store.shadow.shadow_report(mv.version))
                for mv in await store.registry.list_versions()
            ]

    rows = run(go())
    if as_json:
        print_json(
            [
                {**dataclasses.asdict(mv), "decision": report, "shadow_report": shadow.as_dict()}
                for mv, report, shadow in rows
            ]
        )
        return
    table = Table("version", "status", "dim", "created", "activated", "decision (open-set)", "shadow", "path")
    for mv, report, shadow in rows:
        table.add_row(
            mv.version,
            mv.status + (" (shadow)" if mv.shadow else ""),
            str(mv.dimension),
            f"{mv.created_at:%Y-%m-%d %H:%M}",
            f"{mv.activated_at:%Y-%m-%d %H:%M}" if mv.activated_at else "",
            decision_summary(report),
            shadow_summary(shadow),
            mv.path,
        )
    console.print(table)


@models.command("refits")
def models_refits(
    version: Annotated[str | None, typer.Option(help="One version's (default: every version's).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The decisions refitted from the moderators' verdicts, and the refits refused, with why."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> list[dict[str, Any]]:
        async with open_store(settings, migrate_first=False) as store:
            return await store.decisions.refits(version, limit)

    rows = run(go())
    if as_json:
        print_json(rows)
        return
    table = Table("version", "at", "outcome", "verdicts", "held-out match P (in use -> refit)", "reason")
    for r in rows:
        held = r["heldout"] or {}
        cell = ""
        if held.get("refit"):
            old, new = held["in_use"]["match"], held["refit"]["match"]
            cell = f"{_share(old['precision'])} (n={old['judged']}) -> {_share(new['precision'])} (n={new['judged']})"
        table.add_row(
            r["model_version"], f"{r['at']:%Y-%m-%d %H:%M}", r["outcome"], str(r["verdicts"]), cell, r["reason"]
        )
    console.print(table)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def shadow_summary(report: Any) -> str:
    """One cell: what the version did in shadow (posts, rank-1 agreement, judged precision)."""
    if not report.posts:
        return ""
    cell = f"{report.posts} posts, agree {report.agreement:.0%}"
    if report.judged:
        cell += f", P {report.precision:.2f} (active {report.active_precision or 0:.2f}, n={report.judged})"
    return cell


def decision_summary(report: dict[str, Any] | None) -> str:
    """One cell: how the version's decision model did when it was fitted (or "none")."""
    if not report or "match" not in report:
        return "none" if report is None else "shipped"
    m = report["match"]
    return f"match P {m['precision']:.2f} R {m['recall']:.2f} FA {m['false_alarm']:.2f}, AUROC {report['auroc']:.2f}"
