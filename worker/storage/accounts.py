"""The console's accounts and sessions' SQL.

Passwords are hashed by the console (argon2) before they reach this module; a session's cookie
token is kept only as its SHA-256, so a read of the table signs nobody in.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from worker.domain import ConsoleSession, ConsoleUser, Role
from worker.storage.db import Part


class Accounts(Part):
    """``console_users`` and ``console_sessions``."""

    async def put_user(self, name: str, role: Role, password_hash: str | None) -> bool:
        """Create ``name`` or set its role and password; True when it is new."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO console_users (name, role, password_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
                " password_hash = coalesce(EXCLUDED.password_hash, console_users.password_hash), disabled = false"
                " RETURNING (xmax = 0)",
                (name, role, password_hash),
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def user(self, name: str) -> ConsoleUser | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT name, role, password_hash, disabled FROM console_users WHERE name = %s", (name,))
            row = await cur.fetchone()
        return ConsoleUser(**row) if row else None

    async def users(self) -> list[ConsoleUser]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT name, role, password_hash, disabled FROM console_users ORDER BY name")
            return [ConsoleUser(**r) for r in await cur.fetchall()]

    async def start_session(self, token_sha256: str, user: str, csrf: str, ttl_s: float) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO console_sessions (token_sha256, user_name, csrf, expires_at)"
                " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (token_sha256, user, csrf, ttl_s),
            )

    async def session(self, token_sha256: str) -> ConsoleSession | None:
        """The live session of a cookie's token (its user enabled), touched; None when unknown or expired."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE console_sessions s SET last_seen = now() FROM console_users u"
                " WHERE s.token_sha256 = %s AND s.expires_at > now() AND u.name = s.user_name AND NOT u.disabled"
                " RETURNING u.name, u.role, s.csrf",
                (token_sha256,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return ConsoleSession(session_id=token_sha256[:12], user=row[0], role=row[1], csrf=row[2])

    async def end_session(self, token_sha256: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE token_sha256 = %s", (token_sha256,))

    async def active_sessions(self, within_s: float = 900) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM console_sessions WHERE expires_at > now()"
                " AND last_seen > now() - make_interval(secs => %s)",
                (within_s,),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0
