"""The wire contract: every message factmatch reads from or writes to Kafka.

Producers and moderators code against these models, so they live in one module and
change only in backward-compatible ways. Decoding raw records into these models lives in
:mod:`worker.core.decoding`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def _id_to_str(value: Any) -> Any:
    # Platforms often use numeric ids; a bool is never an id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# An id as platforms send it: text, or a number taken as its text.
Id = Annotated[
    str,
    BeforeValidator(_id_to_str),
    Field(min_length=1, max_length=512),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 512}, {"type": "integer"}]}, mode="validation"
    ),
]


class ImageRef(BaseModel):
    """An image a post or a fact-check carries: a link the worker fetches (under its network
    policy) or the image's bytes inline, base64 (bounded by the record's size); never both."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    url: str | None = Field(None, max_length=4_000, description="An http(s) link to the image.")
    data: str | None = Field(None, description="The image's bytes, base64 (JPEG, PNG, GIF or WebP).")
    alt: str | None = Field(None, max_length=2_000, description="The image's alt text, as the platform gave it.")

    @model_validator(mode="after")
    def _one_source(self) -> ImageRef:
        if (self.url is None) == (self.data is None):
            raise ValueError("an image has either url or data")
        return self


class Post(BaseModel):
    """A social-media post, as platforms produce it to the posts topic (keyed by ``id``)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Id
    text: str = Field(
        "", description="The post's text; may be empty only when the post carries images (a meme, a photo)."
    )
    lang: str | None = Field(None, max_length=35)
    platform: str | None = Field(None, max_length=100)
    url: str | None = Field(None, max_length=4_000, description="The post's link on its platform.")
    created_at: datetime | None = None
    images: list[ImageRef] = Field(
        default_factory=list,
        max_length=32,
        description="Images attached to the post; the worker reads the first image_max_per_post of them.",
    )
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_match(self) -> Post:
        if not self.text and not self.images:
            raise ValueError("text is empty and the post carries no image")
        return self


class FactCheck(BaseModel):
    """A published fact-check: the corpus that posts are matched against."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: Id
    # Bounded so that a result carrying five of them always fits a Kafka message.
    claim: str = Field(min_length=1, max_length=20_000)
    title: str | None = Field(None, max_length=2_000)
    url: str | None = Field(None, max_length=4_000)
    lang: str | None = Field(None, max_length=35)
    rating: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    images: list[ImageRef] = Field(
        default_factory=list,
        max_length=32,
        description="The images the fact-check is about (the viral photo, the fake screenshot): a post showing"
        " the same picture is matched by its perceptual hash.",
    )
    meta: dict[str, Any] = Field(default_factory=dict)


class FactCheckEvent(FactCheck):
    """A change to the corpus on the factchecks topic: an upsert, or a delete by id."""

    op: Literal["upsert", "delete"] = "upsert"
    claim: str = Field("", max_length=20_000)


class Feedback(BaseModel):
    """A moderator's verdict on one published match, on the match-feedback topic."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    post_id: str = Field(min_length=1, max_length=512)
    post_text: str = Field(min_length=1, max_length=100_000)
    fact_check_id: str = Field(min_length=1, max_length=512)
    verdict: Literal["confirm", "reject"]
    moderator: str = Field(min_length=1, max_length=200)
    model_version: str | None = None
    note: str | None = None
    none_of_these: bool = Field(
        False,
        description="Given as 'none of these': every match the post was shown was rejected, so the post has"
        " no fact-check among them (calibration counts it as a post with nothing to find).",
    )
    created_at: datetime = Field(default_factory=utcnow)


class Match(BaseModel):
    """One fact-check that a post matched, with why: both retrievers' scores and ranks, shared terms."""

    fact_check_id: str
    score: float = Field(
        description="Cosine similarity of post and fact-check under the model version (0 for a fact-check found"
        " by its image alone)."
    )
    rank: int
    claim: str
    title: str | None = None
    url: str | None = None
    lang: str | None = None
    rating: str | None = None
    published_at: datetime | None = None
    tier: Literal["match", "suggestion"] | None = Field(
        None, description="The tier of the probability in the post's language, when the version is calibrated."
    )
    probability: float | None = Field(
        None,
        description="Calibrated probability that this fact-check verifies or debunks the post"
        " (the version's decision model); None when the version has none.",
    )
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    fused_score: float | None = None
    shared_terms: list[str] = Field(default_factory=list)
    image: int | None = Field(
        None, description="Which of the post's images (its index) shows the fact-check's image; absent: none."
    )
    image_text: int | None = Field(
        None,
        description="Which of the post's images (its index) holds the text that found this fact-check (OCR);"
        " absent: found by the post's own text or picture.",
    )
    image_distance: int | None = Field(
        None,
        description="PDQ Hamming distance (of 256 bits) between that image and the fact-check's nearest image:"
        " 0 is the same picture; at most the worker's image_match_distance. Absent when found by keypoints.",
    )
    image_keypoints: int | None = Field(
        None,
        description="How many keypoints of the fact-check's image were found in place in that image (one"
        " shift, scale and turn carries them): a cropped or edited copy PDQ missed; absent: not found that way.",
    )


