"""Unit tier: decoding can never raise, dead letters always fit, redelivery is bounded, and a
partly failed publish never sends twice what already went out."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from worker.adapter.failures import AttemptLog
from worker.adapter.sinks import KafkaTopicsSink
from worker.core.decoding import (
    Limits,
    clean_text,
    decode_fact_check_event,
    decode_feedback,
    decode_post,
    nesting_depth,
)
from worker.wire import DeadLetter, FactCheckEvent, Feedback, MatchResult, Post, RawRecord, SourceRef

LIMITS = Limits(max_record_bytes=64 * 1024, max_depth=32, max_text_chars=20_000)


def record(value: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord(topic="posts", partition=1, offset=offset, key=b"k", value=value)


def nested(depth: int) -> bytes:
    return b'{"id": "p", "text": "hi", "meta": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


def test_a_post_nested_thousands_deep_is_a_dead_letter_not_an_exception() -> None:
    for depth in (40, 5_000, 9_000):
        letter = decode_post(record(nested(depth)), LIMITS)
        assert isinstance(letter, DeadLetter) and letter.reason == "too_deep", depth
    arrays = b'{"id": "p", "text": "x", "meta": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    assert decode_post(record(arrays), LIMITS).reason == "too_deep"  # type: ignore[union-attr]
    assert isinstance(decode_post(record(nested(20)), LIMITS), Post)


def test_nesting_depth_ignores_brackets_and_escaped_quotes_inside_strings() -> None:
    text = json.dumps({"t": 'a [[[{{{ "quoted" \\ ]]]', "x": [[1]], "y": "\\"}).encode()
    assert nesting_depth(text, 32) == 3
    assert nesting_depth(b'["\\\\", [["a"]]]', 32) == 3
    assert nesting_depth(b"[" * 100, 10) == 11  # stops counting past the limit


def test_a_record_over_the_size_limit_is_dead_lettered_unread() -> None:
    big = b'{"id": "p", "text": "' + b"x" * (LIMITS.max_record_bytes + 1) + b'"}'
    letter = decode_post(record(big), LIMITS)
    assert isinstance(letter, DeadLetter) and letter.reason == "too_large"
    assert letter.value_size == len(big) and letter.value_sha256 == hashlib.sha256(big).hexdigest()


def test_nul_and_lone_surrogates_are_normalised_before_postgres_sees_them() -> None:
    post = decode_post(record(b'{"id": "p\\u0000", "text": "5G\\u0000 masts \\ud800 spread it"}'), LIMITS)
    assert isinstance(post, Post) and post.id == "p" and post.text == "5G masts \ufffd spread it"
    only_nul = decode_post(record(b'{"id": "p", "text": "\\u0000\\u0000"}'), LIMITS)
    assert isinstance(only_nul, DeadLetter) and only_nul.reason == "empty_text"
    event = decode_fact_check_event(
        record(b'{"id": "f", "claim": "c\\u0000", "meta": {"k\\u0000": ["v\\u0000"]}}'), LIMITS
    )
    assert isinstance(event, FactCheckEvent) and event.claim == "c" and event.meta == {"k": ["v"]}
    verdict = {"post_id": "p", "post_text": "t\u0000", "fact_check_id": "f", "verdict": "confirm", "moderator": "m"}
    feedback = decode_feedback(record(json.dumps(verdict).encode()), LIMITS)
    assert isinstance(feedback, Feedback) and feedback.post_text == "t"
    assert clean_text("plain") == "plain"


def test_decoders_turn_any_internal_failure_into_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.core.decoding as decoding

    def explode(*_: Any) -> Any:
        raise MemoryError("no room")

    monkeypatch.setattr(decoding, "parse_object", explode)
    letter = decode_post(record(b'{"id": "p", "text": "x"}'), LIMITS)
    assert isinstance(letter, DeadLetter) and letter.reason == "processing_error" and "MemoryError" in letter.error


def test_a_dead_letter_is_fitted_to_its_topic_and_still_identifies_the_whole_original() -> None:
    value = bytes(range(256)) * 4_000  # 1 MB
    letter = record(value).dead_letter("too_large", "big")
    fitted = letter.fitted(10_000)
    assert fitted.value_truncated and fitted.original_value() == value[:10_000]
    assert fitted.value_size == len(value) and fitted.value_sha256 == hashlib.sha256(value).hexdigest()
    assert len(fitted.model_dump_json()) < 20_000
    small = record(b"{}").dead_letter("invalid_schema", "x")
    assert small.fitted(10_000) is small and not small.value_truncated


def test_attempts_isolate_a_poison_record_and_give_up_on_it_after_the_limit() -> None:
    log = AttemptLog(max_attempts=2)
    batch = [record(b"a", 1), record(b"b", 2), record(b"c", 3)]
    assert not log.suspect(batch)
    log.failed(batch, RuntimeError("publish failed"))
    assert log.suspect(batch)
    # One at a time now: the good ones succeed and are forgotten, the poison fails again.
    log.forget([batch[0]])
    log.forget([batch[2]])
    log.failed([batch[1]], RuntimeError("still failing"))
    fresh, exhausted = log.split(batch)
    assert [r.offset for r in fresh] == [1, 3]
    assert [(d.offset, d.reason) for d in exhausted] == [(2, "processing_error")]
    assert "failed 2 times" in exhausted[0].error and "still failing" in exhausted[0].error


class FakePublisher:
    def __init__(self, fail_keys: set[bytes] | None = None) -> None:
        self.fail_keys = fail_keys or set()
        self.sent: list[tuple[bytes | None, Any]] = []

    async def publish(self, message: Any, key: bytes | None = None, **_: Any) -> Any:
        self.sent.append((key, message))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key in self.fail_keys:
            future.set_exception(RuntimeError("broker refused"))
        else:
            future.set_result(None)
        return future


def result(post_id: str, offset: int) -> MatchResult:
    return MatchResult(
        post_id=post_id, matches=[], model_version="v", source=SourceRef(topic="posts", partition=0, offset=offset)
    )


async def test_a_redelivered_batch_publishes_only_what_was_not_acknowledged() -> None:
    matches, dead = FakePublisher(fail_keys={b"p2"}), FakePublisher()
    sink = KafkaTopicsSink(matches, dead, max_dead_letter_value_bytes=1_024)  # type: ignore[arg-type]
    results = [result("p1", 1), result("p2", 2), result("p3", 3)]
    letters = [record(b"x" * 5_000, 4).dead_letter("too_large", "big")]
    with pytest.raises(RuntimeError):
        await sink.publish(results, letters)
    assert [k for k, _ in matches.sent] == [b"p1", b"p2", b"p3"] and len(dead.sent) == 1
    assert dead.sent[0][1].value_truncated and len(dead.sent[0][1].original_value()) == 1_024
    matches.fail_keys.clear()
    await sink.publish(results, letters)
    assert [k for k, _ in matches.sent] == [b"p1", b"p2", b"p3", b"p2"], "only the unacknowledged result again"
    assert len(dead.sent) == 1
