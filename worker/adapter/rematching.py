"""Publishing re-matched results (:mod:`worker.core.rematch`) on the matches topic.

Every ``rematch_interval_s`` each worker asks Postgres whose turn it is
(:meth:`worker.storage.trends.Trends.report_turn`, ``rematch``); the one that gets it runs a pass
when the fact-checks changed, publishes each update (keyed by its post, like every result) and
then records the pass. A failed pass is logged and tried again at the next interval: nothing was
recorded, so its updates are found again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from worker.adapter.claim_reports import every
from worker.core.rematch import Rematcher
from worker.wire import MatchResult

log = logging.getLogger(__name__)


class RematchLoop:
    """The runtime's background task that re-matches when it is this worker's turn."""

    def __init__(
        self,
        rematcher: Rematcher,
        turn: Callable[[str, float], Awaitable[bool]],
        publish: Callable[[Sequence[MatchResult]], Awaitable[None]],
        interval_s: float,
        on_rematched: Callable[[int], None] | None = None,
    ) -> None:
        self.rematcher = rematcher
        self.turn = turn
        self.publish = publish
        self.interval_s = interval_s
        self.on_rematched = on_rematched

    async def once(self) -> int | None:
        """One turn: how many posts were re-matched, or None when it was not this worker's turn or
        the fact-checks had not changed."""
        if not await self.turn("rematch", self.interval_s):
            return None
        found = await self.rematcher.find()
        if found is None:
            return None
        if found.results:
            await self.publish(found.results)
        changed = await self.rematcher.record(found)
        log.info(
            "re-match: %d unmatched cluster(s) searched, %d post(s) re-matched",
            found.clusters,
            changed,
            extra={"model_version": found.version, "generation": found.generation},
        )
        if self.on_rematched is not None and changed:
            self.on_rematched(changed)
        return changed

    async def run(self) -> None:
        await every(self.interval_s, self.once, "re-match pass failed")
