"""``factmatch``: one command line for the demo, the local stack, the worker and its tools.

One module per command group (``stack``: demo, up, post, worker; ``data``: migrate, load;
``model``: eval, calibrate; ``versions``: models list, models refits; ``trainer``: train, rollout, rollback, feedback;
``quarantine``: list, clear, add; ``shadow``: start, stop, report; ``console``: serve, user add;
``claims``: trending). Each
command parses its flags into one :class:`~worker.settings.Settings` and calls library
functions; a new command is a function in the group it belongs to.
"""

from __future__ import annotations

import sys

import typer

from worker.cli import claims, console, data, model, quarantine, shadow, stack, trainer, versions

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="factmatch: match social-media posts to published fact-checks, in any language.",
)
for group in (stack.app, data.app, model.app, trainer.app):
    cli.registered_commands.extend(group.registered_commands)
cli.add_typer(versions.models, name="models")
cli.add_typer(quarantine.app, name="quarantine")
cli.add_typer(shadow.app, name="shadow")
cli.add_typer(console.app, name="console")
cli.add_typer(claims.app, name="claims")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
