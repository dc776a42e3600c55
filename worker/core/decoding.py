"""Raw records into wire models, one record at a time, never raising.

A stream must not stall on one message, so every way a record can be bad ends here as a
:class:`~worker.wire.DeadLetter` with a precise reason: too large (checked before reading
it), not UTF-8, not JSON, nested too deeply (checked before parsing: Python's parser would
raise ``RecursionError`` on a few thousand levels), not the schema, empty or too long text.
Texts are normalised before they can reach Postgres, which rejects NUL in text and jsonb
and cannot encode lone surrogates: NUL is removed, lone surrogates become U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from worker.wire import DeadLetter, FactCheckEvent, Feedback, Post, RawRecord

M = TypeVar("M", bound=BaseModel)

_STRUCTURE = re.compile(rb'[\[\]{}"\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """What a record may be; built from ``Settings`` by :mod:`worker.configs` (its defaults live there)."""

    max_record_bytes: int
    max_depth: int
    max_text_chars: int


def nesting_depth(data: bytes, limit: int) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, counting no further than ``limit + 1``.

    Looks only at brackets, quotes and backslashes (a regex finds them), so it costs little
    more than a scan of the bytes and never recurses.
    """
    depth = deepest = 0
    in_string = escaped = False
    for match in _STRUCTURE.finditer(data):
        char = match.group()
        if in_string:
            if escaped:
                escaped = False
            elif char == b"\\":
                # An escape consumes the next byte only when it is adjacent.
                escaped = True
                end = match.end()
                if end < len(data) and data[end : end + 1] not in b'\\"':
                    escaped = False
            elif char == b'"':
                in_string = False
            continue
        if char == b'"':
            in_string = True
        elif char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
        elif char in b"]}":
            depth -= 1
    return deepest


def clean_text(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value


def _clean(value: Any) -> Any:
    # Bounded by the depth guard, so the recursion is too.
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def parse_object(record: RawRecord, limits: Limits) -> dict[str, Any] | DeadLetter:
    """The record's value as a cleaned JSON object, or the dead letter that says why not."""
    raw = record.value or b""
    if len(raw) > limits.max_record_bytes:
        return record.dead_letter("too_large", f"value has {len(raw)} bytes, limit {limits.max_record_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return record.dead_letter("invalid_utf8", f"value is not UTF-8: {exc}")
    depth = nesting_depth(raw, limits.max_depth)
    if depth > limits.max_depth:
        return record.dead_letter("too_deep", f"JSON nests deeper than {limits.max_depth} levels")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return record.dead_letter("invalid_json", f"value is not JSON: {exc}")
    except (RecursionError, MemoryError, ValueError) as exc:
        # The guards above should make these unreachable; a record must still never fail its batch.
        return record.dead_letter("invalid_json", f"value could not be parsed: {type(exc).__name__}")
    if not isinstance(data, dict):
        return record.dead_letter("invalid_schema", f"expected a JSON object, got {type(data).__name__}")
    cleaned: dict[str, Any] = _clean(data)
    return cleaned


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


def _validate(record: RawRecord, model: type[M], data: dict[str, Any]) -> M | DeadLetter:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return record.dead_letter("invalid_schema", _describe(exc))


def _never_raises(
    decode: Callable[[RawRecord, Limits], M | DeadLetter],
) -> Callable[[RawRecord, Limits], M | DeadLetter]:
    def guarded(record: RawRecord, limits: Limits) -> M | DeadLetter:
        try:
            return decode(record, limits)
        except Exception as exc:
            return record.dead_letter("processing_error", f"decoding failed: {type(exc).__name__}: {exc}")

    return guarded


@_never_raises
def decode_post(record: RawRecord, limits: Limits) -> Post | DeadLetter:
    """Validate one record as a post, or say exactly why it is not one."""
    data = parse_object(record, limits)
    if isinstance(data, DeadLetter):
        return data
    text = data.get("text")  # missing: the schema's error (a post needs text, or images)
    if isinstance(text, str):
        if not text.strip() and not data.get("images"):
            return record.dead_letter("empty_text", "text is empty")
        if len(text) > limits.max_text_chars:
            return record.dead_letter(
                "text_too_long", f"text has {len(text)} characters, limit {limits.max_text_chars}"
            )
    return _validate(record, Post, data)


@_never_raises
def decode_fact_check_event(record: RawRecord, limits: Limits) -> FactCheckEvent | DeadLetter:
    """A factchecks-topic record: a JSON fact-check (upsert), ``{"id", "op": "delete"}``, or a tombstone."""
    if record.value is None:
        if not record.key:
            return record.dead_letter("invalid_schema", "tombstone without a key")
        try:
            return FactCheckEvent(id=clean_text(record.key.decode("utf-8")), op="delete")
        except (UnicodeDecodeError, ValidationError) as exc:
            return record.dead_letter("invalid_schema", f"tombstone key is not a fact-check id: {exc}")
    data = parse_object(record, limits)
    if isinstance(data, DeadLetter):
        return data
    event = _validate(record, FactCheckEvent, data)
    if isinstance(event, FactCheckEvent) and event.op == "upsert" and not event.claim.strip():
        return record.dead_letter("empty_text", "an upserted fact-check needs a claim")
    return event


@_never_raises
def decode_feedback(record: RawRecord, limits: Limits) -> Feedback | DeadLetter:
    data = parse_object(record, limits)
    if isinstance(data, DeadLetter):
        return data
    if isinstance(data.get("post_text"), str) and not data["post_text"].strip():
        return record.dead_letter("empty_text", "post_text is empty")
    return _validate(record, Feedback, data)
