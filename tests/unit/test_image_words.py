"""Unit tier: whether two images' words say the same (the guard on a same-picture hit)."""

from __future__ import annotations

import pytest

from worker.images.words import other_words, words_overlap

pytestmark = pytest.mark.unit

CLAIM = "VACCINES CONTAIN MICROCHIPS THAT TRACK WHERE YOU GO"


def test_a_repost_read_again_keeps_its_words_through_ocr_noise_crops_and_watermarks() -> None:
    assert words_overlap(CLAIM, CLAIM) == 1.0
    # Case, punctuation and a misread letter or two, as OCR leaves them.
    assert words_overlap(CLAIM, "Vaccines contain rnicrochips, that track where you go!") >= 0.8  # type: ignore[operator]
    # A crop that cut the last words, a watermark that added some: the shorter text is inside the other.
    assert words_overlap(CLAIM, "VACCINES CONTAIN MICROCHIPS THAT TRA") >= 0.9  # type: ignore[operator]
    assert words_overlap(CLAIM, CLAIM + " @reposter via t.me/x") == 1.0


def test_another_claim_on_the_same_picture_shares_few_words() -> None:
    other = "DRINKING HOT WATER CURES THE VIRUS IN TWO DAYS"
    overlap = words_overlap(CLAIM, other)
    assert overlap is not None and overlap < 0.3
    assert other_words(CLAIM, other, 0.5)
    assert not other_words(CLAIM, CLAIM.lower(), 0.5)


def test_too_few_words_on_either_side_leave_the_picture_to_decide() -> None:
    for short in (None, "", "lol", "@user 2021", "| — ~"):
        assert words_overlap(CLAIM, short) is None
        assert words_overlap(short, CLAIM) is None
        assert not other_words(short, CLAIM, 0.5) and not other_words(CLAIM, short, 0.5)
