"""A post's or a fact-check's images, read: fetched or taken inline, decoded, PDQ-hashed, their
keypoints found, and (a post's) their text read by OCR.

Never raises for an image: every refusal, and anything unexpected from a decoder, becomes an
:class:`~worker.domain.ImageRead` with its reason, so an image never costs its post. Images are
read concurrently (at most ``concurrency`` at once across every caller), decoding and hashing off
the event loop; each fetch is bounded by the fetcher's policy, and the caller bounds the whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
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


def _read(index: int, data: bytes, max_pixels: int, ocr: Tesseract | None) -> ImageRead:
    """Decode, hash, find the keypoints of and (with ``ocr``) read the text of one image, off the
    event loop."""
    digest = hashlib.sha256(data).hexdigest()
    pixels = decode(data, max_pixels)
    found, variants = pdq_dihedral(pixels)
    text = None
    if ocr is not None:
        with _OCR_SLOTS:
            text = ocr.read(pixels)
    return ImageRead(
        index,
        pdq=found.hex,
        quality=found.quality,
        sha256=digest,
        text=text.text if text else None,
        text_confidence=text.confidence if text else None,
        variants=variants,
        keypoints=orb_keypoints(pixels),
    )


class ImageReader:
    """Reads images under a fetcher's policy and the :class:`ReadLimits`."""

    def __init__(self, fetcher: ImageFetcher, limits: ReadLimits, ocr: Tesseract | None = None) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.ocr = ocr
        self._slots = asyncio.Semaphore(limits.concurrency)

    async def read(self, images: Sequence[ImageRef], *, ocr: bool = True) -> list[ImageRead]:
        """One read per image, in order; those past ``max_per_item`` are refused unread. With ``ocr``
        (and an OCR engine), each image's text too."""
        keep = self.limits.max_per_item
        engine = self.ocr if ocr else None
        reads = await asyncio.gather(*(self._one(i, ref, engine) for i, ref in enumerate(images[:keep])))
        skipped = [
            ImageRead(i, error="too_many_images", detail=f"only the first {keep} are read")
            for i in range(keep, len(images))
        ]
        return [*reads, *skipped]

    async def close(self) -> None:
        await self.fetcher.close()

    async def _one(self, index: int, ref: ImageRef, ocr: Tesseract | None) -> ImageRead:
        try:
            async with self._slots:
                if ref.data is not None:
                    data = inline_bytes(ref.data, self.limits.max_bytes)
                else:
                    assert ref.url is not None
                    data = await self.fetcher.fetch(ref.url)
                return await asyncio.to_thread(_read, index, data, self.limits.max_pixels, ocr)
        except ImageRefused as refused:
            return ImageRead(index, error=refused.reason, detail=refused.detail[:300] or None)
        except Exception as exc:  # a decoder's surprise costs this image only
            log.warning("image %d not read: %r", index, exc)
            return ImageRead(index, error="broken_image", detail=type(exc).__name__)
