"""Server-sent events' fan-out: every open page hears every change to the queue.

One Postgres LISTEN per console process (:meth:`ReviewQueue.changes`) feeds every browser's
queue; a page that cannot keep up loses the oldest changes, not the connection (it refreshes
its rows on the next one anyway). No change is lost between a page and the queue: each (re)start
of the LISTEN is published as a change (``""``: anything may have changed), and a page refreshes
its rows when its own stream (re)connects, so what changed between rendering the page and
hearing the stream is shown too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


class Broadcaster:
    def __init__(self, per_client: int = 100) -> None:
        self.per_client = per_client
        self._clients: set[asyncio.Queue[str]] = set()
        self.closed = False
        # Called with each change before the pages hear it (the app drops what it derived from the queue).
        self.on_publish: list[Callable[[str], None]] = []

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(self.per_client)
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)

    def close(self) -> None:
        """End every open stream (the process is stopping): each hears an empty change and returns."""
        self.closed = True
        for queue in list(self._clients):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait("")

    def publish(self, post_id: str) -> None:
        for hook in self.on_publish:
            hook(post_id)
        for queue in list(self._clients):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(post_id)

    async def follow(self, changes: Callable[[], AsyncIterator[str]], retry_s: float = 2.0) -> None:
        """Publish every change ``changes()`` yields, listening again after a broken connection."""
        while True:
            try:
                async for post_id in changes():
                    self.publish(post_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue changes: %r; listening again in %.0fs", exc, retry_s)
            await asyncio.sleep(retry_s)
