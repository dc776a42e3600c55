"""The decision side of a version in SQL: its decision model with its tier cuts, and quarantines.

A decision model and the cuts fitted on its probabilities are saved in one transaction
(a worker never sees cuts of one fit with the model of another) and NOTIFY the workers. The
model is stored and returned as JSON: turning it into something that computes probabilities is
retrieval's (:meth:`worker.retrieval.decision.Decisions.from_stored`).
Quarantines are shared by every worker: the one that notices an over-matching fact-check
records it here, the others read it on their next refresh.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from worker.domain import NOTIFY_CHANNEL, StoredDecision, Threshold
from worker.storage.db import Part


class DecisionModels(Part):
    """``decision_models`` and ``score_thresholds``: a version's decision and its tier cuts."""

    async def save_decision(
        self,
        version: str,
        model: dict[str, Any],
        fitted: Sequence[Threshold],
        *,
        source: str,
        report: dict[str, Any] | None = None,
    ) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO decision_models (model_version, model, report, source) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (model_version) DO UPDATE SET model = EXCLUDED.model, report = EXCLUDED.report,"
                " source = EXCLUDED.source, fitted_at = now()",
                (version, json.dumps(model), json.dumps(report or {}), source),
            )
            await conn.execute("DELETE FROM score_thresholds WHERE model_version = %s", (version,))
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO score_thresholds (model_version, lang, tier, threshold, target_precision,"
                " fitted_precision, fitted_recall, support, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(version, *astuple(t), source) for t in fitted],
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, version))

    async def stored_decision(self, version: str) -> StoredDecision | None:
        """The version's decision model and its probability cuts (None when never calibrated)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT model, report FROM decision_models WHERE model_version = %s", (version,))
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT lang, tier, threshold FROM score_thresholds WHERE model_version = %s", (version,)
            )
            cuts = {(lang, tier): float(t) for lang, tier, t in await cur.fetchall()}
        if row is None:
            return None
        model = row[0] if isinstance(row[0], dict) else json.loads(row[0])
        return StoredDecision(dict(model), cuts, dict(row[1] or {}))

    async def decision_fitted_at(self, version: str) -> datetime | None:
        """When the version's decision was last fitted (None: never)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT fitted_at FROM decision_models WHERE model_version = %s", (version,))
            row = await cur.fetchone()
        return row[0] if row else None

    async def record_refit(
        self, version: str, outcome: str, reason: str, verdicts: int, heldout: dict[str, Any]
    ) -> None:
        """One refit from the verdicts, or one refusal, in ``decision_refits``."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO decision_refits (model_version, outcome, reason, verdicts, heldout)"
                " VALUES (%s, %s, %s, %s, %s)",
                (version, outcome, reason, verdicts, json.dumps(heldout)),
            )

    async def refits(self, version: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest refits and refusals (of ``version``, or of every version), newest first."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT model_version, at, outcome, reason, verdicts, heldout FROM decision_refits"
                " WHERE %(v)s::text IS NULL OR model_version = %(v)s ORDER BY at DESC, id DESC LIMIT %(n)s",
                {"v": version, "n": limit},
            )
            return list(await cur.fetchall())

    async def decision_report(self, version: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT report FROM decision_models WHERE model_version = %s", (version,))
            row = await cur.fetchone()
        return dict(row[0]) if row else None
