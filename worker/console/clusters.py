"""Cluster-level review: a claim cluster's open posts on one page, one verdict for all of them.

The page claims the cluster's open posts (within the queue's filters) for the session; a verdict
names the posts the page showed and is recorded for each of them that showed the fact-check
(:func:`worker.console.review.cluster_feedback`): one verdict row, audit row and Feedback
record per post, in one transaction. Undo, release and lease renewal take the same list, so
a post that joined the cluster after the page was drawn is never decided unseen.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.console.review import BadVerdict, cluster_feedback, cluster_matches, highlight, shared_terms
from worker.domain import ClaimLost, ConsoleSession, QueueFilter
from worker.storage.interfaces import ClusterReviewQueue


class Pages(Protocol):
    """What the cluster pages take from :class:`worker.console.app.Console`."""

    async def require(self, request: Request, *, admin: bool = False, change: bool = False) -> ConsoleSession: ...
    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response: ...
    def filters_of(self, request: Request) -> QueueFilter: ...
    def counted(self, verdicts: list[str], undos: int = 0) -> None: ...


class ClusterPages:
    """Routes of the cluster page and its actions."""

    def __init__(self, console: Pages, groups: ClusterReviewQueue, *, lease_s: float, undo_s: float) -> None:
        self.console = console
        self.groups = groups
        self.lease_s = lease_s
        self.undo_s = undo_s

    def routes(self) -> list[Route]:
        return [
            Route("/clusters/{cluster_id:int}/verdicts", self.verdict, methods=["POST"]),
            Route("/clusters/{cluster_id:int}/undo", self.undo, methods=["POST"]),
            Route("/clusters/{cluster_id:int}/release", self.release, methods=["POST"]),
            Route("/clusters/{cluster_id:int}/renew", self.renew, methods=["POST"]),
            Route("/clusters/{cluster_id:int}", self.cluster_page, methods=["GET"]),
        ]

    async def cluster_page(self, request: Request) -> Response:
        session = await self.console.require(request)
        cluster_id: int = request.path_params["cluster_id"]
        items = await self.groups.claim(
            cluster_id, session.user, session.session_id, self.lease_s, filters=self.console.filters_of(request)
        )
        if not items:
            reason = "no open post of this claim is left for you: decided, or held by another moderator"
            return self.console.page(request, "gone.html", {"session": session, "reason": reason}, status=409)
        first = items[0]
        context = {
            "session": session,
            "cluster_id": cluster_id,
            "item": first,
            "items": items,
            "matches": cluster_matches(items),
            "segments": highlight(first.text or "", shared_terms(first)),
            "undo_s": self.undo_s,
            "lease_s": self.lease_s,
        }
        return self.console.page(request, "cluster.html", context)

    @staticmethod
    async def posts_of(request: Request) -> tuple[list[str], Any]:
        form = await request.form()
        return [str(p) for p in form.getlist("post")][:1000], form

    async def verdict(self, request: Request) -> Response:
        session = await self.console.require(request, change=True)
        cluster_id: int = request.path_params["cluster_id"]
        posts, form = await self.posts_of(request)
        items = await self.groups.claim(cluster_id, session.user, session.session_id, self.lease_s, post_ids=posts)
        if not items:
            return JSONResponse({"error": "this session holds none of these posts"}, status_code=409)
        note = str(form.get("note") or "") or None
        try:
            records = cluster_feedback(
                items,
                str(form.get("verdict") or ""),
                str(form.get("fact_check_id") or "") or None,
                moderator=session.user,
                note=note,
            )
            pending = await self.groups.add_verdicts(
                cluster_id, records, user=session.user, session_id=session.session_id, undo_s=self.undo_s, note=note
            )
        except BadVerdict as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ClaimLost as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        self.console.counted([p.verdict for p in pending])
        still = await self.groups.claim(cluster_id, session.user, session.session_id, self.lease_s, post_ids=posts)
        return JSONResponse(
            {
                "pending": [
                    {"post_id": p.post_id, "fact_check_id": p.fact_check_id, "verdict": p.verdict} for p in pending
                ],
                "posts": len({p.post_id for p in pending}),
                "open": [i.post_id for i in still],
                "done": not still,
                "undo_s": self.undo_s,
            }
        )

    async def undo(self, request: Request) -> Response:
        session = await self.console.require(request, change=True)
        posts, _ = await self.posts_of(request)
        n = await self.groups.undo(posts, user=session.user, session_id=session.session_id)
        self.console.counted([], undos=n)
        return JSONResponse({"undone": n})

    async def release(self, request: Request) -> Response:
        session = await self.console.require(request, change=True)
        posts, _ = await self.posts_of(request)
        await self.groups.release(posts, session.session_id)
        return JSONResponse({"released": len(posts)})

    async def renew(self, request: Request) -> Response:
        session = await self.console.require(request, change=True)
        posts, _ = await self.posts_of(request)
        held = await self.groups.claim(
            request.path_params["cluster_id"], session.user, session.session_id, self.lease_s, post_ids=posts
        )
        return JSONResponse({"held": [i.post_id for i in held]})
