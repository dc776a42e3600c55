"""Posts' images in the pipeline: read while the text is encoded, searched by PDQ hash, and
merged into the post's matches.

A post's images are read (fetched or inline, decoded, hashed: an :class:`ImageSource`, built in
:mod:`worker.images`) concurrently with its text's encode and search, and the whole batch's reads
are bounded by ``batch_timeout_s``: an image not read by then is reported as ``timeout`` and the
post is answered with its text alone. OCR, the dear part of a read, starts only in the first half
of that time; an image read later keeps its hash and keypoints, without its text. Usable hashes
(PDQ quality >= ``min_quality``) are looked up in one round trip (:class:`~worker.storage.interfaces.ImageIndex`).

The text read in an image (OCR) is searched as a query of its own, its language detected on its
own, decided by the version's model for read text where it has one (``DecisionModel.image_text``),
and its matches join the post's (:func:`with_text_in_images`): a fact-check found both ways
keeps the surer of the two, with ``image_text`` naming the image when that was its text.

An image PDQ finds no picture for is looked for by its keypoints and its mirror image's
(:mod:`worker.images.keypoints`: a cropped copy, which PDQ misses, mirrored or not), in one more
round trip for the batch.

How an image hit becomes a match (:func:`with_image_matches`): a fact-check whose image is within
``match_distance`` of one of the post's images, or found in it by ``min_keypoints`` keypoints in
place, is the same picture, the strongest evidence the
worker has, so it is a "match" (a quarantined fact-check one tier lower, as text matches are)
and is listed first, nearest first (PDQ's before keypoints'); a fact-check also found by its text keeps its scores and
gains the image evidence. This tier is a rule, not a calibrated probability (no labelled
reposts of real photos exist offline to fit one on): a match found by its image alone has no
``probability``. One picture carries many captions (a meme template), so a hit whose words
and the fact-check image's (read when it was indexed) share less than ``words_cut`` is another
claim on the same picture and is dropped (:mod:`worker.images.words`); where either has too few
words to tell, the picture decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from worker.domain import TIER_RANK, Tier
from worker.domain.images import ImageHit, ImageRead
from worker.images.keypoints import DESCRIPTOR_CUT, PER_POINT, same_pictures
from worker.images.words import other_words
from worker.retrieval.retriever import DEMOTED, QuarantineList
from worker.storage.interfaces import ImageIndex
from worker.wire import ImageOutcome, ImageRef, Match

# The share of a batch's image time in which OCR may start: an image whose OCR would start later
# is matched by its hash and keypoints alone (one image-per-post posts on 2 cores: see
# docs/measurements.md), rather than lost to the batch's timeout with its hash.
OCR_SHARE = 0.5


class ImageSource(Protocol):
    async def read(
        self, images: Sequence[ImageRef], *, ocr: bool = True, ocr_until: float | None = None
    ) -> list[ImageRead]:
        """One read per image, in order; never raises for an image (a refusal is a read with its
        error). With ``ocr``, each image's text too (where the source has an OCR engine), where
        its OCR can start before ``ocr_until`` (``time.monotonic``)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ImageConfig:
    """Image matching's share of ``Settings`` (built by :mod:`worker.configs`)."""

    match_distance: int = 31
    batch_timeout_s: float = 10.0
    min_quality: int = 50
    top_k: int = 5
    # Keypoints in place that make a cropped copy the same picture (0: not looked for).
    min_keypoints: int = 20
    # A same picture whose words and the fact-check image's share less than this is another claim
    # on a reused picture, not a hit (:mod:`worker.images.words`; 0: pictures alone decide).
    words_cut: float = 0.35


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
        """Each post's images read, within the batch's time bound (late ones: ``timeout``); OCR
        starts only in the first :data:`OCR_SHARE` of it, so the rest is left for the hashes."""
        until = time.monotonic() + OCR_SHARE * self.config.batch_timeout_s
        tasks = [asyncio.ensure_future(self.source.read(images, ocr_until=until)) for images in posts]
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
        if self.config.min_keypoints:
            await self._keypoint_hits(reads, found)
        return await self._same_words(reads, found)

    async def _same_words(
        self, reads: Sequence[Sequence[ImageRead]], found: list[list[ImageHit]]
    ) -> list[list[ImageHit]]:
        """The hits whose words do not say otherwise: a post image and a fact-check image that both
        carry words enough to compare and share less than ``words_cut`` of them are the same picture
        with another claim on it (a meme template), so that hit is dropped. One round trip, for
        batches with a hit on an image with words."""
        cut = self.config.words_cut
        if not cut:
            return found
        texts = [{read.index: read.text for read in post_reads if read.text} for post_reads in reads]
        asked = [
            (hit.fact_check_id, hit.fc_image)
            for post, hits in enumerate(found)
            for hit in hits
            if hit.image in texts[post]
        ]
        if not asked:
            return found
        words = await self.index.image_words(asked)
        kept: list[list[ImageHit]] = []
        for post, hits in enumerate(found):
            worded = [replace(hit, words=words.get((hit.fact_check_id, hit.fc_image))) for hit in hits]
            kept.append([hit for hit in worded if not other_words(texts[post].get(hit.image), hit.words, cut)])
        return kept

    async def _keypoint_hits(self, reads: Sequence[Sequence[ImageRead]], found: list[list[ImageHit]]) -> None:
        """The images PDQ found no picture for, looked for by their keypoints and their mirror
        image's (a cropped copy, mirrored or not): one round trip for the batch, then each
        candidate checked for one transform."""
        pictured = {(post, hit.image) for post, hits in enumerate(found) for hit in hits}
        cut = self.config.min_keypoints
        todo = [
            (post, read.index, points)
            for post, post_reads in enumerate(reads)
            for read in post_reads
            if (post, read.index) not in pictured
            for points in (read.keypoints, read.mirrored)
            if points is not None and len(points.descriptors) >= cut
        ]
        if not todo:
            return
        pairs = await self.index.nearest_points(
            [points.descriptors for _, _, points in todo], max_distance=DESCRIPTOR_CUT, per_point=PER_POINT
        )
        verified = await asyncio.to_thread(
            lambda: [same_pictures(points, p, cut) for (_, _, points), p in zip(todo, pairs, strict=True)]
        )
        details = await self.index.fact_check_details(sorted({fc for hits in verified for fc, _, _ in hits}))
        # Each post's hits, most keypoints in place first (an image and its mirror image together).
        ranked = sorted(
            (
                (post, image, fc, fc_image, n)
                for (post, image, _), hits in zip(todo, verified, strict=True)
                for fc, fc_image, n in hits
            ),
            key=lambda hit: (hit[0], -hit[4], hit[2], hit[1]),
        )
        known = [{hit.fact_check_id for hit in hits} for hits in found]
        for post, image, fc, fc_image, n in ranked:
            if fc not in known[post] and fc in details and len(found[post]) < self.config.top_k:
                found[post].append(ImageHit(fc, image, None, details[fc], keypoints=n, fc_image=fc_image))
                known[post].add(fc)

    async def quarantined(self) -> frozenset[str]:
        return await self.quarantine.current() if self.quarantine else frozenset()


