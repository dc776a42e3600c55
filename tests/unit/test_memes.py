"""Labelled posts rendered as memes for calibration (worker/images/memes.py): pure logic, no OCR."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.images.memes import meme, read_as_memes, seed_of

pytestmark = pytest.mark.unit


def test_a_posts_meme_is_drawn_from_its_id_and_every_post_is_read_once_in_order() -> None:
    first = meme("5G towers spread the virus", seed_of("p1"))
    assert first == meme("5G towers spread the virus", seed_of("p1")), "a rerun renders the same image"
    assert first != meme("5G towers spread the virus", seed_of("p2"))
    image = Image.open(io.BytesIO(first))
    assert image.format == "JPEG" and min(image.size) > 80

    seen: list[bytes] = []

    def read(data: bytes) -> str:
        seen.append(data)
        return f"read {len(data) > 0}"

    done: list[tuple[int, int]] = []
    texts = {f"p{i}": f"claim number {i}" for i in range(5)}
    out = read_as_memes(texts, read, threads=2, progress=lambda n, total: done.append((n, total)))
    assert list(out) == list(texts) and set(out.values()) == {"read True"}
    assert len(seen) == 5 and done[-1] == (5, 5)
