"""The model registry's SQL: versions, their statuses and metrics (decisions and tier cuts: ``decisions``).

At most one version is ``active`` (a unique partial index enforces it); activating one
retires the previous and NOTIFYs the workers in the same transaction. Which moves are
allowed is decided in :mod:`worker.core.lifecycle`, not here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from worker.domain import NOTIFY_CHANNEL, ModelVersion, VersionStatus
from worker.storage.db import Part


def _version(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**{k: row[k] for k in ModelVersion.__dataclass_fields__})


class Registry(Part):
    """``model_versions``: the registry every worker reads which version serves from."""

    async def get_version(self, version: str) -> ModelVersion | None:
        rows = await self._versions("WHERE version = %s", (version,))
        return rows[0] if rows else None

    async def active_version(self) -> ModelVersion | None:
        rows = await self._versions("WHERE status = 'active'", ())
        return rows[0] if rows else None

    async def list_versions(self) -> list[ModelVersion]:
        return await self._versions("ORDER BY created_at, version", ())

    async def versions_with_status(self, statuses: Sequence[VersionStatus]) -> list[ModelVersion]:
        return await self._versions("WHERE status = ANY(%s) ORDER BY created_at", (list(statuses),))

    async def _versions(self, where: str, params: tuple[Any, ...]) -> list[ModelVersion]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT * FROM model_versions {where}".encode(), params)
            return [_version(r) for r in await cur.fetchall()]

    async def register_version(
        self,
        version: str,
        path: str,
        dimension: int,
        *,
        status: VersionStatus = "candidate",
        base: str | None = None,
        metrics: dict[str, Any] | None = None,
        data_snapshot: dict[str, Any] | None = None,
    ) -> ModelVersion:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "INSERT INTO model_versions (version, path, dimension, status, base, metrics, data_snapshot)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (version, path, dimension, status, base, json.dumps(metrics or {}), json.dumps(data_snapshot or {})),
            )
            row = await cur.fetchone()
        assert row is not None
        return _version(row)

    async def set_status(self, version: str, status: VersionStatus, *, notes: str | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE model_versions SET status = %s, notes = COALESCE(%s, notes) WHERE version = %s",
                (status, notes, version),
            )

    async def activate(self, version: str) -> None:
        """Make ``version`` the one active version in one transaction; its index must be complete."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT indexed_at FROM model_versions WHERE version = %s FOR UPDATE", (version,))
            row = await cur.fetchone()
            if row is None:
                raise LookupError(f"unknown model version {version!r}")
            if row[0] is None:
                raise RuntimeError(f"model version {version!r} has no complete index yet")
            await conn.execute(
                "UPDATE model_versions SET status = 'retired', retired_at = now()"
                " WHERE status = 'active' AND version <> %s",
                (version,),
            )
            await conn.execute(
                "UPDATE model_versions SET status = 'active', activated_at = now(), shadow = false WHERE version = %s",
                (version,),
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, version))
