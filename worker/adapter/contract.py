"""The machine-readable contract: an AsyncAPI document of the worker's topics and a JSON Schema
per wire model, generated from the code that serves them.

Why it exists: producers (platforms) and consumers (moderators' tools, the console, partners)
code against the topics; they should not have to read Python to know a field. FastStream
generates the AsyncAPI document from the declared subscribers and publishers; the worker's
subscribers take raw records (each is validated on its own, so one bad message cannot fail
its batch), so their payloads are filled in here from the wire models they are decoded into.
The files live in ``docs/contract/``; ``factmatch contract`` writes them and a test fails
when they differ from what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker.settings import Settings
from worker.wire import (
    SCHEMA_VERSION,
    DeadLetter,
    EmergingClaims,
    FactCheckEvent,
    Feedback,
    MatchResult,
    Post,
    TrendingFactChecks,
)

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "docs" / "contract"

# Every message on a factmatch topic: file stem -> model.
WIRE_MODELS: dict[str, type[BaseModel]] = {
    "post": Post,
    "match-result": MatchResult,
    "dead-letter": DeadLetter,
    "fact-check-event": FactCheckEvent,
    "feedback": Feedback,
    "trending-fact-checks": TrendingFactChecks,
    "emerging-claims": EmergingClaims,
}
# The subscribers' channels and the model each record is decoded into.
RECEIVED: dict[str, type[BaseModel]] = {"posts": Post, "factchecks": FactCheckEvent, "feedback": Feedback}
DESCRIPTIONS = {
    "posts": "Posts from platforms, one JSON object per record (key: the post id). One MatchResult each on "
    "matches; an invalid record goes to the dead-letter topic with its reason.",
    "factchecks": "Fact-check upserts and deletes; the worker embeds and indexes them for every serving version.",
    "feedback": "Moderators' verdicts on published matches; stored for the trainer.",
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema (draft 2020-12) as a standalone document."""
    schema = model.model_json_schema(mode="validation" if model in RECEIVED.values() else "serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _hoisted(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """``model``'s schema with its ``$defs`` moved into the AsyncAPI components."""
    schema = json_schema(model)
    schema.pop("$schema")
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    text = json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/')
    for name in list(components):
        components[name] = json.loads(json.dumps(components[name]).replace('"#/$defs/', '"#/components/schemas/'))
    return dict(json.loads(text))


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the worker's topics under ``settings`` (defaults: the
    documented topic names)."""
    from faststream.specification import AsyncAPI

    from worker.adapter.broker import WorkerDeps, build_broker

    # The documented defaults, not this shell's FACTMATCH_* variables.
    settings = settings or Settings.model_construct()
    # Only the declarations are read: nothing connects and no processor is called.
    broker = build_broker(settings, WorkerDeps(pipeline=None, factchecks=None, feedback=None))  # type: ignore[arg-type]
    document: dict[str, Any] = (
        AsyncAPI(
            broker,
            title="factmatch",
            version=f"{SCHEMA_VERSION}.0.0",
            description="Topics of the factmatch worker: posts in, one match result per post out.",
        )
        .to_specification()
        .to_jsonable()
    )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for channel, model in RECEIVED.items():
        components.pop(f"{channel}:Message:Payload", None)
        components[model.__name__] = _hoisted(model, components)
        message = document["components"]["messages"][f"{channel}:SubscribeMessage"]
        message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
        document["channels"][channel]["description"] = DESCRIPTIONS[channel]
    return document


def contract_files(settings: Settings | None = None) -> dict[str, str]:
    """Relative path -> text of every contract file."""
    files = {"asyncapi.json": json.dumps(asyncapi_document(settings), indent=2, sort_keys=True) + "\n"}
    for stem, model in WIRE_MODELS.items():
        files[f"schemas/{stem}.schema.json"] = json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"
    return files


def write_contract(directory: Path = CONTRACT_DIR) -> list[Path]:
    """Write every contract file under ``directory``; the paths written."""
    written = []
    for relative, text in contract_files().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
