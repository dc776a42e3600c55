"""Failure handling, health and metrics: retries, dead letters, probes.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FailureSettings(BaseModel):
    """Failure handling, health and metrics: retries, dead letters, probes."""

    retry_attempts: int = Field(5, ge=1, le=50, description="Tries of a batch against an unhealthy dependency.")
    retry_backoff_initial_s: float = Field(0.5, gt=0, le=60)
    retry_backoff_max_s: float = Field(
        2.0, gt=0, le=300, description="Longest pause between retries: bounds recovery once a dependency is back."
    )
    shutdown_grace_s: float = Field(30.0, gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(9400, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 picks a free port.")
    metrics_host: str = Field(
        "0.0.0.0", min_length=1, description="Address the metrics and health server binds (127.0.0.1: local only)."
    )
    metrics_enabled: bool = True
    lag_interval_s: float = Field(5.0, gt=0, le=3600, description="How often lag and partition coverage are read.")
    unserved_partition_after_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="A partition with waiting records that no group member has committed on for this long "
        "is reported unserved (warning, metric, readiness).",
    )
    dead_letter_max_value_bytes: int = Field(
        262_144, ge=1_024, description="Original bytes a dead letter carries; beyond, a prefix plus size and SHA-256."
    )
    dead_letter_archive: bool = Field(
        False, description="Keep the full original of every truncated dead letter in Postgres."
    )
    max_record_attempts: int = Field(
        3, ge=1, le=100, description="A record whose batch failed this often is dead-lettered with the last error."
    )
