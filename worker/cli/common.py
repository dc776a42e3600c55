"""What every command shares: one ``Settings`` from the environment plus flags, the consoles,
and turning a library error into a clear message and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from worker.settings import ENV_PREFIX, Settings

STATE_FILE = Path(".factmatch") / "stack.env"
T = TypeVar("T")

# Piped output (CI, `| tee`, a file) is never cut or wrapped: a table is as wide as its values.
console = Console(width=None if sys.stdout.isatty() else 100_000)
err = Console(stderr=True)

# Every command that reads takes this flag: one JSON document on stdout instead of a table.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
ReadTextFlag = Annotated[
    bool | None,
    typer.Option(help="Also fit the model for text read in images (default: FACTMATCH_CALIBRATE_READ_TEXT)."),
]


def print_json(value: Any) -> None:
    """``value`` as JSON on stdout (datetimes as ISO 8601), for scripts and moderators' tools."""
    print(json.dumps(value, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v), indent=2))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, ``.env`` and the local stack's state file, then flags."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    env_files = [p for p in (Path(".env"), STATE_FILE) if p.is_file()]
    if STATE_FILE in env_files:
        # A left-over file would silently point this command at another stack: say so (stderr).
        err.print(
            f"[dim]using the local stack's settings from {STATE_FILE.resolve()} "
            "(written by `factmatch up`; delete it to use only the environment)[/dim]"
        )
    try:
        return Settings(_env_file=env_files or None, **clean)  # type: ignore[call-arg]
    except ValidationError as exc:
        err.print("[red]invalid settings:[/red]")
        for e in exc.errors():
            name = ".".join(str(p) for p in e["loc"]) or "settings"
            err.print(f"  {ENV_PREFIX}{name.upper()}: {e['msg']}")
        raise typer.Exit(2) from None


def run(coro: Coroutine[Any, Any, T], *, failures: tuple[type[BaseException], ...] = (), code: int = 1) -> T:
    """Run ``coro``; an expected failure prints its message (never a traceback) and exits with ``code``."""
    try:
        return asyncio.run(coro)
    except failures as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(code) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


@contextlib.contextmanager
def local_services(data_dir: Path | None) -> Iterator[tuple[str, str]]:
    """The embedded broker and Postgres for demo and up: (bootstrap, database URL)."""
    from worker.local.stack import local_stack

    with console.status("starting tansu broker and embedded Postgres..."), contextlib.ExitStack() as stack:
        broker, database = stack.enter_context(local_stack(data_dir))
        console.print(f"broker [bold]{broker.bootstrap}[/bold], Postgres [bold]{database.url}[/bold]")
        yield broker.bootstrap, database.url


def act_on_version(settings: Settings, version: str, action: Callable[..., Awaitable[Any]]) -> None:
    """Load ``version``'s encoder and run ``action(store, rollout config, version, encoder)``: a lifecycle
    move (promote, shadow) whose refusals print as messages."""
    from worker.configs import open_store, rollout_config, torch_encoder_loader

    async def go() -> None:
        async with open_store(settings) as store:
            mv = await store.registry.get_version(version)
            if mv is None:
                raise LookupError(f"unknown model version {version!r}")
            # Indexing embeds the corpus and exports for ONNX workers: the real model, torch.
            encoder = torch_encoder_loader(settings)(mv.path)
            await action(store, rollout_config(settings), version, encoder)

    run(go(), failures=(LookupError, RuntimeError))
