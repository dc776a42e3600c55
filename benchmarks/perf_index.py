"""The re-indexing and dense-search sections of benchmarks/performance.py: the indexer's
embed-and-store rate against a raw encode, and HNSW recall and speed at a larger corpus."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.perf_common import Model, WrappedEncoder, corpus_texts, corpus_vectors
from worker.core.encoder import SentenceTransformerEncoder
from worker.domain import Vectors
from worker.settings import Settings


class TimedEncoder(WrappedEncoder):
    """An encoder that adds up the seconds its document calls take (a stage profile)."""

    def __init__(self, encoder: SentenceTransformerEncoder) -> None:
        super().__init__(encoder)
        self.seconds = 0.0

    def encode_documents(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        try:
            return super().encode_documents(texts)
        finally:
            self.seconds += time.perf_counter() - started


async def section_reindex(model: Model, settings: Settings, count: int) -> None:
    """The indexer's embed-and-store rate vs encoding the same fact-checks alone."""
    from worker.core.indexer import embed_fact_checks
    from worker.storage import Store
    from worker.wire import document_text

    store = Store(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    await store.open()
    try:
        fact_checks = (await store.corpus.fact_checks_missing("reindex-none"))[:count]
        texts = [document_text(fc.title, fc.claim) for fc in fact_checks]
        started = time.perf_counter()
        model.encoder.encode_documents(texts)
        raw = len(texts) / (time.perf_counter() - started)
        version = f"reindex-{uuid.uuid4().hex[:6]}"
        await store.registry.register_version(version, model.ref, model.encoder.dimension, status="candidate")
        timed = TimedEncoder(model.encoder)
        started = time.perf_counter()
        await embed_fact_checks(store.embeddings, version, timed, fact_checks)
        total = time.perf_counter() - started
        stored = len(texts) / total
        await store.embeddings.drop_version_index(version)
    finally:
        await store.close()
    model.rows["raw document encode"] = raw
    model.rows["reindex (embed + store)"] = stored
    # Where the indexer's time goes: its encoder calls (slower than the raw encode when the
    # writes in flight take cores from torch) and whatever of the writes is not overlapped.
    inside, share = len(texts) / timed.seconds, timed.seconds / total
    print(f"  reindex: {stored:.1f}/s vs raw encode {raw:.1f}/s ({stored / raw:.2f}x);"
          f" encode {share:.0%} of the indexer's time, at {inside:.1f}/s inside it", flush=True)  # fmt: skip


async def section_ann(
    model: Model, texts: list[str], cache: Path, total: int, efs: Sequence[int], builds: Sequence[str]
) -> None:
    """Dense search at ``total`` fact-checks through the worker's SQL: recall@10 vs exact, ms/query
    per HNSW build (m, ef_construction) and ef_search.

    The 10,375 real fact-check vectors, and structured synthetic ones around them (a real
    vector, a share of another, a little noise: clustered as real corpora are, never uniform
    random), in a database of their own; queries are the real posts. ms/query is measured two
    ways: one connection searching batch after batch, and amortised over two connections
    searching at once (what two batches in flight, or two replicas, get from 2 cores).
    """
    from worker.local.stack import start_database
    from worker.storage import Store, apply_migrations
    from worker.wire import FactCheck

    real = corpus_vectors(cache, model).encode_documents(corpus_texts())
    rng = np.random.default_rng(0)
    extra = max(0, total - len(real))
    a = real[rng.integers(0, len(real), extra)]
    b = real[rng.integers(0, len(real), extra)]
    noise = rng.normal(size=a.shape).astype(np.float32) / np.sqrt(a.shape[1])
    synthetic = a + 0.35 * b + 0.15 * noise
    vectors = np.concatenate([real, synthetic])[:total]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"fc-{i}" for i in range(len(vectors))]
    queries = model.encoder.encode_queries(texts)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    position = {i: n for n, i in enumerate(ids)}
    dim = vectors.shape[1]
    chunks = [(start, min(start + 64, len(texts))) for start in range(0, len(texts), 64)]

    async def search(store: Store, version: str, part: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for lo, hi in part:
            batch = await store.candidates.candidates(
                version, dim, queries[lo:hi], texts[lo:hi], [None] * (hi - lo), sources=frozenset({"dense"}), limit=10
            )
            found.update({lo + n: [position[c.fact_check_id] for c in row.candidates] for n, row in enumerate(batch)})
        return found

    database = start_database()
    try:
        await apply_migrations(database.url)
        store = Store(database.url)
        await store.open()
        await store.corpus.upsert_fact_checks([FactCheck(id=i, claim="synthetic") for i in ids])
        await store.close()
        for build in builds:
            m, efc = (int(x) for x in build.split(":"))
            version = f"ann-m{m}-efc{efc}"
            store = Store(database.url)
            await store.open()
            await store.registry.register_version(version, model.ref, dim, status="indexing")
            for start in range(0, len(ids), 10_000):
                await store.embeddings.write_embeddings(
                    version, ids[start : start + 10_000], vectors[start : start + 10_000]
                )
            started = time.perf_counter()
            await store.embeddings.build_index(version, dim, m=m, ef_construction=efc)
            build_s = time.perf_counter() - started
            await store.close()
            print(
                f"  ann: {len(ids):,} vectors, HNSW m {m}, ef_construction {efc}: built in {build_s:.0f} s", flush=True
            )
            for ef in efs:
                store = Store(database.url, ef_search=ef)
                await store.open()
                serial = two = float("inf")
                found: dict[int, list[int]] = {}
                for _ in range(2):
                    started = time.perf_counter()
                    found = await search(store, version, chunks)
                    serial = min(serial, time.perf_counter() - started)
                    started = time.perf_counter()
                    halves = await asyncio.gather(
                        search(store, version, chunks[0::2]), search(store, version, chunks[1::2])
                    )
                    two = min(two, time.perf_counter() - started)
                    assert {**halves[0], **halves[1]} == found, "concurrent searches must find the same"
                await store.close()
                recall = float(np.mean([len(set(found[n]) & set(exact[n])) / 10 for n in range(len(texts))]))
                model.ann[f"m{m}-efc{efc}-ef{ef}"] = {
                    "m": m, "ef_construction": efc, "ef_search": ef, "build_s": build_s, "recall@10": recall,
                    "ms_per_query": serial * 1000 / len(texts), "ms_per_query_2_connections": two * 1000 / len(texts),
                }  # fmt: skip
                print(f"  ann m {m} efc {efc} ef_search {ef}: recall@10 {recall:.3f}, {serial * 1000 / len(texts):.2f}"
                      f" ms/query on one connection, {two * 1000 / len(texts):.2f} amortised on two"
                      " (batches of 64, the worker's dense query)", flush=True)  # fmt: skip
            store = Store(database.url)
            await store.open()
            await store.embeddings.drop_version_index(version)
            await store.close()
    finally:
        database.stop()
