"""``factmatch console``: the moderators' web console, and its accounts.

``factmatch console`` serves the console (its own consumer group on the matches topic);
``factmatch console user add NAME --role moderator|admin`` creates or updates an account, with
the password read from a prompt or from stdin (never from an argument, which the shell keeps).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer

from worker.cli.common import console, err, fail, load_settings, run

app = typer.Typer(invoke_without_command=True, help="The moderators' web console and its accounts.")
users = typer.Typer(no_args_is_help=True, help="Console accounts.")
app.add_typer(users, name="user")


@app.callback()
def serve(ctx: typer.Context) -> None:
    """Serve the console until Ctrl-C or SIGTERM (FACTMATCH_CONSOLE_HOST / _PORT)."""
    if ctx.invoked_subcommand is not None:
        return
    from worker.console.runtime import serve as serve_console
    from worker.logs import configure_logging
    from worker.storage import migrate

    settings = load_settings()
    configure_logging(settings.log_level, secrets=settings.secrets())

    async def go() -> None:
        await migrate(settings.require_database_url(), wait_s=30)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_console(settings, stop)

    run(go(), failures=(OSError,))


def read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise fail("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


@users.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="The moderator's sign-in name.")],
    role: Annotated[str, typer.Option(help="moderator or admin.")] = "moderator",
    proxy_only: Annotated[
        bool, typer.Option("--proxy-only", help="No password: signs in through the trusted proxy's header only.")
    ] = False,
) -> None:
    """Create an account (or change its role and password); the password comes from a prompt or stdin."""
    from worker.configs import open_store
    from worker.console.auth import hash_password
    from worker.domain import ROLES

    if role not in ROLES:
        raise fail(f"role must be one of {', '.join(ROLES)}")
    settings = load_settings()
    try:
        hashed = None if proxy_only else hash_password(read_password())
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def go() -> bool:
        async with open_store(settings) as store:
            return await store.accounts.put_user(name, role, hashed)  # type: ignore[arg-type]

    created = run(go(), failures=(ValueError,))
    console.print(f"{'created' if created else 'updated'} {name} ({role})")
    if proxy_only:
        err.print("this account signs in only through FACTMATCH_CONSOLE_PROXY_USER_HEADER")
