"""PDQ perceptual hashes: the same photo, resized, cropped a little, recompressed or brightened,
hashes to nearly the same 256 bits.

PDQ is Meta's open perceptual hash (the one hasher-matcher-actioner and the industry's hash
sharing use), computed here by the ``pdqhash`` package (Meta's reference C++). Two images are
the same picture when the Hamming distance of their hashes is at most a cut (HMA's default: 31
of 256 bits). A hash of quality below ``MIN_QUALITY`` (a flat or nearly blank image) says little
and is not matched (HMA's rule too). Hashes travel as 64 hex digits and are stored as ``bit(256)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = 256
MIN_QUALITY = 50


@dataclass(frozen=True)
class PdqHash:
    """A PDQ hash as 64 hex digits, and its quality (0-100)."""

    hex: str
    quality: int

    @property
    def bits(self) -> str:
        """The hash as a string of 256 '0'/'1' (what Postgres' ``bit(256)`` takes)."""
        return bin(int(self.hex, 16))[2:].zfill(BITS)

    @property
    def usable(self) -> bool:
        return self.quality >= MIN_QUALITY


def _hex(bits: np.ndarray) -> str:
    value = 0
    for bit in np.asarray(bits, dtype=np.int64):
        value = (value << 1) | int(bit)
    return format(value, f"0{BITS // 4}x")


def pdq_hash(pixels: np.ndarray) -> PdqHash:
    """The PDQ hash of RGB pixels (height x width x 3, uint8)."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels, dtype=np.uint8))
    return PdqHash(_hex(bits), int(quality))


def pdq_dihedral(pixels: np.ndarray) -> tuple[PdqHash, tuple[str, ...]]:
    """The image's PDQ hash and the hashes of its 7 other rotations and mirror images (PDQ computes
    all 8 from one transform): a fact-check's image is kept under all 8, so a mirrored or rotated
    repost is the same picture."""
    import pdqhash

    hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(pixels, dtype=np.uint8))
    first, *others = (_hex(bits) for bits in hashes)
    return PdqHash(first, int(quality)), tuple(others)


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes given as hex."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
