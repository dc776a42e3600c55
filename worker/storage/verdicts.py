"""Verdicts in their undo window and the audit, written inside a caller's transaction.

The steps a verdict takes that both the queue (:class:`worker.storage.reviews.Reviews`, one
post) and the cluster pages (:class:`worker.storage.review_groups.ReviewGroups`, a cluster's
posts at once) share: record a post's verdicts in the outbox (``console_verdicts``) if the session
holds its claim, undo them while their window is open, and write the audit row of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from worker.domain import PendingVerdict, VerdictKind

# Postgres announces every added or changed review item on this channel (the console listens).
REVIEW_CHANNEL = "factmatch_review_items"


async def record_verdicts(
    conn: Any,
    post_id: str,
    verdicts: Sequence[tuple[str, VerdictKind, dict[str, Any]]],
    user: str,
    session_id: str,
    undo_s: float,
    note: str | None,
) -> list[PendingVerdict] | None:
    """Record verdicts on one post in the caller's transaction (see :meth:`Reviews.add_verdicts`);
    None, with nothing written, when ``session_id`` does not hold the post's claim."""
    cur = await conn.execute(
        "SELECT fact_check_ids FROM review_items WHERE post_id = %s AND status = 'open'"
        " AND claim_session = %s FOR UPDATE",
        (post_id, session_id),
    )
    if await cur.fetchone() is None:
        return None
    pending: list[PendingVerdict] = []
    for fact_check_id, verdict, feedback in verdicts:
        cur = await conn.execute(
            "INSERT INTO console_verdicts (post_id, fact_check_id, verdict, feedback, user_name, session_id,"
            " send_after) VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
            " RETURNING id, send_after",
            (post_id, fact_check_id, verdict, Jsonb(feedback), user, session_id, undo_s),
        )
        row = await cur.fetchone()
        if row is None:  # INSERT ... RETURNING always returns its row
            raise RuntimeError(f"no verdict row returned for post {post_id}")
        vid, send_after = row
        pending.append(PendingVerdict(int(vid), post_id, fact_check_id, verdict, "pending", send_after))
        await write_audit(conn, user, session_id, "verdict", post_id, fact_check_id, verdict, note)
    await conn.execute(
        "UPDATE review_items SET status = 'done', decided_at = now(), decided_by = %s,"
        " claimed_by = NULL, claim_session = NULL, claimed_until = NULL"
        " WHERE post_id = %s AND (EXISTS (SELECT FROM console_verdicts WHERE post_id = %s"
        "  AND verdict = 'confirm' AND state <> 'undone')"
        "  OR NOT EXISTS (SELECT FROM unnest(fact_check_ids) fc WHERE fc NOT IN"
        "   (SELECT fact_check_id FROM console_verdicts WHERE post_id = %s AND state <> 'undone')))",
        (user, post_id, post_id, post_id),
    )
    await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, post_id))
    return pending


async def undo_verdicts(conn: Any, post_id: str, user: str, session_id: str) -> int:
    """Withdraw, in the caller's transaction, ``session_id``'s verdicts on one post still inside
    their window (see :meth:`Reviews.undo`); returns how many."""
    cur = await conn.execute(
        "UPDATE console_verdicts SET state = 'undone' WHERE post_id = %s AND session_id = %s"
        " AND state = 'pending' AND send_after > now() RETURNING fact_check_id, verdict",
        (post_id, session_id),
    )
    undone = await cur.fetchall()
    if undone:
        await conn.execute(
            "UPDATE review_items SET status = 'open', decided_at = NULL, decided_by = NULL,"
            " claimed_by = %s, claim_session = %s,"
            " claimed_until = greatest(claimed_until, now() + interval '60s')"
            " WHERE post_id = %s",
            (user, session_id, post_id),
        )
        for fact_check_id, verdict in undone:
            await write_audit(conn, user, session_id, "undo", post_id, fact_check_id, verdict, None)
        await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, post_id))
    return len(undone)


async def write_audit(
    conn: Any,
    user: str,
    session_id: str | None,
    action: str,
    post_id: str | None,
    fact_check_id: str | None,
    verdict: str | None,
    note: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO console_audit (user_name, session_id, action, post_id, fact_check_id, verdict, note, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (user, session_id, action, post_id, fact_check_id, verdict, note, Jsonb(detail or {})),
    )