def with_image_matches(matches: Sequence[Match], hits: Sequence[ImageHit], quarantined: frozenset[str]) -> list[Match]:
    """The post's matches with its image hits merged in: same-picture fact-checks first, nearest first."""
    best: dict[str, ImageHit] = {}
    for hit in hits:
        if hit.fact_check_id not in best or _nearness(hit) < _nearness(best[hit.fact_check_id]):
            best[hit.fact_check_id] = hit
    if not best:
        return list(matches)
    by_id = {m.fact_check_id: m for m in matches}
    pictured: list[Match] = []
    for fc, hit in sorted(best.items(), key=lambda item: (_nearness(item[1]), item[0])):
        tier: Tier | None = DEMOTED["match"] if fc in quarantined else "match"
        if fc in by_id:
            evidence = {"image": hit.image, "image_distance": hit.distance, "tier": tier}
            evidence["image_keypoints"] = hit.keypoints
            pictured.append(by_id[fc].model_copy(update=evidence))
            continue
        pictured.append(
            Match(
                fact_check_id=fc,
                score=0.0,
                rank=0,
                **hit.details.shown(),
                tier=tier,
                image=hit.image,
                image_distance=hit.distance,
                image_keypoints=hit.keypoints,
            )
        )
    rest = [m for m in matches if m.fact_check_id not in best]
    return [m.model_copy(update={"rank": rank}) for rank, m in enumerate([*pictured, *rest], 1)]


def _nearness(hit: ImageHit) -> tuple[int, int]:
    """Sorts image hits: by PDQ distance first, then found by keypoints (most first)."""
    return (0, hit.distance) if hit.distance is not None else (1, -(hit.keypoints or 0))


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
