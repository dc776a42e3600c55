"""The encoder stage: which posts go into which encoder call, and which need no call at all.

Kafka hands the worker up to ``batch_max_records`` posts at once. Encoding them in one call
would pad every short post to the longest one, so they are sorted by length and cut into
calls of at most ``encode_batch_size`` rows and ``batch_token_budget`` padded tokens (long
posts make smaller calls: memory stays bounded). On CPU the budget is smaller (2,048 tokens), and
the stage encodes fetches of 64 posts at 0.96x the speed of one ``encode(batch_size=32)`` over all
800 posts sorted at once at the same precision (bf16 autocast; docs/measurements.md). The pipeline
searches one call's posts while the next call encodes, so the calls are also its units of overlap.

Posts repeat (a viral text is reposted thousands of times): identical texts inside a batch
are encoded once, and a bounded LRU per model version remembers recent texts' vectors.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.domain import Encoder, Vectors


def plan_batches(token_counts: Sequence[int], token_budget: int, max_rows: int | None = None) -> list[list[int]]:
    """Group indices into encoder calls, shortest first; each group's padded cost fits the budget.

    A single text longer than the budget still gets a group of its own (it is truncated
    by the encoder, never dropped).
    """
    if token_budget < 1:
        raise ValueError("token_budget must be positive")
    rows = max_rows or len(token_counts) or 1
    order = sorted(range(len(token_counts)), key=lambda i: (token_counts[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(1, token_counts[index])
        # Sorted ascending, so this text is the group's longest if it joins.
        if current and (len(current) >= rows or (len(current) + 1) * max(longest, length) > token_budget):
            groups.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


def cache_key(text: str) -> str:
    # Reposts differ in case, Unicode form and spacing, never in what the encoder should see
    # beyond that; models are not all case-sensitive, but none is hurt by the shared vector.
    return " ".join(unicodedata.normalize("NFKC", text).split())


class EmbeddingCache:
    """A bounded LRU of query vectors per (model version, normalised text); thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, key: str) -> Vectors | None:
        with self._lock:
            vector = self._items.get((version, key))
            if vector is not None:
                self._items.move_to_end((version, key))
            return vector

    def put(self, version: str, key: str, vector: Vectors) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[(version, key)] = vector
            self._items.move_to_end((version, key))
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass
class EncodePlan:
    """One batch's vectors (filled as calls finish) and the calls still to make."""

    vectors: Vectors
    # Post indices per encoder call, shortest posts first; ``ready`` needed no call.
    calls: list[list[int]]
    ready: list[int]
    tokens: int
    # A post whose text repeats an earlier one in the batch takes its vector.
    copies: dict[int, list[int]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    encode_seconds: float = 0.0

    @property
    def chunks(self) -> list[list[int]]:
        """The units the pipeline searches in: cached posts at once, then each call's posts."""
        with_copies = [sorted([*c, *(j for i in c for j in self.copies.get(i, []))]) for c in self.calls]
        return ([self.ready] if self.ready else []) + with_copies


class EncodeStage:
    """Plans and runs the encoder calls of a batch; both run off the event loop."""

    def __init__(self, token_budget: int, max_rows: int, cache: EmbeddingCache | None = None) -> None:
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.cache = cache or EmbeddingCache(0)

    def plan(self, encoder: Encoder, version: str, texts: Sequence[str]) -> EncodePlan:
        keys = [cache_key(t) for t in texts]
        vectors = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
        ready: list[int] = []
        first: dict[str, int] = {}
        copies: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            if key in first:
                copies.setdefault(first[key], []).append(i)
                continue
            cached = self.cache.get(version, key)
            if cached is not None:
                vectors[i] = cached
                ready.append(i)
            else:
                first[key] = i
        for i in ready:
            for j in copies.pop(i, []):
                vectors[j] = vectors[i]
                ready.append(j)
        misses = list(first.values())
        counts = encoder.count_tokens([texts[i] for i in misses]) if misses else []
        calls = [[misses[j] for j in group] for group in plan_batches(counts, self.token_budget, self.max_rows)]
        return EncodePlan(vectors, calls, sorted(ready), sum(counts), copies, keys)

    def encode(
        self, encoder: Encoder, version: str, plan: EncodePlan, call: Sequence[int], texts: Sequence[str]
    ) -> None:
        started = time.perf_counter()
        encoded = encoder.encode_queries([texts[i] for i in call])
        for i, vector in zip(call, encoded, strict=True):
            plan.vectors[i] = vector
            for j in plan.copies.get(i, []):
                plan.vectors[j] = vector
            self.cache.put(version, plan.keys[i], vector.copy())
        plan.encode_seconds += time.perf_counter() - started

    def encode_all(self, encoder: Encoder, version: str, texts: Sequence[str]) -> EncodePlan:
        """Plan and make every call in turn: the stage alone, as benchmarks and tools run it."""
        plan = self.plan(encoder, version, texts)
        for call in plan.calls:
            self.encode(encoder, version, plan, call, texts)
        return plan
