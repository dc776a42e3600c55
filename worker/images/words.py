"""Whether two images' words say the same thing: the guard on a same-picture hit.

One picture carries many captions: a meme template (a stock photo, a film still) is reposted
with any claim written on it, and PDQ and keypoints find it "the same picture" as a fact-check's
meme whatever its words (``benchmarks/image_templates.py``: most captions swapped on one
template are found so). Where both images have words read in them, a hit whose words share too
little is another claim on the same picture, not a repost of the fact-checked one.

The words are compared as OCR leaves them: case, accents' forms and punctuation ignored, by the
character trigrams of their letters and digits, as the share of the shorter text's trigrams the
other has (a crop that cut some words, or a watermark that added some, keeps the rest). Pure.
"""

from __future__ import annotations

import unicodedata

# Fewer letters and digits than this in either image: too few words to tell (a photo's noise,
# a watermark alone), so the picture decides as before.
MIN_CHARS = 16


def _grams(text: str) -> set[str] | None:
    kept = "".join(c if c.isalnum() else " " for c in unicodedata.normalize("NFKC", text).casefold())
    words = kept.split()
    if sum(len(w) for w in words) < MIN_CHARS:
        return None
    joined = f" {' '.join(words)} "
    return {joined[i : i + 3] for i in range(len(joined) - 2)}


def words_overlap(a: str | None, b: str | None) -> float | None:
    """The share of the shorter text's trigrams found in the other's (0-1); None when either
    has fewer than :data:`MIN_CHARS` letters and digits (or none was read)."""
    if not a or not b:
        return None
    first, second = _grams(a), _grams(b)
    if first is None or second is None:
        return None
    return len(first & second) / min(len(first), len(second))


def other_words(post_text: str | None, fact_check_text: str | None, cut: float) -> bool:
    """True when both images have words enough to tell and they share less than ``cut``."""
    overlap = words_overlap(post_text, fact_check_text)
    return overlap is not None and overlap < cut
