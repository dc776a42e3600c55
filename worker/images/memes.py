"""Text rendered as memes: how a version learns to decide the text it will read in posts' images.

Labelled posts say what posts claim, not how their memes look, so calibration renders each one as
a meme (wrapped words on a generated photo's caption box, a light screenshot or a dark card; font,
size, JPEG quality and scale drawn from a seed) and reads it back with the worker's own OCR: the
decision model for read text is fitted on what was read (docs/measurements.md: on CheckThat! 2020
test, match recall on read text 0.369 with the typed model, 0.569 with one fitted so, at the same
precision). The same renderer builds the benchmarks' memes.
"""

from __future__ import annotations

import io
import logging
import textwrap
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from worker.images.decode import decode
from worker.images.ocr import OcrText

log = logging.getLogger(__name__)

FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
)


def font(seed: int, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The seed's font of :data:`FONTS` (Debian's DejaVu and Liberation), else Pillow's own."""
    path = FONTS[seed % len(FONTS)]
    return ImageFont.truetype(path, size) if Path(path).is_file() else ImageFont.load_default(size)


def photo(seed: int) -> Image.Image:
    """A distinct synthetic photo: a gradient, soft shapes, a blur; size and aspect vary by seed."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(480, 1280)), int(rng.integers(360, 960))
    y, x = np.mgrid[0:h, 0:w]
    channels = [(x * rng.uniform(0.05, 0.4) + y * rng.uniform(0.05, 0.4) + rng.uniform(0, 255)) % 256 for _ in range(3)]
    image = Image.fromarray(np.stack(channels, -1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 20))):
        x0, y0 = int(rng.integers(0, int(w * 0.9))), int(rng.integers(0, int(h * 0.9)))
        box = [x0, y0, x0 + int(rng.integers(w // 12, w // 2)), y0 + int(rng.integers(h // 10, h // 2))]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=fill)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 5))))


def meme(claim: str, seed: int) -> bytes:
    """A claim rendered as a meme: wrapped, on a photo, a plain colour or a dark box; JPEG."""
    rng = np.random.default_rng(seed)
    face = font(seed, int(rng.integers(24, 42)))
    lines = textwrap.wrap(claim, width=int(rng.integers(28, 46)))[:8]
    text = "\n".join(lines)
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    left, top, right, bottom = (int(v) for v in probe.multiline_textbbox((0, 0), text, font=face, spacing=8))
    w, h = right - left + 80, bottom - top + 80
    style = seed % 3
    if style == 0:  # caption box on a photo
        image = photo(seed).resize((w, h))
        draw = ImageDraw.Draw(image)
        draw.rectangle((20, 20, w - 20, h - 20), fill=(0, 0, 0))
        colour: tuple[int, ...] = (255, 255, 255)
    elif style == 1:  # plain light background, dark text (a screenshot)
        image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(215, 256, 3)))
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(0, 60, 3))
    else:  # dark background, light text
        image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 70, 3)))
        draw = ImageDraw.Draw(image)
        colour = (255, 255, int(rng.integers(150, 256)))
    draw.multiline_text((40 - left, 40 - top), text, font=face, fill=colour, spacing=8)
    if seed % 4 == 3:
        image = image.resize((w * 3 // 4, h * 3 // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=int(rng.integers(55, 90)))
    return out.getvalue()


def seed_of(post_id: str) -> int:
    """A post's meme is drawn from its id, so a rerun renders and reads the same image."""
    return zlib.crc32(post_id.encode())


class Ocr(Protocol):
    def read(self, pixels: np.ndarray) -> OcrText | None: ...


def read_as_memes(texts: Mapping[str, str], ocr: Ocr, max_pixels: int, *, threads: int = 2) -> dict[str, str]:
    """Each post (id -> text) rendered as its meme, decoded as a post's image is, and read back by
    ``ocr`` ("" where it found nothing), ``threads`` at a time (one OCR process a core, as the
    worker runs it); progress logged every 100 posts."""
    ids = list(texts)

    def one(post_id: str) -> str:
        found = ocr.read(decode(meme(texts[post_id], seed_of(post_id)), max_pixels))
        return found.text if found else ""

    out: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for done, (post_id, found) in enumerate(zip(ids, pool.map(one, ids), strict=True), 1):
            out[post_id] = found
            if done % 100 == 0 or done == len(ids):
                log.info("posts rendered as memes and read: %d/%d", done, len(ids))
    return out
