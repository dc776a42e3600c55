"""Posts' images in the pipeline: read while the text is encoded, searched by PDQ hash, and
merged into the post's matches.

A post's images are read (fetched or inline, decoded, hashed: an :class:`ImageSource`, built in
:mod:`worker.images`) concurrently with its text's encode and search, and the whole batch's reads
are bounded by ``batch_timeout_s``: an image not read by then is reported as ``timeout`` and the
post is answered with its text alone. Usable hashes (PDQ quality >= ``min_quality``) are looked
up in one round trip (:class:`~worker.storage.interfaces.ImageIndex`).

The text read in an image (OCR) is searched as a query of its own, its language detected on its
own, and its matches join the post's (:func:`with_text_in_images`): a fact-check found both ways
keeps the surer of the two, with ``image_text`` naming the image when that was its text.

How an image hit becomes a match (:func:`with_image_matches`): a fact-check whose image is within
``match_distance`` of one of the post's images is the same picture, the strongest evidence the
worker has, so it is a "match" (a quarantined fact-check one tier lower, as text matches are)
and is listed first, nearest first; a fact-check also found by its text keeps its scores and
gains the image evidence. Until the decision model has image features, this tier is a rule, not a
calibrated probability: such a match found by its image alone has no ``probability``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.domain import TIER_RANK, ImageHit, ImageRead, Tier
from worker.retrieval.retriever import DEMOTED, QuarantineList
from worker.storage.interfaces import ImageIndex
from worker.wire import ImageOutcome, ImageRef, Match


class ImageSource(Protocol):
    async def read(self, images: Sequence[ImageRef], *, ocr: bool = True) -> list[ImageRead]:
        """One read per image, in order; never raises for an image (a refusal is a read with its
        error). With ``ocr``, each image's text too (where the source has an OCR engine)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ImageConfig:
    """Image matching's share of ``Settings`` (built by :mod:`worker.configs`)."""

    match_distance: int = 31
    batch_timeout_s: float = 10.0
    min_quality: int = 50
    top_k: int = 5


def outcome(read: ImageRead, url: str | None = None) -> ImageOutcome:
    return ImageOutcome(
        index=read.index,
        url=url,
        pdq=read.pdq,
        quality=read.quality,
        error=read.error,
        detail=read.detail,
        text=read.text,
        text_confidence=read.text_confidence,
    )


class ImageMatching:
    def __init__(
        self, source: ImageSource, index: ImageIndex, config: ImageConfig, quarantine: QuarantineList | None = None
    ) -> None:
        self.source = source
        self.index = index
        self.config = config
        self.quarantine = quarantine

    async def read(self, posts: Sequence[Sequence[ImageRef]]) -> list[list[ImageRead]]:
        """Each post's images read, within the batch's time bound (late ones: ``timeout``)."""
        tasks = [asyncio.ensure_future(self.source.read(images)) for images in posts]
        if not tasks:
            return []
        _, late = await asyncio.wait(tasks, timeout=self.config.batch_timeout_s)
        for task in late:
            task.cancel()
        detail = f"the batch's images were not read within {self.config.batch_timeout_s:g} s"
        return [
            task.result()
            if task not in late and not task.cancelled() and task.exception() is None
            else [ImageRead(i, error="timeout", detail=detail) for i in range(len(images))]
            for task, images in zip(tasks, posts, strict=True)
        ]

    async def hits(self, reads: Sequence[Sequence[ImageRead]]) -> list[list[ImageHit]]:
        """Each post's fact-checks with an image within the cut, one round trip for the batch."""
        usable = [
            (post, r)
            for post, rs in enumerate(reads)
            for r in rs
            if r.pdq and (r.quality or 0) >= self.config.min_quality
        ]
        found: list[list[ImageHit]] = [[] for _ in reads]
        if not usable:
            return found
        near = await self.index.nearest_images(
            [r.pdq for _, r in usable if r.pdq], max_distance=self.config.match_distance, limit=self.config.top_k
        )
        for (post, read), hits in zip(usable, near, strict=True):
            found[post] += [ImageHit(h.fact_check_id, read.index, h.distance, h.details) for h in hits]
        return found

    async def quarantined(self) -> frozenset[str]:
        return await self.quarantine.current() if self.quarantine else frozenset()


def with_image_matches(matches: Sequence[Match], hits: Sequence[ImageHit], quarantined: frozenset[str]) -> list[Match]:
    """The post's matches with its image hits merged in: same-picture fact-checks first, nearest first."""
    best: dict[str, ImageHit] = {}
    for hit in hits:
        if hit.fact_check_id not in best or hit.distance < best[hit.fact_check_id].distance:
            best[hit.fact_check_id] = hit
    if not best:
        return list(matches)
    by_id = {m.fact_check_id: m for m in matches}
    pictured: list[Match] = []
    for fc, hit in sorted(best.items(), key=lambda item: (item[1].distance, item[0])):
        tier: Tier | None = DEMOTED["match"] if fc in quarantined else "match"
        if fc in by_id:
            evidence = {"image": hit.image, "image_distance": hit.distance, "tier": tier}
            pictured.append(by_id[fc].model_copy(update=evidence))
            continue
        d = hit.details
        pictured.append(
            Match(
                fact_check_id=fc,
                score=0.0,
                rank=0,
                claim=d.claim,
                title=d.title,
                url=d.url,
                lang=d.lang,
                rating=d.rating,
                published_at=d.published_at,
                tier=tier,
                image=hit.image,
                image_distance=hit.distance,
            )
        )
    rest = [m for m in matches if m.fact_check_id not in best]
    return [m.model_copy(update={"rank": rank}) for rank, m in enumerate([*pictured, *rest], 1)]


def with_text_in_images(matches: Sequence[Match], found: Sequence[tuple[int, Sequence[Match]]]) -> list[Match]:
    """The post's matches with those the text in its images found (``found``: each image's index and
    the matches of its text as a query of its own). A fact-check found both ways keeps the surer of
    the two; the list is ordered by tier, then probability (cosine when uncalibrated)."""
    best: dict[str, tuple[Match, int]] = {m.fact_check_id: (m, n) for n, m in enumerate(matches)}
    offset = len(matches)
    for index, image_matches in found:
        for m in image_matches:
            known = best.get(m.fact_check_id)
            if known is None or _sureness(m) > _sureness(known[0]):
                best[m.fact_check_id] = (m.model_copy(update={"image_text": index}), known[1] if known else offset)
                offset += 1
    ordered = sorted(
        best.values(),
        key=lambda entry: (TIER_RANK.get(entry[0].tier or "", len(TIER_RANK)), -_sureness(entry[0]), entry[1]),
    )
    return [m.model_copy(update={"rank": rank}) for rank, (m, _) in enumerate(ordered, 1)]


def _sureness(m: Match) -> float:
    return m.probability if m.probability is not None else m.score
