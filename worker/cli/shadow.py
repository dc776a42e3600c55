"""``factmatch shadow``: run a candidate beside the active version on live posts, unpublished.

``start`` indexes the version (if it is still a candidate) and makes it the one shadow
version; every worker loads it beside the active one and answers ``shadow_share`` of the posts
with it too, recording what it would have shown. ``report`` reads the evidence the promotion
gate reads (``gate_shadow_min_posts``, ``gate_shadow_min_agreement``); ``stop`` ends it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from worker.cli.common import JsonFlag, act_on_version, console, load_settings, print_json, run

app = typer.Typer(no_args_is_help=True, help="Shadow evaluation of a candidate version on live posts.")


@app.command()
def start(version: Annotated[str, typer.Argument(help="A candidate or ready version.")]) -> None:
    """Index VERSION if needed and run it in shadow on every worker."""
    from worker.core.rollout import start_shadow

    settings = load_settings()
    act_on_version(settings, version, start_shadow)
    console.print(f"{version} runs in shadow on {settings.shadow_share:.0%} of posts")


@app.command()
def stop() -> None:
    """End shadow evaluation (its records are kept)."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> None:
        async with open_store(settings, migrate_first=False) as store:
            await store.shadow.set_shadow(None)

    run(go())
    console.print("no version runs in shadow")


@app.command()
def report(
    version: Annotated[str | None, typer.Argument(help="Default: the current shadow version.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rank-1 agreement with the active version, score shifts per language, and judged precision."""
    from worker.configs import open_store

    settings = load_settings()

    async def go() -> tuple[str, object]:
        async with open_store(settings, migrate_first=False) as store:
            name = version or await store.shadow.shadow_version_name()
            if name is None:
                raise LookupError("no version runs in shadow; name one")
            return name, await store.shadow.shadow_report(name)

    name, found = run(go(), failures=(LookupError,))
    if as_json:
        print_json({"version": name, **found.as_dict()})  # type: ignore[attr-defined]
        return
    table = Table("measure", "value", title=f"shadow evidence for {name}")
    for key, value in found.as_dict().items():  # type: ignore[attr-defined]
        table.add_row(key, str(value))
    console.print(table)
