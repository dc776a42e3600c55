"""Claim answers' SQL: the answers every worker of the group reuses for a claim said again.

Why an answer found here is still right: its key (built by :mod:`worker.core.reuse`) digests
everything a search depends on, among them the corpus generations this module reads. Those are
bumped by trigger (``migrations/0013_answers.sql``) in the transaction that changes a fact-check
or a vector, so they become visible together with the change: a worker that reads generation
*g* and then searches sees at least the corpus of *g*, and an answer is never stored under a
generation whose changes its search missed. A version switch changes the key's model version.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from worker.storage.db import Part
from worker.storage.interfaces import ClaimAnswer
from worker.wire import Match

MATCHES = TypeAdapter(list[Match])


class Answers(Part):
    """``claim_answers`` and ``corpus_generations``."""

    async def generations(self, version: str) -> tuple[int, int]:
        """The corpus generation of the fact-checks and of ``version``'s vectors (0 before any change)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT scope, generation FROM corpus_generations WHERE scope = ANY(%s)", (["*", version],)
            )
            found: dict[str, int] = dict(await cur.fetchall())
        return int(found.get("*", 0)), int(found.get(version, 0))

    async def find_answers(self, keys: Sequence[str], window_s: float) -> dict[str, ClaimAnswer]:
        """The answers stored under ``keys`` no longer than ``window_s`` ago, by key."""
        if not keys:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT answer_key, post_id, model_version, matches FROM claim_answers"
                " WHERE answer_key = ANY(%s) AND answered_at > now() - make_interval(secs => %s)",
                (list(keys), window_s),
            )
            rows = await cur.fetchall()
        return {key: ClaimAnswer(post, v, MATCHES.validate_python(matches)) for key, post, v, matches in rows}

    async def remember_answers(self, answers: Sequence[tuple[str, ClaimAnswer]], window_s: float) -> None:
        """Store each key's answer; a key stored inside the window keeps its first answer (the earliest post)."""
        if not answers:
            return
        rows = [
            (key, a.post_id, a.model_version, Jsonb(MATCHES.dump_python(list(a.matches), mode="json")))
            for key, a in answers
        ]
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO claim_answers (answer_key, post_id, model_version, matches)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[])"
                " ON CONFLICT (answer_key) DO UPDATE SET post_id = excluded.post_id, matches = excluded.matches,"
                " answered_at = excluded.answered_at"
                " WHERE claim_answers.answered_at <= now() - make_interval(secs => %s)",
                (*(list(column) for column in zip(*rows, strict=True)), window_s),
            )

    async def forget_answers(self, older_than_s: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` answers older than ``older_than_s``; how many went."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM claim_answers WHERE answer_key IN (SELECT answer_key FROM claim_answers"
                " WHERE answered_at < now() - make_interval(secs => %s) ORDER BY answered_at LIMIT %s)",
                (older_than_s, limit),
            )
            return cur.rowcount
