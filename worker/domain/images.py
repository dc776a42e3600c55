"""The image records: what reading an image gives (:class:`ImageRead`, its :class:`Keypoints`) and
what matching one finds (:class:`PointPair`, :class:`ImageHit`). Pure data, like the rest of
:mod:`worker.domain`."""

from __future__ import annotations

from dataclasses import dataclass

from worker.domain import FactCheckDetails


@dataclass(frozen=True)
class Keypoints:
    """An image's ORB keypoints (:mod:`worker.images.keypoints`): each one's 256-bit descriptor as
    64 hex digits, and where it is (x, y as shares of the image's longer side)."""

    descriptors: tuple[str, ...] = ()
    points: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class PointPair:
    """A post image's keypoint (``point``: its position in the image's :class:`Keypoints`) and a
    fact-check image's keypoint near it by descriptor, at (x, y) in that image."""

    point: int
    fact_check_id: str
    image: int
    x: float
    y: float


@dataclass(frozen=True)
class ImageRead:
    """One image read (fetched or inline, decoded, hashed), or why not: ``error`` is a short reason."""

    index: int
    pdq: str | None = None
    quality: int | None = None
    sha256: str | None = None
    error: str | None = None
    detail: str | None = None
    # The text read in it (OCR), and the mean confidence of its words (0-100); ``words_read``:
    # OCR looked at it (so no text means none was found).
    text: str | None = None
    text_confidence: float | None = None
    words_read: bool = False
    # The hashes of its 7 other rotations and mirror images (what a fact-check's image is kept under too).
    variants: tuple[str, ...] = ()
    # Its keypoints (what finds it cropped); None when not extracted.
    keypoints: Keypoints | None = None
    # The keypoints of its mirror image (what finds a copy both mirrored and cropped): found for
    # every image read, looked up for a post's only (a fact-check's image keeps its own).
    mirrored: Keypoints | None = None


@dataclass(frozen=True)
class ImageHit:
    """A fact-check with an image near one of a post's images: by PDQ Hamming ``distance``, or
    (``distance`` None) by ``keypoints`` of the fact-check's image found in place in the post's
    image (a cropped copy)."""

    fact_check_id: str
    image: int
    distance: int | None
    details: FactCheckDetails
    keypoints: int | None = None
    # Which of the fact-check's images it is, and the words read in that one (None: not read).
    fc_image: int = 0
    words: str | None = None
