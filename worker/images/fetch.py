"""Fetching a post's image by its link, without opening a door to the network.

Every link a post carries is untrusted: it may point at the worker's own network (a database, a
cloud's metadata service), at a file too large to hold, or at a server that never answers. The
fetcher therefore:

- takes only ``http`` and ``https`` links, with no credentials in them;
- resolves the host itself and connects only to the addresses it checked (no second lookup a
  rebinding DNS server could answer differently): by default only *global* addresses, so
  loopback, private (RFC 1918, CGNAT, ULA), link-local (169.254.169.254, the metadata service),
  multicast and reserved addresses are refused, also as IPv4-mapped IPv6; ``allow_networks``
  lets a platform's own CDN inside a private network through (tests reach a local server so);
  ``hosts``, when set, names the only hosts (and their subdomains) that may be fetched;
- follows at most ``max_redirects`` redirects by hand, checking each hop like the first;
- reads at most ``max_bytes`` (a larger ``Content-Length`` is refused before reading), within a
  connect timeout and a total timeout for the whole fetch, redirects included;
- sends no cookies, no credentials and no proxy settings from the environment.

What the bytes are is decided by :mod:`worker.images.decode` from the bytes, never from the
server's ``Content-Type``. A refusal raises :class:`ImageRefused` with a short reason a result
can carry; the post's text is matched whatever happens to its images.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECTS = {301, 302, 303, 307, 308}


class ImageRefused(Exception):
    """An image that was not fetched or not read, and why (``reason``: a short code; ``detail``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _AddressRefused(OSError):
    """Raised inside aiohttp's resolver; unwrapped into :class:`ImageRefused` by the fetcher."""


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may reach and how much it reads (built from ``Settings`` by the caller)."""

    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    max_redirects: int = 3
    # Networks allowed although not global (a platform's CDN inside a private network).
    allow_networks: tuple[IPNetwork, ...] = ()
    # When not empty: the only hosts (and their subdomains) that may be fetched.
    hosts: tuple[str, ...] = field(default=())

    @staticmethod
    def networks(text: str) -> tuple[IPNetwork, ...]:
        """``allow_networks`` from a comma-separated list of CIDRs (a bad one raises ValueError)."""
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def address_allowed(address: IPAddress, policy: FetchPolicy) -> bool:
    """Whether the fetcher may connect to ``address``: global, or inside an allowed network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in policy.allow_networks):
        return True
    return address.is_global and not address.is_multicast


def host_allowed(host: str, policy: FetchPolicy) -> bool:
    if not policy.hosts:
        return True
    host = host.lower().rstrip(".")
    return any(host == h or host.endswith("." + h) for h in policy.hosts)


class PolicyResolver(AbstractResolver):
    """Resolves with the system's resolver and keeps only the addresses the policy allows; none
    left is a refusal. aiohttp connects to exactly what this returns."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        found: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if not address_allowed(address, self.policy):
                refused.append(str(address))
                continue
            found.append(
                {"hostname": host, "host": str(address), "port": port, "family": fam, "proto": proto, "flags": 0}
            )
        if refused:
            # One refused address refuses the host: a name that also points inside is not trusted.
            raise _AddressRefused(f"{host} resolves to {', '.join(sorted(set(refused)))}")
        if not found:
            raise OSError(f"{host} has no address")
        return found

    async def close(self) -> None:
        return None


def check_url(url: str, policy: FetchPolicy) -> str:
    """The URL's host, when the fetcher may try it at all; else :class:`ImageRefused`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageRefused("bad_url", f"scheme {parts.scheme or 'none'} is not http(s)")
    if parts.username or parts.password:
        raise ImageRefused("bad_url", "credentials in the link")
    host = parts.hostname
    if not host:
        raise ImageRefused("bad_url", "no host")
    if not host_allowed(host, policy):
        raise ImageRefused("host_refused", f"{host} is not an allowed image host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not address_allowed(address, policy):
        raise ImageRefused("address_refused", f"{address} is not a public address")
    return host


class ImageFetcher:
    """Fetches image bytes under a :class:`FetchPolicy`; one session for the worker's lifetime."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=PolicyResolver(self.policy), use_dns_cache=False, limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": "factmatch-image-fetcher", "Accept": "image/*"},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` (redirects followed under the policy), or :class:`ImageRefused`."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url)
        except TimeoutError as exc:
            raise ImageRefused("timeout", f"no image within {self.policy.timeout_s:g} s") from exc

    async def _follow(self, url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.policy.connect_timeout_s)
        for _ in range(self.policy.max_redirects + 1):
            check_url(url, self.policy)
            try:
                async with self._client().get(url, allow_redirects=False, timeout=timeout) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise ImageRefused("http_status", f"redirect {response.status} without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise ImageRefused("http_status", f"HTTP {response.status}")
                    return await self._read(response)
            except aiohttp.InvalidURL as exc:  # also a legacy numeric host (2130706433, 127.1)
                raise ImageRefused("bad_url", f"not a valid link: {str(exc)[:200]}") from exc
            except aiohttp.ClientConnectorError as exc:
                raise _refusal(exc) from exc
            except aiohttp.ClientError as exc:
                raise ImageRefused("unreachable", type(exc).__name__) from exc
        raise ImageRefused("too_many_redirects", f"more than {self.policy.max_redirects}")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.policy.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise ImageRefused("too_large", f"{response.content_length} bytes (at most {limit})")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ImageRefused("too_large", f"more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _refusal(exc: BaseException) -> ImageRefused:
    """A connector error as a refusal: the policy's own (address refused) or the network's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _AddressRefused):
            return ImageRefused("address_refused", str(current))
        current = current.__cause__ or current.__context__ or getattr(current, "os_error", None)
    return ImageRefused("unreachable", str(exc)[:200])
