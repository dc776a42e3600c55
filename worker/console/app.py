"""The moderators' console as an ASGI app: thin routes over the queue, the authenticator and the admin actions.

Every route resolves the session first (cookie, or a trusted proxy's header), checks the role
on the server and, for a state change, the CSRF token; the work is the store's
(:class:`~worker.storage.interfaces.ReviewQueue`) and :mod:`worker.console.review`'s. Pages are
Jinja2 templates with autoescaping (a post's ``<script>`` is shown as text) under a strict
Content-Security-Policy (scripts only from ``/static``, nothing inline).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from worker.console.admin import AdminActions, AdminPages
from worker.console.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Authenticator, csrf_ok
from worker.console.claims import ActiveVersion, ClaimPages, Details, TrendSource
from worker.console.clusters import ClusterPages
from worker.console.events import Broadcaster
from worker.console.images import FactCheckImageLinks, ImagePages
from worker.console.precision import ConsoleMetrics, LivePrecision
from worker.console.review import BadVerdict, feedback_records, highlight, shared_terms
from worker.console.web import Recent, SecurityHeaders, http_url
from worker.domain import ClaimLost, ConsoleSession, QueueFilter, ReviewGroup
from worker.images.fetch import ImageFetcher
from worker.storage.interfaces import AccountStore, ClusterReviewQueue, ReviewQueue

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
FILTERS = ("lang", "tier", "platform", "fact_check_id", "model_version")


@dataclass
class ConsoleDeps:
    reviews: ReviewQueue
    accounts: AccountStore
    auth: Authenticator
    events: Broadcaster
    admin: AdminActions = field(default_factory=AdminActions)
    metrics: ConsoleMetrics = field(default_factory=ConsoleMetrics)
    lease_s: float = 120.0
    undo_s: float = 5.0
    secure_cookies: bool = False
    proxy_user_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset()
    ready: Callable[[], Awaitable[dict[str, bool]]] | None = None
    counts_ttl_s: float = 5.0
    depth_ttl_s: float = 1.0
    # The claim pages (trending fact-checks): the workers' counts and the fact-checks' details.
    trends: TrendSource | None = None
    fact_checks: Details | None = None
    active_version: ActiveVersion | None = None
    # The queue by claim cluster: one entry and one verdict for a cluster's open posts.
    groups: ClusterReviewQueue | None = None
    # Posts' and fact-checks' images, fetched and re-encoded by the console (None: not shown).
    image_fetcher: ImageFetcher | None = None
    image_links: FactCheckImageLinks | None = None
    image_max_pixels: int = 40_000_000
    # Each tier's live precision from the verdicts, on /metrics (None: not exposed).
    live_precision: LivePrecision | None = None


class Forbidden(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Console:
    """The console's pages and actions over ``deps``: one method per route, each thin."""

    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
        self.env.filters["http_url"] = http_url
        self.templates = Jinja2Templates(env=self.env)
        self.counts_cache = Recent(self.deps.counts_ttl_s)
        self.depth_cache = Recent(self.deps.depth_ttl_s)
        # The badge follows every change at once (one count per change, not one per open page).
        self.deps.events.on_publish.append(lambda _post_id: self.depth_cache.forget("depth"))

    async def depth(self) -> int:
        value: int = await self.depth_cache.get("depth", self.deps.reviews.depth)
        self.deps.metrics.queue_depth.set(value)
        return value

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        response: Response = self.templates.TemplateResponse(request, name, context, status_code=status)
        return response

    async def session_of(self, request: Request) -> ConsoleSession | None:
        if self.deps.proxy_user_header:
            client = request.client.host if request.client else ""
            name = request.headers.get(self.deps.proxy_user_header)
            if name and client in self.deps.trusted_proxies:
                user = await self.deps.accounts.user(name)
                if user is None or user.disabled:
                    return None
                token = request.cookies.get(COOKIE)
                current = await self.deps.auth.session(token)
                if current is not None and current.user == user.name:
                    return current
                signed = await self.deps.auth.start(user.name, user.role)
                request.state.new_sign_in = signed
                return signed.session
            return None
        return await self.deps.auth.session(request.cookies.get(COOKIE))

    async def require(self, request: Request, *, admin: bool = False, change: bool = False) -> ConsoleSession:
        session = await self.session_of(request)
        if session is None:
            raise Forbidden(401, "sign in first")
        if admin and session.role != "admin":
            raise Forbidden(403, "admins only")
        if change:
            sent = request.headers.get(CSRF_HEADER)
            if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                sent = str((await request.form()).get(CSRF_FIELD) or "")
            if not csrf_ok(session, sent):
                raise Forbidden(403, "missing or wrong CSRF token")
        return session

    def with_cookie(self, request: Request, response: Response) -> Response:
        sign_in = getattr(request.state, "new_sign_in", None)
        if sign_in is not None:
            self.set_cookie(response, sign_in.token)
        return response

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.deps.auth.ttl_s),
            httponly=True,
            samesite="strict",
            secure=self.deps.secure_cookies,
            path="/",
        )

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return self.with_cookie(request, self.render(request, name, context, status))

    def filters_of(self, request: Request) -> QueueFilter:
        values = {k: (request.query_params.get(k) or None) for k in FILTERS}
        if values["tier"] not in (None, "match", "suggestion"):
            values["tier"] = None
        return QueueFilter(**values)  # type: ignore[arg-type]

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", {"error": None})

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("name") or ""), str(form.get("password") or "")
        client = request.client.host if request.client else "?"
        try:
            signed = await self.deps.auth.sign_in(name, password, client)
        except PermissionError as exc:
            return self.render(request, "login.html", {"error": str(exc)}, 429)
        if signed is None:
            return self.render(request, "login.html", {"error": "wrong name or password"}, 401)
        await self.deps.reviews.audit(signed.session.user, signed.session.session_id, "sign_in")
        response = RedirectResponse("/", status_code=303)
        self.set_cookie(response, signed.token)
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.require(request, change=True)
        await self.deps.auth.sign_out(request.cookies.get(COOKIE))
        await self.deps.reviews.audit(session.user, session.session_id, "sign_out")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def counted(self, verdicts: list[str], undos: int = 0) -> None:
        """Count verdicts given and undone (the cluster pages' too)."""
        for verdict in verdicts:
            self.deps.metrics.verdicts.labels(verdict).inc()
        self.deps.metrics.undos.inc(undos)

    async def entries(self, filters: QueueFilter, session: ConsoleSession) -> list[ReviewGroup]:
        """The queue's entries: by claim cluster where the console has the grouped queue."""
        if self.deps.groups is not None:
            return await self.deps.groups.queue(filters, session.session_id, limit=50)
        return [ReviewGroup(i) for i in await self.deps.reviews.queue(filters, session.session_id, limit=50)]

    async def queue_context(self, request: Request, session: ConsoleSession) -> dict[str, Any]:
        filters = self.filters_of(request)
        groups, counts, open_items = await asyncio.gather(
            self.entries(filters, session),
            self.counts_cache.get(filters, lambda: self.deps.reviews.counts(filters, None)),
            self.depth(),
        )
        return {"session": session, "groups": groups, "counts": counts, "depth": open_items, "filters": filters}

    async def queue(self, request: Request) -> Response:
        try:
            session = await self.require(request)
        except Forbidden as exc:
            if exc.status == 401:
                return RedirectResponse("/login", status_code=303)
            raise
        return self.page(request, "queue.html", await self.queue_context(request, session))

    async def queue_rows(self, request: Request) -> Response:
        session = await self.require(request)
        return self.page(request, "rows.html", await self.queue_context(request, session))

    async def item_page(self, request: Request) -> Response:
        session = await self.require(request)
        post_id = request.path_params["post_id"]
        item = await self.deps.reviews.claim(post_id, session.user, session.session_id, self.deps.lease_s)
        if item is None:
            existing = await self.deps.reviews.item(post_id)
            status = 404 if existing is None else 409
            reason = "no such item" if existing is None else "another moderator holds this item, or it is decided"
            return self.page(request, "gone.html", {"session": session, "reason": reason}, status=status)
        await self.deps.reviews.audit(session.user, session.session_id, "claim", post_id=post_id)
        context = {
            "session": session,
            "item": item,
            "segments": highlight(item.text or "", shared_terms(item)),
            "undo_s": self.deps.undo_s,
            "lease_s": self.deps.lease_s,
        }
        return self.page(request, "item.html", context)

    async def verdict(self, request: Request) -> Response:
        session = await self.require(request, change=True)
        post_id = request.path_params["post_id"]
        form = await request.form()
        item = await self.deps.reviews.item(post_id)
        if item is None:
            return JSONResponse({"error": "no such item"}, status_code=404)
        first = not await self.deps.reviews.verdicts(post_id)
        try:
            records = feedback_records(
                item,
                str(form.get("verdict") or ""),
                str(form.get("fact_check_id") or "") or None,
                moderator=session.user,
                note=str(form.get("note") or "") or None,
            )
            pending = await self.deps.reviews.add_verdicts(
                post_id,
                records,
                user=session.user,
                session_id=session.session_id,
                undo_s=self.deps.undo_s,
                note=str(form.get("note") or "") or None,
            )
        except BadVerdict as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ClaimLost as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        self.counted([p.verdict for p in pending])
        if first:
            waited = (datetime.now(UTC) - item.published_at).total_seconds()
            self.deps.metrics.first_verdict_seconds.observe(max(0.0, waited))
        after = await self.deps.reviews.item(post_id)
        return JSONResponse(
            {
                "pending": [{"fact_check_id": p.fact_check_id, "verdict": p.verdict} for p in pending],
                "done": after is not None and after.status == "done",
                "undo_s": self.deps.undo_s,
            }
        )

    async def undo(self, request: Request) -> Response:
        session = await self.require(request, change=True)
        post_id = request.path_params["post_id"]
        n = await self.deps.reviews.undo(post_id, user=session.user, session_id=session.session_id)
        self.counted([], undos=n)
        return JSONResponse({"undone": n})

    async def release(self, request: Request) -> Response:
        session = await self.require(request, change=True)
        await self.deps.reviews.release(request.path_params["post_id"], session.session_id)
        return JSONResponse({"released": True})

    async def events(self, request: Request) -> Response:
        await self.require(request)

        async def stream() -> AsyncIterator[bytes]:
            async with self.deps.events.subscribe() as changes:
                yield f"event: depth\ndata: {await self.depth()}\n\n".encode()
                while not self.deps.events.closed and not await request.is_disconnected():
                    try:
                        post_id = await asyncio.wait_for(changes.get(), timeout=15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if self.deps.events.closed:
                        return
                    change = {"post_id": post_id, "depth": await self.depth()}
                    yield f"event: changed\ndata: {json.dumps(change)}\n\n".encode()

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def healthz(self, _: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, _: Request) -> Response:
        checks = await self.deps.ready() if self.deps.ready else {}
        ok = all(checks.values())
        body = "\n".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in checks.items()) or "ok"
        return PlainTextResponse(body, status_code=200 if ok else 503)

    async def metrics(self, _: Request) -> Response:
        self.deps.metrics.active_sessions.set(await self.deps.accounts.active_sessions())
        if self.deps.live_precision is not None:
            await self.deps.live_precision.refresh()
        return Response(generate_latest(self.deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        if "text/html" in request.headers.get("accept", "") and exc.status == 401:
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)


def claim_routes(console: Console, deps: ConsoleDeps) -> list[Route]:
    """The claim pages (trending fact-checks, emerging claims), when the console has what they read."""
    if deps.trends is None or deps.fact_checks is None or deps.active_version is None:
        return []
    pages = ClaimPages(console, deps.trends, deps.fact_checks, deps.active_version)
    return [Route("/trending", pages.trending, methods=["GET"]), Route("/emerging", pages.emerging, methods=["GET"])]


def image_routes(console: Console, deps: ConsoleDeps) -> list[Route]:
    """The proxied image routes, when the console may fetch images."""
    if deps.image_fetcher is None or deps.image_links is None:
        return []
    pages = ImagePages(console, deps.reviews, deps.image_links, deps.image_fetcher, max_pixels=deps.image_max_pixels)
    return pages.routes()


def create_app(deps: ConsoleDeps) -> Starlette:
    """The console's routes over ``deps``."""
    console = Console(deps)
    routes = [
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/", console.queue, methods=["GET"]),
        Route("/queue/rows", console.queue_rows, methods=["GET"]),
        Route("/items/{post_id:path}/verdicts", console.verdict, methods=["POST"]),
        Route("/items/{post_id:path}/undo", console.undo, methods=["POST"]),
        Route("/items/{post_id:path}/release", console.release, methods=["POST"]),
        Route("/items/{post_id:path}", console.item_page, methods=["GET"]),
        Route("/events", console.events, methods=["GET"]),
        *AdminPages(console, deps.admin, deps.reviews).routes(),
        *claim_routes(console, deps),
        *(ClusterPages(console, deps.groups, lease_s=deps.lease_s, undo_s=deps.undo_s).routes() if deps.groups else []),
        *image_routes(console, deps),
        Route("/healthz", console.healthz),
        Route("/readyz", console.readyz),
        Route("/metrics", console.metrics),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={Forbidden: console.refused},
    )
