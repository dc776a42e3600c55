"""The console's admin pages: model versions with a typed-confirmation rollback, the quarantine,
and the dead letters. Admins only; every change is audited."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.console.clusters import Pages
from worker.storage.interfaces import ReviewQueue


class AdminActions:
    """What the admin pages may do; the runtime wires the real ones (registry, rollback, quarantine)."""

    async def versions(self) -> list[dict[str, Any]]:
        return []

    async def rollback(self, version: str | None) -> str:
        raise RuntimeError("rollback is not available here")

    async def quarantined(self) -> list[dict[str, Any]]:
        return []

    async def clear_quarantine(self, fact_check_id: str, by: str) -> bool:
        return False


class AdminPages:
    """``/admin`` and its two actions, over the console's sessions and pages."""

    def __init__(self, console: Pages, admin: AdminActions, reviews: ReviewQueue) -> None:
        self.console, self.admin, self.reviews = console, admin, reviews

    def routes(self) -> list[Route]:
        return [
            Route("/admin", self.admin_page, methods=["GET"]),
            Route("/admin/rollback", self.admin_rollback, methods=["POST"]),
            Route("/admin/quarantine/clear", self.admin_clear, methods=["POST"]),
        ]

    async def admin_page(self, request: Request) -> Response:
        session = await self.console.require(request, admin=True)
        versions, quarantined, (letter_counts, letters) = await asyncio.gather(
            self.admin.versions(), self.admin.quarantined(), self.reviews.dead_letters()
        )
        context = {
            "session": session,
            "versions": versions,
            "quarantined": quarantined,
            "letter_counts": letter_counts,
            "letters": letters,
        }
        return self.console.page(request, "admin.html", context)

    async def admin_rollback(self, request: Request) -> Response:
        session = await self.console.require(request, admin=True, change=True)
        form = await request.form()
        if str(form.get("confirm") or "") != "rollback":
            return JSONResponse({"error": "type rollback to confirm"}, status_code=400)
        version = str(form.get("version") or "") or None
        try:
            target = await self.admin.rollback(version)
        except (LookupError, RuntimeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        await self.reviews.audit(session.user, session.session_id, "rollback", detail={"version": target})
        return JSONResponse({"active": target})

    async def admin_clear(self, request: Request) -> Response:
        session = await self.console.require(request, admin=True, change=True)
        fact_check_id = str((await request.form()).get("fact_check_id") or "")
        cleared = await self.admin.clear_quarantine(fact_check_id, session.user)
        await self.reviews.audit(
            session.user, session.session_id, "clear_quarantine", detail={"fact_check_id": fact_check_id}
        )
        return JSONResponse({"cleared": cleared})
