"""The one definition of a model version's lifecycle: its statuses, the moves between them,
and the channel that tells workers a version changed.

Bootstrap (a fresh database), promotion (the trainer, ``factmatch rollout``) and rollback all
move versions through :func:`check_transition`, so no path can activate a version whose
index is incomplete or skip a status another path relies on::

    candidate -> indexing -> ready -> active -> retired -> (indexing | active)
         \\-> rejected            (any serving status) -> indexing, for a re-index

Pure definitions only: the statuses themselves are value types (:mod:`worker.domain`), the
storage layer stores them, :mod:`worker.core.rollout` performs the moves.
"""

from __future__ import annotations

from worker.domain import NOTIFY_CHANNEL, SERVING_STATUSES, VersionStatus

__all__ = ["NOTIFY_CHANNEL", "SERVING_STATUSES", "TRANSITIONS", "LifecycleError", "VersionStatus", "check_transition"]

TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    "candidate": frozenset({"indexing", "rejected"}),
    "indexing": frozenset({"indexing", "ready", "rejected"}),
    "ready": frozenset({"indexing", "active"}),
    "active": frozenset({"retired"}),
    # A retired version with a kept index is re-activated (rollback) or re-indexed.
    "retired": frozenset({"indexing", "active"}),
    "rejected": frozenset(),
}


class LifecycleError(RuntimeError):
    """A version was asked to make a move its status does not allow."""


def check_transition(version: str, current: VersionStatus, target: VersionStatus) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        raise LifecycleError(f"version {version} is {current}; it can move to {allowed}, not {target}")
