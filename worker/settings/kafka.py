"""Kafka: the brokers, their security, the topics and the consumer groups.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class KafkaSettings(BaseModel):
    """Kafka: the brokers, their security, the topics and the consumer groups."""

    kafka_bootstrap: str = Field(
        "localhost:9092", min_length=1, description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_posts: str = Field("posts", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_matches: str = Field("matches", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_dead_letter: str = Field("posts.dlq", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_factchecks: str = Field("factchecks", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_feedback: str = Field("match-feedback", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    topic_trending: str = Field(
        "trending-fact-checks",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Where the trending fact-checks are published every claims_report_interval_s.",
    )
    topic_emerging: str = Field(
        "emerging-claims",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Where the emerging claims (no fact-check yet) are published every claims_report_interval_s.",
    )
    claims_report_interval_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="How often one worker of the group publishes the trending fact-checks and the emerging claims"
        " (0: never; the console and `factmatch claims` still show them).",
    )
    group_id: str = Field("factmatch-worker", min_length=1)
    indexer_group_id: str = Field("factmatch-indexer", min_length=1)
    feedback_group_id: str = Field("factmatch-feedback", min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(
        6_000, ge=3_000, le=300_000, description="Consumer session; a dead worker's partitions move after this."
    )
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    kafka_metadata_max_age_ms: int = Field(
        5_000, ge=500, le=600_000, description="Longest before a consumer sees new topics or partitions."
    )
    kafka_max_request_bytes: int = Field(
        1_048_576, ge=65_536, description="Largest message the brokers accept (their message.max.bytes)."
    )
    topic_partitions: int = Field(3, ge=1, le=10_000, description="Partitions `factmatch topics` creates.")
    topic_replication: int = Field(1, ge=1, le=10, description="Replication factor `factmatch topics` creates.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap server {server!r} is not host:port")
        return value
