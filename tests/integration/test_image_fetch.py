"""Integration tier: the image fetcher against a real local HTTP server.

The server listens on 127.0.0.2, the one address the policy allows (as a platform's CDN inside a
private network would be): everything else on loopback, the metadata address and private networks
stays refused, also behind a redirect, and no answer, a trickle or a flood holds the fetch past
its bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from tests.unit.test_images import encoded, photo
from worker.images.decode import decode
from worker.images.fetch import FetchPolicy, ImageFetcher, ImageRefused
from worker.images.pdq import hamming, pdq_hash

HOST = "127.0.0.2"
PNG = encoded(photo(7))


async def _serve() -> tuple[web.AppRunner, int]:
    async def image(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="text/html")  # the header lies; the bytes decide

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>a page, not an image</html>", content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop?n={int(request.query.get('n', 0)) + 1}")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 3_000_000)

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await response.prepare(request)
        for _ in range(400):
            await response.write(b"\x00" * 10_000)
        return response

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(600):
            await response.write(b"\x00")
            await asyncio.sleep(0.05)
        return response

    async def silent(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=PNG)

    app = web.Application()
    for path, handler in {"/image": image, "/page": page, "/redirect": redirect, "/loop": loop, "/huge": huge,
                          "/flood": flood, "/trickle": trickle, "/silent": silent}.items():  # fmt: skip
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    server: Any = site._server
    return runner, int(server.sockets[0].getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner, port = await _serve()
    yield f"http://{HOST}:{port}"
    await runner.cleanup()


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    policy = FetchPolicy(max_bytes=1_000_000, timeout_s=1.5, connect_timeout_s=1.0, max_redirects=3,
                         allow_networks=FetchPolicy.networks(f"{HOST}/32"))  # fmt: skip
    fetcher = ImageFetcher(policy)
    yield fetcher
    await fetcher.close()


async def refusal(fetcher: ImageFetcher, url: str) -> ImageRefused:
    started = time.monotonic()
    with pytest.raises(ImageRefused) as refused:
        await fetcher.fetch(url)
    assert time.monotonic() - started < fetcher.policy.timeout_s + 1.0  # nothing holds it longer
    return refused.value


async def test_an_image_is_fetched_and_read_from_its_bytes(server: str, fetcher: ImageFetcher) -> None:
    data = await fetcher.fetch(f"{server}/image")
    assert data == PNG
    assert hamming(pdq_hash(decode(data, 10**7)).hex, pdq_hash(np.asarray(photo(7))).hex) == 0
    # Redirects within the policy are followed.
    assert await fetcher.fetch(f"{server}/redirect?to=/image") == PNG
    page = await fetcher.fetch(f"{server}/page")  # claims image/png
    with pytest.raises(ImageRefused) as refused:
        decode(page, 10**7)
    assert refused.value.reason == "not_an_image"


async def test_inside_addresses_are_refused_also_behind_a_redirect(server: str, fetcher: ImageFetcher) -> None:
    port = server.rsplit(":", 1)[1]
    inside = [
        f"http://127.0.0.1:{port}/image",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.png",
        f"http://localhost:{port}/image",
        f"http://[::1]:{port}/image",
    ]
    for target in inside:
        direct = await refusal(fetcher, target)
        assert direct.reason == "address_refused", (target, direct)
        redirected = await refusal(fetcher, f"{server}/redirect?to={target}")
        assert redirected.reason == "address_refused", (target, redirected)
    assert (await refusal(fetcher, f"{server}/redirect?to=file:///etc/passwd")).reason == "bad_url"


async def test_size_redirect_and_time_bounds(server: str, fetcher: ImageFetcher) -> None:
    assert (await refusal(fetcher, f"{server}/huge")).reason == "too_large"  # by its Content-Length
    assert (await refusal(fetcher, f"{server}/flood")).reason == "too_large"  # while reading
    assert (await refusal(fetcher, f"{server}/loop")).reason == "too_many_redirects"
    assert (await refusal(fetcher, f"{server}/silent")).reason == "timeout"
    assert (await refusal(fetcher, f"{server}/trickle")).reason == "timeout"
    assert (await refusal(fetcher, f"{server}/missing")).reason == "http_status"
    # Nothing listens there: refused fast, not hung.
    assert (await refusal(fetcher, f"http://{HOST}:9/image")).reason == "unreachable"
    # The fetcher is still usable after every refusal.
    assert await fetcher.fetch(f"{server}/image") == PNG
