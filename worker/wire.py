"""The wire contract: every message factmatch reads from or writes to Kafka.

Producers and moderators code against these models, so they live in one module and
change only in backward-compatible ways. Decoding a raw record never raises: a record
that is not a valid post becomes a :class:`DeadLetter` carrying its original bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def _id_to_str(value: Any) -> Any:
    # Platforms often use numeric ids; a bool is never an id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# An id as platforms send it: text, or a number taken as its text.
Id = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=512)]


class Post(BaseModel):
    """A social-media post, as platforms produce it to the posts topic (keyed by ``id``)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Id
    text: str = Field(min_length=1)
    lang: str | None = Field(None, max_length=35)
    platform: str | None = Field(None, max_length=100)
    created_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class FactCheck(BaseModel):
    """A published fact-check: the corpus that posts are matched against."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Id
    claim: str = Field(min_length=1)
    title: str | None = None
    url: str | None = None
    lang: str | None = Field(None, max_length=35)
    rating: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class FactCheckEvent(FactCheck):
    """A change to the corpus on the factchecks topic: an upsert, or a delete by id."""

    op: Literal["upsert", "delete"] = "upsert"
    claim: str = ""


class Feedback(BaseModel):
    """A moderator's verdict on one published match, on the match-feedback topic."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    post_id: str = Field(min_length=1, max_length=512)
    post_text: str = Field(min_length=1)
    fact_check_id: str = Field(min_length=1, max_length=512)
    verdict: Literal["confirm", "reject"]
    moderator: str = Field(min_length=1, max_length=200)
    model_version: str | None = None
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Match(BaseModel):
    """One fact-check that a post matched, with why: both retrievers' scores and ranks, shared terms."""

    fact_check_id: str
    score: float = Field(description="Cosine similarity of post and fact-check under the model version.")
    rank: int
    claim: str
    title: str | None = None
    url: str | None = None
    lang: str | None = None
    rating: str | None = None
    published_at: datetime | None = None
    tier: Literal["match", "suggestion"] | None = Field(
        None, description="Calibrated tier for the post's language, when thresholds exist for the version."
    )
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    fused_score: float | None = None
    shared_terms: list[str] = Field(default_factory=list)


class SourceRef(BaseModel):
    topic: str
    partition: int
    offset: int


class MatchResult(BaseModel):
    """Exactly one per post, on the matches topic, keyed by post id."""

    schema_version: int = SCHEMA_VERSION
    post_id: str
    lang: str | None = None
    lang_detected: bool = False
    platform: str | None = None
    matches: list[Match]
    model_version: str
    processed_at: datetime = Field(default_factory=utcnow)
    source: SourceRef | None = None


DeadLetterReason = Literal[
    "invalid_utf8",
    "invalid_json",
    "invalid_schema",
    "empty_text",
    "text_too_long",
    "processing_error",
]


class DeadLetter(BaseModel):
    """A message factmatch could not process, with everything needed to replay it."""

    schema_version: int = SCHEMA_VERSION
    reason: DeadLetterReason
    error: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key_b64: str | None = None
    value_b64: str
    failed_at: datetime = Field(default_factory=utcnow)

    def original_value(self) -> bytes:
        return base64.b64decode(self.value_b64)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """The Kafka-independent view of one consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    def dead_letter(self, reason: DeadLetterReason, error: str) -> DeadLetter:
        return DeadLetter(
            reason=reason,
            error=error[:2000],
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
            key_b64=base64.b64encode(self.key).decode() if self.key is not None else None,
            value_b64=base64.b64encode(self.value or b"").decode(),
        )

    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)


def _parse_json_object(record: RawRecord) -> dict[str, Any] | DeadLetter:
    try:
        text = (record.value or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        return record.dead_letter("invalid_utf8", f"value is not UTF-8: {exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return record.dead_letter("invalid_json", f"value is not JSON: {exc}")
    if not isinstance(data, dict):
        return record.dead_letter("invalid_schema", f"expected a JSON object, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


def decode_post(record: RawRecord, max_chars: int) -> Post | DeadLetter:
    """Validate one record as a post, or say exactly why it is not one."""
    data = _parse_json_object(record)
    if isinstance(data, DeadLetter):
        return data
    text = data.get("text")
    if isinstance(text, str):
        if not text.strip():
            return record.dead_letter("empty_text", "text is empty")
        if len(text) > max_chars:
            return record.dead_letter("text_too_long", f"text has {len(text)} characters, limit {max_chars}")
    try:
        return Post.model_validate(data)
    except ValidationError as exc:
        return record.dead_letter("invalid_schema", _describe(exc))


def decode_fact_check_event(record: RawRecord) -> FactCheckEvent | DeadLetter:
    """A factchecks-topic record: a JSON fact-check (upsert), ``{"id", "op": "delete"}``, or a tombstone."""
    if record.value is None:
        if not record.key:
            return record.dead_letter("invalid_schema", "tombstone without a key")
        try:
            return FactCheckEvent(id=record.key.decode("utf-8"), op="delete")
        except (UnicodeDecodeError, ValidationError) as exc:
            return record.dead_letter("invalid_schema", f"tombstone key is not a fact-check id: {exc}")
    data = _parse_json_object(record)
    if isinstance(data, DeadLetter):
        return data
    try:
        event = FactCheckEvent.model_validate(data)
    except ValidationError as exc:
        return record.dead_letter("invalid_schema", _describe(exc))
    if event.op == "upsert" and not event.claim.strip():
        return record.dead_letter("empty_text", "an upserted fact-check needs a claim")
    return event


def decode_feedback(record: RawRecord) -> Feedback | DeadLetter:
    data = _parse_json_object(record)
    if isinstance(data, DeadLetter):
        return data
    if isinstance(data.get("post_text"), str) and not data["post_text"].strip():
        return record.dead_letter("empty_text", "post_text is empty")
    try:
        return Feedback.model_validate(data)
    except ValidationError as exc:
        return record.dead_letter("invalid_schema", _describe(exc))


def document_text(title: str | None, claim: str) -> str:
    """How a fact-check is embedded: its title and claim together (as the reference model was trained)."""
    title = (title or "").strip()
    claim = claim.strip()
    if not title or title == claim:
        return claim
    return f"{title}\n{claim}"
