"""Claim answers' SQL: the answers every worker of the group reuses for a claim said again.

Why an answer found here is still right: its key (built by :mod:`worker.core.reuse`) digests
everything a search depends on, among them the corpus generations this module reads. Those are
bumped by trigger (``migrations/0013_answers.sql``) in the transaction that changes a fact-check
or a vector, so they become visible together with the change: a worker that reads generation
*g* and then searches sees at least the corpus of *g*, and an answer is never stored under a
generation whose changes its search missed. A version switch changes the key's model version.

A light rewording has another key; :meth:`Answers.find_near` finds it by the vector its post was
searched with, among the answers of the same context (the key's parts besides the claim), so the
same guarantees hold: a context names the generations, model version and decision it was
answered under. Exact cosine over that context's answers in the window (no vector index: its
vectors may have any model's dimension; one context holds one version's answers of one language
and corpus state).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter

from worker.domain import Vectors
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
            (
                key,
                a.post_id,
                a.model_version,
                Jsonb(MATCHES.dump_python(list(a.matches), mode="json")),
                a.context,
                None if a.vector is None else np.asarray(a.vector, dtype=np.float32),
            )
            for key, a in answers
        ]
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO claim_answers (answer_key, post_id, model_version, matches, context, vector)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::text[], %b::vector[])"
                " ON CONFLICT (answer_key) DO UPDATE SET post_id = excluded.post_id, matches = excluded.matches,"
                " context = excluded.context, vector = excluded.vector, answered_at = excluded.answered_at"
                " WHERE claim_answers.answered_at <= now() - make_interval(secs => %s)",
                (*(list(column) for column in zip(*rows, strict=True)), window_s),
            )

    async def find_near(
        self, probes: Sequence[tuple[str, Vectors]], window_s: float, min_similarity: float
    ) -> list[ClaimAnswer | None]:
        """For each (context, vector), the answer of that context within the window whose vector is
        nearest, if its cosine reaches ``min_similarity`` (vectors are normalised); one round trip."""
        if not probes:
            return []
        contexts = [context for context, _ in probes]
        vectors = [np.asarray(vector, dtype=np.float32) for _, vector in probes]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT p.ord, a.post_id, a.model_version, a.matches, a.context, a.vector"
                " FROM unnest(%s::text[], %b::vector[]) WITH ORDINALITY AS p(context, v, ord)"
                " CROSS JOIN LATERAL (SELECT post_id, model_version, matches, context, vector,"
                "  vector <=> p.v AS distance FROM claim_answers"
                "  WHERE context = p.context AND answered_at > now() - make_interval(secs => %s)"
                "   AND vector_dims(vector) = vector_dims(p.v)"
                "  ORDER BY vector <=> p.v LIMIT 1) a"
                " WHERE 1 - a.distance >= %s",
                (contexts, vectors, window_s, min_similarity),
                prepare=False,
            )
            rows = await cur.fetchall()
        found: list[ClaimAnswer | None] = [None] * len(probes)
        for ord_, post, version, matches, context, vector in rows:
            found[int(ord_) - 1] = ClaimAnswer(post, version, MATCHES.validate_python(matches), context, vector)
        return found

    async def forget_answers(self, older_than_s: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` answers older than ``older_than_s``; how many went."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM claim_answers WHERE answer_key IN (SELECT answer_key FROM claim_answers"
                " WHERE answered_at < now() - make_interval(secs => %s) ORDER BY answered_at LIMIT %s)",
                (older_than_s, limit),
            )
            return cur.rowcount
