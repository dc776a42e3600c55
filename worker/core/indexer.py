"""Embeds fact-checks and keeps every serving model version's index in step with the corpus.

Used by the CLI's bulk load, by the worker's factchecks-topic subscriber and by the
trainer's re-embedding, so a fact-check is always embedded the same way (title and claim
together, the document prompt, normalised) whoever embeds it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from worker.core.images import ImageSource
from worker.domain import SERVING_STATUSES, Encoder
from worker.storage.interfaces import EmbeddingIndex, ImageIndex, IndexingStores
from worker.wire import FactCheck, FactCheckEvent, document_text

log = logging.getLogger(__name__)

EncoderFor = Callable[[str, str], Encoder]
"""Returns the loaded encoder of (version, path), loading it if needed."""


async def embed_fact_checks(
    store: EmbeddingIndex,
    version: str,
    encoder: Encoder,
    fact_checks: Sequence[FactCheck],
    *,
    chunk_size: int = 256,
    progress: bool = False,
) -> int:
    """Embed ``fact_checks`` under ``version`` and write them, chunk by chunk.

    A chunk is written while the next one encodes (Postgres and torch then share the cores
    instead of taking turns); at most one write is in flight.
    """
    done = 0
    writing: asyncio.Future[None] | None = None
    # Chunks of similar lengths pad little (in corpus order each chunk is padded to its longest
    # fact-check: slower, docs/measurements.md).
    fact_checks = sorted(fact_checks, key=lambda fc: len(document_text(fc.title, fc.claim)))
    with tqdm(total=len(fact_checks), desc=f"embedding [{version}]", unit="doc", disable=not progress) as bar:
        try:
            for start in range(0, len(fact_checks), chunk_size):
                chunk = fact_checks[start : start + chunk_size]
                texts = [document_text(fc.title, fc.claim) for fc in chunk]
                vectors = await asyncio.to_thread(encoder.encode_documents, texts)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(store.write_embeddings(version, [fc.id for fc in chunk], vectors))
                done += len(chunk)
                bar.update(len(chunk))
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing
    return done


async def index_version(
    store: IndexingStores,
    version: str,
    dimension: int,
    encoder: Encoder,
    *,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 64,
    progress: bool = False,
) -> int:
    """Embed every fact-check missing under ``version``, then build its index (rows first, index after)."""
    missing = await store.corpus.fact_checks_missing(version)
    count = await embed_fact_checks(store.embeddings, version, encoder, missing, progress=progress)
    await store.embeddings.build_index(version, dimension, m=hnsw_m, ef_construction=hnsw_ef_construction)
    # Fact-checks that arrived while the index was building are caught up here.
    late = await store.corpus.fact_checks_missing(version)
    count += await embed_fact_checks(store.embeddings, version, encoder, late)
    return count


@dataclass
class CorpusChange:
    upserted: int = 0
    deleted: int = 0
    embedded: int = 0


class CorpusIndexer:
    """Applies fact-check upserts and deletes, embedding under every serving version."""

    def __init__(
        self,
        store: IndexingStores,
        encoder_for: EncoderFor,
        images: ImageSource | None = None,
        image_index: ImageIndex | None = None,
    ) -> None:
        self.store = store
        self.encoder_for = encoder_for
        # Fact-checks' images are read and hashed (PDQ) when both are given.
        self.images = images
        self.image_index = image_index

    async def upsert(self, fact_checks: Sequence[FactCheck], *, progress: bool = False) -> CorpusChange:
        change = CorpusChange()
        if not fact_checks:
            return change
        await self.store.corpus.upsert_fact_checks(fact_checks)
        change.upserted = len({fc.id for fc in fact_checks})
        unique = list({fc.id: fc for fc in fact_checks}.values())
        for mv in await self.store.registry.versions_with_status(SERVING_STATUSES):
            encoder = await asyncio.to_thread(self.encoder_for, mv.version, mv.path)
            change.embedded += await embed_fact_checks(
                self.store.embeddings, mv.version, encoder, unique, progress=progress
            )
        await self.index_images(unique)
        return change

    async def close(self) -> None:
        if self.images is not None:
            await self.images.close()

    async def index_images(self, fact_checks: Sequence[FactCheck]) -> None:
        """Each upserted fact-check's images, read and hashed (none: its earlier images go)."""
        if self.images is not None and self.image_index is not None:
            await index_images(self.images, self.image_index, fact_checks)

    async def apply(self, events: Sequence[FactCheckEvent]) -> CorpusChange:
        # The last event for an id wins, as it would if they were applied one by one.
        last: dict[str, FactCheckEvent] = {}
        for event in events:
            last.pop(event.id, None)
            last[event.id] = event
        upserts = [FactCheck.model_validate(e.model_dump(exclude={"op"})) for e in last.values() if e.op == "upsert"]
        deletes = [e.id for e in last.values() if e.op == "delete"]
        change = await self.upsert(upserts)
        change.deleted = await self.store.corpus.delete_fact_checks(deletes)
        return change


async def index_images(source: ImageSource, index: ImageIndex, fact_checks: Sequence[FactCheck]) -> int:
    """Read the fact-checks' images (hashes, keypoints and, with an OCR engine, their words: what
    tells a reused picture with another claim on it from a repost) and keep them; a fact-check given no
    images has none afterwards. A fact-check whose images are the ones kept (the same links, the
    same inline bytes, every one read before) is left as it is: reloading a corpus fetches nothing
    again. Returns how many fact-checks' images were read."""
    kept = {
        fc_id: [(url, None) if url else (None, sha) for url, sha in rows]
        for fc_id, rows in (await index.image_sources([fc.id for fc in fact_checks])).items()
    }
    changed = [fc for fc in fact_checks if not fc.images or kept.get(fc.id) != _sources(fc)]
    reads = await asyncio.gather(*(source.read(fc.images) for fc in changed if fc.images))
    found = iter(reads)
    await index.replace_images(
        {
            fc.id: list(zip(next(found), [ref.url for ref in fc.images], strict=True)) if fc.images else []
            for fc in changed
        }
    )
    return len(reads)


def _sources(fc: FactCheck) -> list[tuple[str | None, str | None]]:
    """What identifies a fact-check's images: each one's link, or the SHA-256 of its inline bytes."""
    out: list[tuple[str | None, str | None]] = []
    for ref in fc.images:
        if ref.url is not None:
            out.append((ref.url, None))
        else:
            try:
                data = base64.b64decode(ref.data or "", validate=True)
            except (binascii.Error, ValueError):
                return []  # unreadable: never equal to what is kept, so it is read (and refused)
            out.append((None, hashlib.sha256(data).hexdigest()))
    return out