class SourceRef(BaseModel):
    topic: str
    partition: int
    offset: int


class ClaimCluster(BaseModel):
    """The claim cluster a post joined, as it stood once the post's batch was placed."""

    id: int
    size: int = Field(description="Posts in the cluster, this one included.")
    first_seen: datetime = Field(description="The earliest post's created_at (else when it was answered).")
    last_seen: datetime
    langs: dict[str, int] = Field(default_factory=dict, description="Posts per language ('und': unknown).")
    platforms: dict[str, int] = Field(default_factory=dict, description="Posts per platform ('unknown': none).")
    fact_check_id: str | None = Field(
        None, description="The best-matching fact-check of its posts so far (None: none reached a tier)."
    )


class ImageOutcome(BaseModel):
    """What the worker made of one of the post's images: its PDQ hash, or why it has none."""

    index: int = Field(description="The image's position in the post's images.")
    url: str | None = Field(None, description="Its link, as the post gave it (absent for an inline image).")
    pdq: str | None = Field(None, description="Its PDQ hash, 64 hex digits.")
    quality: int | None = Field(None, description="PDQ's quality (0-100); below 50 the hash is not matched.")
    error: str | None = Field(
        None,
        description="Why it was not read: bad_url, address_refused, host_refused, unreachable, http_status,"
        " too_large, too_many_redirects, timeout, not_an_image, broken_image, too_many_pixels, bad_data,"
        " too_many_images. The post's text is matched all the same.",
    )
    detail: str | None = Field(
        None,
        description="More about the error; for an image read without one, why its text was not read"
        " (the batch's time for OCR ran out: it is matched by its hash and keypoints alone).",
    )
    text: str | None = Field(None, description="The text read in the image (OCR), searched as a query of its own.")
    text_confidence: float | None = Field(None, description="OCR's mean word confidence for that text (0-100).")


class MatchResult(BaseModel):
    """One per post, on the matches topic, keyed by post id; a post the worker abstained on gets one
    more, ``rematched``, when a fact-check added later matches it (keep the latest per key)."""

    schema_version: int = SCHEMA_VERSION
    post_id: str
    lang: str | None = None
    lang_detected: bool = False
    platform: str | None = None
    matches: list[Match]
    model_version: str
    processed_at: datetime = Field(default_factory=utcnow)
    source: SourceRef | None = None
    duplicate_of: str | None = Field(
        None,
        description="The post whose answer this one reuses: an earlier post of the same claim (the same text once"
        " links, mentions, retweet prefixes, emoji, case and spacing are set aside) under the same model version"
        " and corpus. Absent when this post was searched itself.",
    )
    rematched: bool = Field(
        False,
        description="An update of this post's earlier result: no fact-check matched it then, and one added since"
        " does (the worker searches the claims it abstained on again when the fact-checks change).",
    )
    # What a consumer needs to show the post (a moderator's console) without a second topic.
    cluster_id: int | None = Field(
        None, description="The claim cluster the post joined: posts making the same claim, in any wording."
    )
    cluster: ClaimCluster | None = None
    text: str | None = Field(
        None, description="The post's text, cut at the worker's result_text_max_chars (absent when 0)."
    )
    text_truncated: bool = Field(False, description="``text`` holds only the start of the post's text.")
    url: str | None = Field(None, description="The post's link on its platform, as the post gave it.")
    posted_at: datetime | None = Field(None, description="The post's own created_at, as the post gave it.")
    images: list[ImageOutcome] = Field(default_factory=list, description="One per image the post carried.")


