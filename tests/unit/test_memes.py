"""Labelled posts rendered as memes for calibration (worker/images/memes.py): pure logic, no OCR."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.images.memes import meme, read_as_memes, seed_of
from worker.images.ocr import OcrText

pytestmark = pytest.mark.unit


def test_a_posts_meme_is_drawn_from_its_id_and_every_post_is_read_once_in_order() -> None:
    first = meme("5G towers spread the virus", seed_of("p1"))
    assert first == meme("5G towers spread the virus", seed_of("p1")), "a rerun renders the same image"
    assert first != meme("5G towers spread the virus", seed_of("p2"))
    image = Image.open(io.BytesIO(first))
    assert image.format == "JPEG" and min(image.size) > 80

    seen: list[tuple[int, ...]] = []

    class Ocr:
        def read(self, pixels: np.ndarray) -> OcrText | None:
            seen.append(pixels.shape)
            return OcrText(f"read {pixels.ndim}", 90.0) if len(seen) % 2 else None

    texts = {f"p{i}": f"claim number {i}" for i in range(5)}
    out = read_as_memes(texts, Ocr(), 50_000_000, threads=2)
    assert list(out) == list(texts) and set(out.values()) == {"read 3", ""}
    assert len(seen) == 5 and all(len(shape) == 3 for shape in seen)
