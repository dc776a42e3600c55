"""``faststream run worker.app:app``: the worker's entry point (the same app as ``factmatch worker``).

The app is built from the environment on first access, so importing this module (tests,
the CLI) never reads the environment. The adapter itself lives in :mod:`worker.adapter`.
"""

from __future__ import annotations

from typing import Any

from faststream import FastStream

from worker.adapter.runtime import WorkerRuntime
from worker.settings import Settings

__all__ = ["WorkerRuntime", "create_app"]


def create_app(settings: Settings | None = None) -> FastStream:
    """The production worker app: real store, real model, real broker."""
    from worker.logs import configure_logging

    settings = settings or Settings()
    configure_logging(settings.log_level, secrets=settings.secrets())
    runtime = WorkerRuntime(settings)

    async def start_services() -> None:
        await runtime.start_services(wait_for_model=False)

    return FastStream(
        runtime.broker,
        on_startup=[start_services],
        after_startup=[runtime.fail_unless_loaded],
        on_shutdown=[runtime.settle_batches],
        after_shutdown=[runtime.stop_services],
    )


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