class TrendingFactCheck(BaseModel):
    """One trending fact-check: its posts over the last hour, day and week, and how fast it rises."""

    fact_check_id: str
    claim: str | None = None
    title: str | None = None
    url: str | None = None
    last_hour: int
    last_day: int
    last_week: int
    spike: float = Field(description="(last hour + 1) / (the week's mean other hour + 1): 1 is its usual pace.")
    langs: dict[str, int] = Field(default_factory=dict, description="The last day's posts per language.")
    platforms: dict[str, int] = Field(default_factory=dict, description="The last day's posts per platform.")
    hourly: list[int] = Field(default_factory=list, description="The last day's posts hour by hour, oldest first.")


class TrendingFactChecks(BaseModel):
    """The trending fact-checks, fastest rising first, on the trending topic (keyed ``trending``)."""

    schema_version: int = SCHEMA_VERSION
    at: datetime
    fact_checks: list[TrendingFactCheck]


class EmergingClaim(BaseModel):
    """A claim cluster no fact-check matched yet, growing: what a fact-checker should look at next."""

    cluster_id: int
    size: int
    last_day: int = Field(description="Its posts in the last day.")
    day_before: int = Field(description="Its posts in the day before.")
    growth: float = Field(description="(last day + 1) / (day before + 1).")
    first_seen: datetime
    last_seen: datetime
    langs: dict[str, int] = Field(default_factory=dict)
    platforms: dict[str, int] = Field(default_factory=dict)
    representative: str = Field(description="Its first post's claim text.")
    examples: list[str] = Field(default_factory=list, description="Its latest distinct claim texts.")


class EmergingClaims(BaseModel):
    """The emerging claims of the serving model version, fastest growing first (keyed ``emerging``)."""

    schema_version: int = SCHEMA_VERSION
    at: datetime
    model_version: str
    claims: list[EmergingClaim]


DeadLetterReason = Literal[
    "invalid_utf8",
    "invalid_json",
    "invalid_schema",
    "empty_text",
    "text_too_long",
    "too_large",
    "too_deep",
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
    value_size: int | None = Field(None, description="Bytes in the original value.")
    value_sha256: str | None = Field(None, description="SHA-256 of the original value, hex.")
    value_truncated: bool = Field(False, description="value_b64 holds only the first bytes of the original.")
    failed_at: datetime = Field(default_factory=utcnow)

    def original_value(self) -> bytes:
        return base64.b64decode(self.value_b64)

    def fitted(self, max_value_bytes: int) -> DeadLetter:
        """This letter with at most ``max_value_bytes`` of the original value: a dead letter must
        always fit the topic it goes to, or it would fail its batch forever. Size and SHA-256
        still identify the whole original."""
        value = self.original_value()
        if len(value) <= max_value_bytes:
            return self
        head = base64.b64encode(value[:max_value_bytes]).decode()
        return self.model_copy(update={"value_b64": head, "value_truncated": True})


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
        value = self.value or b""
        return DeadLetter(
            reason=reason,
            error=error[:2000],
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
            key_b64=base64.b64encode(self.key).decode() if self.key is not None else None,
            value_b64=base64.b64encode(value).decode(),
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
        )

    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)


def document_text(title: str | None, claim: str) -> str:
    """How a fact-check is embedded: its title and claim together (as the reference model was trained)."""
    title = (title or "").strip()
    claim = claim.strip()
    if not title or title == claim:
        return claim
    return f"{title}\n{claim}"
