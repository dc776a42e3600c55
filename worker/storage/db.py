"""The connection pool every storage module shares, schema migrations, and advisory locks.

One :class:`Database` per process: an async psycopg pool with pgvector's types registered
and the HNSW search breadth set on every connection. The modules beside this one each hold the
SQL of one seam as a :class:`Part` over that pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

# The migrations package ships its SQL as package data, so installed and source trees read the same files.
MIGRATIONS_DIR = Path(str(importlib.resources.files("migrations")))
MIGRATION_LOCK_ID = 0x66616374  # "fact": serialises concurrent migrators (helm hook, replicas)
# What Postgres being down or unreachable looks like to a caller: retried, never a record's fault.
UNAVAILABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout)


def with_search_path(conninfo: str, schema: str) -> str:
    """A connection string whose sessions resolve factmatch's tables in ``schema`` (pgvector stays in public)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(conninfo, options=f"-c search_path={schema},public")


async def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every ``*.sql`` file not applied yet, in name order; safe to run concurrently and repeatedly."""
    applied: list[str] = []
    # A handful of small files: read them before the transaction, not inside the event loop's hot path.
    scripts = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.sql"))]  # noqa: ASYNC240
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for name, script in scripts:
            if name in done:
                continue
            await conn.execute(script.encode())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    return applied


async def migrate(conninfo: str, wait_s: float = 0.0) -> list[str]:
    """:func:`apply_migrations`, waiting up to ``wait_s`` for the database to accept connections."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await apply_migrations(conninfo)
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            # libpq's message may quote the connection string: log only the error class.
            log.warning("database not reachable yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(2)


class Database:
    """An async connection pool that every :class:`Part` shares."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        ef_search: int = 100,
        connect_timeout_s: float = 10.0,
        pool_timeout_s: float = 2.0,
    ) -> None:
        self.conninfo = conninfo
        self.ef_search = ef_search
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Short: during an outage the caller's retry policy paces the attempts, not the pool.
            timeout=pool_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            name="factmatch",
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        await conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self.ef_search)))

    async def open(self, wait: bool = True) -> None:
        await self.pool.open(wait=wait)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self, timeout_s: float = 1.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s), self.pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    @contextlib.asynccontextmanager
    async def advisory_lock(self, lock_id: int) -> AsyncIterator[None]:
        """A session-level advisory lock on a connection of its own, so a pool of one can still work inside it."""
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))

    async def notifications(self, channel: str, interval_s: float) -> AsyncIterator[None]:
        """Yields on every NOTIFY on ``channel`` and at least every ``interval_s`` (a lost NOTIFY costs one interval).

        Raises when the connection breaks; the caller decides how long to wait before listening again.
        """
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            while True:
                yield
                async for _ in conn.notifies(timeout=interval_s, stop_after=1):
                    pass

    async def payloads(self, channel: str) -> AsyncIterator[str]:
        """Yields ``""`` once listening (what was announced before is unknown to the caller: resync),
        then the payload of every NOTIFY on ``channel``; raises when the connection breaks."""
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield ""
            async for notify in conn.notifies():
                yield notify.payload


class Part:
    """One seam's SQL over the shared pool (the registry, the corpus, ...)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def pool(self) -> AsyncConnectionPool:
        return self.db.pool
