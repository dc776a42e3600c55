"""Moderator verdicts' SQL: the trainer's freshest labelled pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from worker.storage.db import Part
from worker.wire import Feedback

_COLUMNS = (
    "post_id",
    "post_text",
    "fact_check_id",
    "verdict",
    "moderator",
    "model_version",
    "note",
    "none_of_these",
    "created_at",
)


class FeedbackLog(Part):
    """``match_feedback``: moderators' verdicts."""

    async def insert_feedback(self, items: Sequence[Feedback]) -> int:
        if not items:
            return 0
        async with self.pool.connection() as conn:
            cur = conn.cursor()
            await cur.executemany(
                f"INSERT INTO match_feedback ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                [tuple(getattr(f, c) for c in _COLUMNS) for f in items],
            )
        return len(items)

    async def feedback(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM match_feedback ORDER BY id")
            return list(await cur.fetchall())
