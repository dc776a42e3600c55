"""Retrying a dependency's call with backoff, and what is raised when it stays down.

A transient failure (a connection refused, a timeout, Postgres unavailable: ``transient``) is
retried ``attempts`` times with exponential backoff and full jitter; then the call raises
:class:`DependencyUnavailable`, which every caller treats as an outage: the batch is left
uncommitted and comes back, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DependencyUnavailable(RuntimeError):
    """A dependency stayed down through every retry; the batch must not be committed."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_s: float
    max_s: float
    transient: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    on_retry: Callable[[str], None] | None = field(default=None, compare=False)

    def delay(self, attempt: int) -> float:
        # Full jitter keeps a fleet of workers from hammering a recovering database in step.
        ceiling = min(self.max_s, self.initial_s * (2 ** (attempt - 1)))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except self.transient as exc:
                if attempt == self.attempts:
                    raise DependencyUnavailable(f"{what} failed {attempt} times: {exc!r}") from exc
                delay = self.delay(attempt)
                if self.on_retry is not None:
                    self.on_retry(what)
                log.warning(
                    "%s failed (attempt %d/%d), retrying in %.2fs: %r", what, attempt, self.attempts, delay, exc
                )
                await self.sleep(delay)
        raise AssertionError("unreachable")
