"""Micro-batching: how many posts a batch takes and how they are cut into encoder calls.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class BatchingSettings(BaseModel):
    """Micro-batching: how many posts a batch takes and how they are cut into encoder calls."""

    batch_max_records: int = Field(64, ge=1, le=10_000, description="Most records fetched into one batch.")
    batch_max_wait_ms: int = Field(50, ge=1, le=60_000, description="Longest wait for a batch to fill.")
    batch_token_budget: int | None = Field(
        None,
        ge=16,
        description="Most padded tokens (rows x longest row) one encoder call may take; unset: 2048 on CPU"
        " (measured fastest under bf16 autocast, docs/measurements.md), 16384 on a GPU.",
    )
    overlap_batches: bool = Field(
        True,
        description="Encode the next posts' batch while one finishes (searching, clustering, publishing);"
        " the worker then commits each batch's offsets itself, in order, after it published.",
    )
    max_post_chars: int = Field(20_000, ge=1, description="Posts longer than this are dead-lettered.")
    max_record_bytes: int = Field(1_048_576, ge=1_024, description="Records larger than this are dead-lettered unread.")
    max_json_depth: int = Field(32, ge=2, le=500, description="Deeper JSON is dead-lettered before parsing.")
    factchecks_batch_max_records: int = Field(256, ge=1, le=10_000, description="Fact-check changes per batch.")
    factchecks_batch_max_wait_ms: int = Field(200, ge=1, le=60_000)
    feedback_batch_max_records: int = Field(500, ge=1, le=10_000, description="Moderator verdicts per batch.")
    feedback_batch_max_wait_ms: int = Field(200, ge=1, le=60_000)

    def token_budget(self, device: str) -> int:
        """The encoder call's padded-token budget on ``device`` (a resolved device name)."""
        if self.batch_token_budget is not None:
            return self.batch_token_budget
        # A CPU wants calls of about 2,000 padded tokens, a GPU large ones (docs/measurements.md).
        return 2048 if device == "cpu" else 16_384
