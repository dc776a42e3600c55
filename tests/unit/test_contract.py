"""Unit tier: the checked-in contract (docs/contract) is what the code generates, and the
messages README shows and the worker builds are valid under it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from worker.adapter.contract import CONTRACT_DIR, WIRE_MODELS, asyncapi_document, contract_files
from worker.wire import DeadLetter, Match, MatchResult, SourceRef

README = Path(__file__).resolve().parents[2] / "README.md"


def schema(stem: str) -> dict[str, Any]:
    return dict(json.loads((CONTRACT_DIR / "schemas" / f"{stem}.schema.json").read_text()))


def test_the_checked_in_contract_is_what_the_code_generates() -> None:
    expected = contract_files()
    on_disk = {str(p.relative_to(CONTRACT_DIR)): p.read_text() for p in CONTRACT_DIR.rglob("*.json")}
    assert set(on_disk) == set(expected), "run `factmatch contract` and commit docs/contract"
    for name, text in expected.items():
        assert on_disk[name] == text, f"docs/contract/{name} is stale: run `factmatch contract` and commit it"


def test_the_asyncapi_document_names_every_topic_with_its_message_schema() -> None:
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    addresses = {name: channel["address"] for name, channel in document["channels"].items()}
    assert addresses == {
        "posts": "posts",
        "factchecks": "factchecks",
        "feedback": "match-feedback",
        "matches": "matches",
        "dead-letters": "posts.dlq",
        "trending-fact-checks": "trending-fact-checks",
        "emerging-claims": "emerging-claims",
    }
    schemas = document["components"]["schemas"]
    for name in (
        "Post",
        "FactCheckEvent",
        "Feedback",
        "MatchResult",
        "DeadLetter",
        "TrendingFactChecks",
        "EmergingClaims",
    ):
        assert name in schemas
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document))
    assert set(refs) <= set(schemas), "a reference points at no schema"


def readme_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.S)
    return [json.loads(block) for block in blocks if block.strip().startswith("{")]


def test_readme_examples_and_built_messages_are_valid_under_the_schemas() -> None:
    examples = readme_examples()
    posts = [e for e in examples if "text" in e and "id" in e]
    results = [e for e in examples if "post_id" in e and "matches" in e]
    assert posts and results, "README lost its wire examples"
    for post in [*posts, {"id": 123456, "text": "numeric ids are taken as text"}]:
        jsonschema.validate(post, schema("post"))
    for result in results:
        jsonschema.validate(
            json.loads(json.dumps(result).replace('"…"', '"2026-11-26T10:00:00Z"')), schema("match-result")
        )
    built = MatchResult(
        post_id="p",
        matches=[Match(fact_check_id="f", score=0.9, rank=1, claim="c", tier="match", probability=0.97)],
        model_version="v",
        source=SourceRef(topic="posts", partition=0, offset=1),
    )
    jsonschema.validate(json.loads(built.model_dump_json()), schema("match-result"))
    letter = DeadLetter(
        reason="invalid_json", error="Expecting value", topic="posts", partition=0, offset=7, value_b64="e30="
    )
    jsonschema.validate(json.loads(letter.model_dump_json()), schema("dead-letter"))
    jsonschema.validate({"id": "fc-1", "op": "delete"}, schema("fact-check-event"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": "no id"}, schema("post"))
    assert set(WIRE_MODELS) == {p.name.removesuffix(".schema.json") for p in (CONTRACT_DIR / "schemas").iterdir()}
