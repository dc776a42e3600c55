"""Small web pieces of the console: a per-process cache of recent values, safe links, security headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Recent:
    """Values computed at most once per ``ttl_s`` per key, in this process.

    The queue's counts per filter scan every open item (hundreds of milliseconds at 100,000):
    every page load and every live refresh would pay it. Counts a few seconds old are what a
    moderator needs; the items listed are always read fresh.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, asyncio.Lock] = {}

    def forget(self, key: Any) -> None:
        self._values.pop(key, None)

    async def get(self, key: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        async with self._locks.setdefault(key, asyncio.Lock()):  # one computation per key at a time
            now = time.monotonic()
            found = self._values.get(key)
            if found is not None and now - found[0] < self.ttl_s:
                return found[1]
            value = await compute()
            self._values[key] = (time.monotonic(), value)
            if len(self._values) > 1000:  # filters are few; bound it anyway
                self._values.pop(next(iter(self._values)))
            return value


def http_url(value: object) -> str | None:
    """A link only when it is http(s): a post's ``javascript:`` URL is shown as nothing."""
    text = str(value or "").strip()
    return text if text.lower().startswith(("https://", "http://")) else None


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response
