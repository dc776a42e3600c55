"""Who a console request comes from, and what it may do.

- Passwords are hashed with argon2id (``argon2-cffi``'s defaults); nothing else ever sees them.
- A sign-in gives the browser a random token in an HttpOnly, SameSite=Strict cookie (Secure
  when ``console_secure_cookies``); the store keeps only the token's SHA-256 and the session's
  CSRF token, which every state-changing request must echo (form field or header).
- With ``console_proxy_user_header`` set, an OIDC proxy in front names the moderator instead;
  the header is believed only from ``console_trusted_proxies`` and only for an existing account.
- Failed sign-ins are counted per name and per client address in a sliding minute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from worker.domain import ConsoleSession, Role
from worker.storage.interfaces import AccountStore

COOKIE = "factmatch_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

_hasher = PasswordHasher()
# Checked against when a name is unknown, so a sign-in takes as long whether or not it exists.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a console password has at least 8 characters")
    return _hasher.hash(password)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")


class RateLimiter:
    """At most ``limit`` events per key in any ``window_s`` (per process: a floor, not a quota)."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        for key in keys:
            events = self._events[key]
            while events and now - events[0] > self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return True
        return False

    def record(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._events[key].append(now)


@dataclass(frozen=True)
class SignIn:
    token: str
    session: ConsoleSession


class Authenticator:
    """Signs moderators in and out and resolves a request's session."""

    def __init__(self, accounts: AccountStore, ttl_s: float, attempts_per_minute: int) -> None:
        self.accounts = accounts
        self.ttl_s = ttl_s
        self.limiter = RateLimiter(attempts_per_minute)

    async def sign_in(self, name: str, password: str, client: str) -> SignIn | None:
        """A new session for a right name and password; None otherwise (and counted)."""
        keys = (f"name:{name.lower()}", f"addr:{client}")
        if self.limiter.blocked(*keys):
            raise PermissionError("too many failed sign-ins; wait a minute")
        user = await self.accounts.user(name)
        stored = user.password_hash if user is not None and not user.disabled else None
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
            valid = stored is not None
        except (VerificationError, InvalidHashError):
            valid = False
        if not valid or user is None:
            self.limiter.record(*keys)
            return None
        return await self.start(user.name, user.role)

    async def start(self, name: str, role: Role) -> SignIn:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        digest = token_digest(token)
        await self.accounts.start_session(digest, name, csrf, self.ttl_s)
        return SignIn(token, ConsoleSession(digest[:12], name, role, csrf))

    async def session(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        return await self.accounts.session(token_digest(token))

    async def sign_out(self, token: str | None) -> None:
        if token:
            await self.accounts.end_session(token_digest(token))
