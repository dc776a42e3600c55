"""Posts' and fact-checks' images in the console, proxied: never hot-linked to the browser.

A moderator's browser never fetches a post's image link itself (that would tell the image's host
who looks at it, and load whatever the host sends). The console fetches it under the workers'
network policy (:mod:`worker.images.fetch`), decodes it under the pixel cap, and serves a
re-encoded JPEG thumbnail (at most ``max_side`` pixels a side), so no byte of the original
reaches the browser. Only signed-in sessions may ask; a link that is refused or unreadable is a
404 with the reason as text. Thumbnails of recent links are kept in memory (bounded).
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from worker.domain import ConsoleSession, ReviewItem
from worker.images.decode import decode
from worker.images.fetch import ImageFetcher, ImageRefused


class Pages(Protocol):
    async def require(self, request: Request, *, admin: bool = False, change: bool = False) -> ConsoleSession: ...


class Items(Protocol):
    async def item(self, post_id: str) -> ReviewItem | None: ...


class FactCheckImageLinks(Protocol):
    async def image_links(self, fact_check_id: str) -> list[str | None]: ...


def thumbnail(data: bytes, max_pixels: int, max_side: int) -> bytes:
    """The image re-encoded as a JPEG of at most ``max_side`` a side (ImageRefused when unreadable)."""
    from PIL import Image

    image = Image.fromarray(decode(data, max_pixels))
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


class ImagePages:
    """The image routes of the console."""

    def __init__(
        self,
        console: Pages,
        items: Items,
        links: FactCheckImageLinks,
        fetcher: ImageFetcher,
        *,
        max_pixels: int,
        max_side: int = 640,
        cache_size: int = 256,
    ) -> None:
        self.console = console
        self.items = items
        self.links = links
        self.fetcher = fetcher
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.cache_size = cache_size
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    def routes(self) -> list[Route]:
        return [
            Route("/images/posts/{index:int}/{post_id:path}", self.post_image, methods=["GET"]),
            Route("/images/fact-checks/{index:int}/{fact_check_id:path}", self.fact_check_image, methods=["GET"]),
        ]

    async def post_image(self, request: Request) -> Response:
        await self.console.require(request)
        item = await self.items.item(request.path_params["post_id"])
        images: list[dict[str, Any]] = list((item.result.get("images") or []) if item else [])
        index: int = request.path_params["index"]
        url = images[index].get("url") if 0 <= index < len(images) else None
        return await self._serve(url)

    async def fact_check_image(self, request: Request) -> Response:
        await self.console.require(request)
        links = await self.links.image_links(request.path_params["fact_check_id"])
        index: int = request.path_params["index"]
        return await self._serve(links[index] if 0 <= index < len(links) else None)

    async def _serve(self, url: str | None) -> Response:
        if not url:
            return PlainTextResponse("no such image (an inline image is not kept)", status_code=404)
        data = self._cache.get(url)
        if data is None:
            try:
                raw = await self.fetcher.fetch(url)
                data = await asyncio.to_thread(thumbnail, raw, self.max_pixels, self.max_side)
            except ImageRefused as refused:
                return PlainTextResponse(f"image not shown: {refused.reason}", status_code=404)
            self._cache[url] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(url)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    async def close(self) -> None:
        await self.fetcher.close()
