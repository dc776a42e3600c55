"""Archived dead-letter payloads' SQL: the full originals the dead-letter topic only carries a prefix of."""

from __future__ import annotations

from collections.abc import Sequence

from worker.storage.db import Part


class DeadLetterPayloads(Part):
    """``dead_letter_payloads``: originals too large for the dead-letter topic."""

    async def archive_payloads(self, payloads: Sequence[tuple[str, bytes]]) -> None:
        """Store each (sha256, original bytes) once; a payload seen again is already there."""
        if not payloads:
            return
        async with self.pool.connection() as conn:
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO dead_letter_payloads (sha256, value, size) VALUES (%s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                [(digest, value, len(value)) for digest, value in payloads],
            )

    async def archived_payload(self, sha256: str) -> bytes | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT value FROM dead_letter_payloads WHERE sha256 = %s", (sha256,))
            row = await cur.fetchone()
        return bytes(row[0]) if row else None
