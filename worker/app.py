"""``faststream run worker.app:app``: the worker's entry point (the same app as ``factmatch worker``).

The app is built from the environment on first access, so importing this module (tests,
the CLI) never reads the environment. The adapter itself lives in :mod:`worker.adapter`.
"""

from __future__ import annotations

from typing import Any

from worker.adapter.runtime import WorkerRuntime, create_app

__all__ = ["WorkerRuntime", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
