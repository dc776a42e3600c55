"""The decision side of a version in SQL: its decision model with its tier cuts, and quarantines.

A decision model and the cuts fitted on its probabilities are saved in one transaction
(a worker never sees cuts of one fit with the model of another) and NOTIFY the workers.
Quarantines are shared by every worker: the one that notices an over-matching fact-check
records it here, the others read it on their next refresh.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from psycopg.rows import dict_row

from worker.core.lifecycle import NOTIFY_CHANNEL
from worker.retrieval.decision import DecisionModel, Decisions
from worker.retrieval.tiers import Threshold
from worker.storage.db import Database

log = logging.getLogger(__name__)


class DecisionQueries(Database):
    async def save_decision(
        self,
        version: str,
        model: DecisionModel,
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
                (version, model.to_json(), json.dumps(report or {}), source),
            )
            await conn.execute("DELETE FROM score_thresholds WHERE model_version = %s", (version,))
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO score_thresholds (model_version, lang, tier, threshold, target_precision,"
                " fitted_precision, fitted_recall, support, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(version, *astuple(t), source) for t in fitted],
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, version))

    async def decisions(self, version: str) -> Decisions:
        """The version's decision model and its probability cuts (empty when never calibrated)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT model FROM decision_models WHERE model_version = %s", (version,))
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT lang, tier, threshold FROM score_thresholds WHERE model_version = %s", (version,)
            )
            cuts = {(lang, tier): float(t) for lang, tier, t in await cur.fetchall()}
        if row is None:
            return Decisions()
        try:
            model = DecisionModel.from_json(row[0])
        except ValueError as exc:
            # Fitted by an earlier release on features this one no longer computes: its
            # probabilities would be miscalibrated, so the version serves ranked matches without
            # tiers (as if never calibrated) until `factmatch calibrate` refits it.
            log.error("decision model of version %s cannot be used: %s; serving it without tiers", version, exc)
            return Decisions()
        return Decisions(model, cuts)

    async def decision_report(self, version: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT report FROM decision_models WHERE model_version = %s", (version,))
            row = await cur.fetchone()
        return dict(row[0]) if row else None

    async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool:
        """Withhold a fact-check from tier "match"; False when it already was."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO quarantined_fact_checks (fact_check_id, reason, flagged_by) VALUES (%s, %s, %s)"
                " ON CONFLICT (fact_check_id) WHERE cleared_at IS NULL DO NOTHING",
                (fact_check_id, reason[:2000], flagged_by),
            )
            return cur.rowcount == 1

    async def clear_quarantine(self, fact_check_id: str, cleared_by: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE quarantined_fact_checks SET cleared_at = now(), cleared_by = %s"
                " WHERE fact_check_id = %s AND cleared_at IS NULL",
                (cleared_by, fact_check_id),
            )
            return cur.rowcount > 0

    async def quarantined(self) -> frozenset[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT fact_check_id FROM quarantined_fact_checks WHERE cleared_at IS NULL")
            return frozenset(r[0] for r in await cur.fetchall())

    async def quarantine_log(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM quarantined_fact_checks ORDER BY flagged_at DESC")
            return list(await cur.fetchall())
