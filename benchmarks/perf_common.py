"""What the performance benchmarks share: the data, the posts, the model under test, its encoder
passed through, its corpus's vectors kept on disk between runs, a free port."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.core.document_cache import CachedDocuments  # noqa: E402
from worker.core.encoder import SentenceTransformerEncoder  # noqa: E402
from worker.domain import Vectors  # noqa: E402

if TYPE_CHECKING:
    from worker.storage import Store

DATA = ROOT.parent / "shared" / "data" / "checkthat2020"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def posts(limit: int) -> list[str]:
    from worker.retrieval.evaluation import load_jsonl

    seen: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        for row in load_jsonl(DATA / f"{split}_queries.jsonl"):
            seen.setdefault(str(row["text"]), None)
    return list(seen)[:limit]


class WrappedEncoder:
    """The real encoder, passed through; subclasses change how documents are encoded."""

    def __init__(self, encoder: SentenceTransformerEncoder) -> None:
        self.encoder = encoder

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self.encoder.encode_queries(texts)

    def encode_documents(self, texts: Sequence[str]) -> Vectors:
        return self.encoder.encode_documents(texts)


@dataclass
class Model:
    name: str
    ref: str
    encoder: SentenceTransformerEncoder
    version: str = ""
    rows: dict[str, Any] = field(default_factory=dict)
    starts: dict[str, float] = field(default_factory=dict)
    backends: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    ann: dict[str, dict[str, float]] = field(default_factory=dict)


async def store_shipped_decision(store: Store, model: Model) -> None:
    """Give the model's version the decision its model ships with (what a fresh install starts from)."""
    from worker.configs import shipped_decision

    if (shipped := shipped_decision(model.ref)) is not None:
        await store.decisions.save_decision(
            model.version, shipped.model, shipped.thresholds, source=shipped.source, report=shipped.report
        )


def corpus_vectors(cache: Path, model: Model) -> CachedDocuments:
    """``model``'s encoder with its fact-check vectors kept under ``cache`` between runs (the
    document cache ``factmatch eval`` uses), so reruns skip embedding the corpus."""
    from worker.retrieval.shipped import model_key

    return CachedDocuments(model.encoder, cache / f"{model_key(model.ref)}-docs")


def corpus_texts() -> list[str]:
    """The CheckThat! corpus's fact-checks as the indexer embeds them."""
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.wire import document_text

    return [document_text(fc.title, fc.claim) for fc in corpus_from_rows(load_jsonl(DATA / "corpus.jsonl"))]
