"""The console's claim pages: trending fact-checks (each with a sparkline of its last day) and the
emerging claims that need a fact-check.

Read-only for every signed-in user; the counts are the workers' (:mod:`worker.storage.trends`), the
fact-checks' claims and links come from the corpus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from worker.domain import ConsoleSession, EmergingClaim, FactCheckDetails, TrendingFactCheck

Details = Callable[[Sequence[str]], Awaitable[dict[str, FactCheckDetails]]]


class Pages(Protocol):
    """What the claim pages take from :class:`worker.console.app.Console`: its sessions and its pages."""

    async def require(self, request: Request, *, admin: bool = False, change: bool = False) -> ConsoleSession: ...
    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response: ...


class TrendSource(Protocol):
    async def trending(self, now: datetime, *, limit: int = 20, min_posts: int = 3) -> list[TrendingFactCheck]: ...
    async def emerging(
        self, version: str, now: datetime, *, limit: int = 20, min_posts: int = 3, examples: int = 3
    ) -> list[EmergingClaim]: ...


ActiveVersion = Callable[[], Awaitable[str | None]]


def sparkline(values: Sequence[int], width: int = 120, height: int = 24) -> str:
    """SVG polyline points for ``values`` (oldest first), scaled to the box."""
    top = max(values, default=0) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}" for i, v in enumerate(values))


class ClaimPages:
    """Routes of the claim pages, on top of the console's sessions and pages."""

    def __init__(
        self, console: Pages, trends: TrendSource, details: Details, active: ActiveVersion, limit: int = 50
    ) -> None:
        self.console = console
        self.trends = trends
        self.details = details
        self.active = active
        self.limit = limit

    @staticmethod
    def moment(request: Request) -> datetime:
        """``?at=`` (ISO 8601, UTC when it names no zone; a replayed stream's end), else now."""
        try:
            now = datetime.fromisoformat(request.query_params.get("at") or "")
        except ValueError:
            return datetime.now(UTC)
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    async def trending(self, request: Request) -> Response:
        session = await self.console.require(request)
        now = self.moment(request)
        rows = await self.trends.trending(now, limit=self.limit)
        found = await self.details([r.fact_check_id for r in rows]) if rows else {}
        context: dict[str, Any] = {
            "session": session,
            "now": now,
            "rows": [
                {"trend": r, "fact_check": found.get(r.fact_check_id), "points": sparkline(r.hourly)} for r in rows
            ],
        }
        return self.console.page(request, "trending.html", context)

    async def emerging(self, request: Request) -> Response:
        session = await self.console.require(request)
        now = self.moment(request)
        version = await self.active()
        rows = await self.trends.emerging(version, now, limit=self.limit) if version else []
        return self.console.page(request, "emerging.html", {"session": session, "now": now, "rows": rows})
