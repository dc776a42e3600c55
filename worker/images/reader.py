"""A post's or a fact-check's images, read: fetched or taken inline, decoded, PDQ-hashed, their
keypoints found, and (a post's) their text read by OCR.

Never raises for an image: every refusal, and anything unexpected from a decoder, becomes an
:class:`~worker.domain.ImageRead` with its reason, so an image never costs its post. Images are
read concurrently (at most ``concurrency`` at once across every caller), decoding and hashing on
the reader's own threads (never the event loop's default pool, which the encoder's calls use);
each fetch is bounded by the fetcher's policy, and the caller bounds the whole. OCR, by far the
dearest step (~0.5 s an image against a few ms for the hashes and keypoints), runs at most one
per core and only until the caller's ``ocr_until``: an image whose turn comes later keeps its hash
and keypoints and says its text was not read (:data:`OCR_LATE`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worker.domain.images import ImageRead
from worker.images.decode import decode, inline_bytes
from worker.images.fetch import ImageFetcher, ImageRefused
from worker.images.keypoints import orb_keypoints
from worker.images.ocr import Tesseract
from worker.images.pdq import pdq_dihedral
from worker.wire import ImageRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadLimits:
    max_per_item: int = 4
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    concurrency: int = 8


# OCR processes at once across every reader: one per core (Tesseract is CPU-bound).
_OCR_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
# An image read without its text because OCR's time ran out (its ``detail``; no error).
OCR_LATE = "text not read: the batch's time for OCR ran out"


def _ocr_slot(until: float | None) -> bool:
    """Take an OCR slot, waiting no later than ``until`` (``time.monotonic``; None: as long as it takes)."""
    if until is None:
        return _OCR_SLOTS.acquire()
    wait = until - time.monotonic()
    return wait > 0 and _OCR_SLOTS.acquire(timeout=wait)


def _read(index: int, data: bytes, max_pixels: int, ocr: Tesseract | None, ocr_until: float | None) -> ImageRead:
    """Decode, hash and find the keypoints of one image (and of its mirror image), then (with
    ``ocr``, while there is time) read its text; on one of the reader's threads."""
    digest = hashlib.sha256(data).hexdigest()
    pixels = decode(data, max_pixels)
    found, variants = pdq_dihedral(pixels)
    keypoints, mirrored = orb_keypoints(pixels), orb_keypoints(pixels, mirrored=True)
    text, detail, words_read = None, None, False
    if ocr is not None:
        if _ocr_slot(ocr_until):
            try:
                text, words_read = ocr.read(pixels), True
            finally:
                _OCR_SLOTS.release()
        else:
            detail = OCR_LATE
    return ImageRead(
        index,
        pdq=found.hex,
        quality=found.quality,
        sha256=digest,
        detail=detail,
        text=text.text if text else None,
        text_confidence=text.confidence if text else None,
        words_read=words_read,
        variants=variants,
        keypoints=keypoints,
        mirrored=mirrored,
    )


class ImageReader:
    """Reads images under a fetcher's policy and the :class:`ReadLimits`."""

    def __init__(self, fetcher: ImageFetcher, limits: ReadLimits, ocr: Tesseract | None = None) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.ocr = ocr
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._threads = ThreadPoolExecutor(limits.concurrency, thread_name_prefix="image-read")

    async def read(
        self, images: Sequence[ImageRef], *, ocr: bool = True, ocr_until: float | None = None
    ) -> list[ImageRead]:
        """One read per image, in order; those past ``max_per_item`` are refused unread. With ``ocr``
        (and an OCR engine), each image's text too, where its OCR can start before ``ocr_until``
        (``time.monotonic``; None: no limit)."""
        keep = self.limits.max_per_item
        engine = self.ocr if ocr else None
        reads = await asyncio.gather(*(self._one(i, ref, engine, ocr_until) for i, ref in enumerate(images[:keep])))
        skipped = [
            ImageRead(i, error="too_many_images", detail=f"only the first {keep} are read")
            for i in range(keep, len(images))
        ]
        return [*reads, *skipped]

    async def close(self) -> None:
        await self.fetcher.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _one(self, index: int, ref: ImageRef, ocr: Tesseract | None, ocr_until: float | None) -> ImageRead:
        try:
            async with self._slots:
                if ref.data is not None:
                    data = inline_bytes(ref.data, self.limits.max_bytes)
                else:
                    assert ref.url is not None
                    data = await self.fetcher.fetch(ref.url)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._threads, _read, index, data, self.limits.max_pixels, ocr, ocr_until
                )
        except ImageRefused as refused:
            return ImageRead(index, error=refused.reason, detail=refused.detail[:300] or None)
        except Exception as exc:  # a decoder's surprise costs this image only
            log.warning("image %d not read: %r", index, exc)
            return ImageRead(index, error="broken_image", detail=type(exc).__name__)
