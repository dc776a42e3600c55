"""A private, throw-away schema: how an evaluation indexes a labelled corpus without touching serving.

``factmatch eval`` and the trainer's gate may run against the production database; the
labelled corpus then lives in a schema of its own (migrated like the real one, pgvector
from ``public``) that is dropped on the way out, whatever happens inside.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from worker.storage import Store
from worker.storage.db import apply_migrations, with_search_path


@contextlib.asynccontextmanager
async def scratch_store(conninfo: str, *, ef_search: int = 100, prefix: str = "factmatch_eval") -> AsyncIterator[Store]:
    """An open :class:`Store` on a fresh migrated schema, dropped (with everything in it) on exit."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            scoped = with_search_path(conninfo, schema)
            await apply_migrations(scoped)
            store = Store(scoped, min_size=1, max_size=2, ef_search=ef_search)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        finally:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
