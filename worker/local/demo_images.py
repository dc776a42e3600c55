"""The demo's images, drawn at run time (nothing shipped, nothing licensed): the photo a demo
fact-check debunks, a repost of it (cropped 5% a side, smaller, recompressed, watermarked: PDQ
misses it, its keypoints find it), a meme whose caption is a
demo claim in Spanish, and an unrelated photo the worker must not match."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from worker.wire import FactCheck, ImageRef

PHOTO_FACT_CHECK = "fc-en-010"  # "Photo of a shark swimming on a flooded highway is fake"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _scene(seed: int, size: tuple[int, int] = (960, 640)) -> Image.Image:
    """A photo-like picture: a sky-to-road gradient and soft shapes, distinct per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(y * rng.uniform(0.1, 0.3) + x * rng.uniform(0, 0.1) + rng.uniform(0, 200)) % 256] * 3, -1)
    image = Image.fromarray((base * rng.uniform(0.6, 1.0, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 60))
        box = [x0, y0, x0 + int(rng.integers(80, 360)), y0 + int(rng.integers(40, 200))]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(3))


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _inline(data: bytes, alt: str | None = None) -> dict[str, Any]:
    return {"data": base64.b64encode(data).decode(), **({"alt": alt} if alt else {})}


def _meme(text: str, seed: int) -> bytes:
    image = _scene(seed, (900, 300))
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 40) if _has_font() else ImageFont.load_default(40)
    box = draw.multiline_textbbox((40, 40), text, font=font)
    draw.rectangle((box[0] - 16, box[1] - 16, box[2] + 16, box[3] + 16), fill=(0, 0, 0))
    draw.multiline_text((40, 40), text, font=font, fill=(255, 255, 255))
    return _jpeg(image)


def _has_font() -> bool:
    from pathlib import Path

    return Path(FONT).is_file()


def with_demo_images(fact_checks: list[FactCheck]) -> list[FactCheck]:
    """The demo's fact-checks, the shark photo's one carrying the photo it debunks."""
    photo = ImageRef.model_validate(_inline(_jpeg(_scene(10)), alt="a shark on a flooded highway"))
    return [fc.model_copy(update={"images": [photo]}) if fc.id == PHOTO_FACT_CHECK else fc for fc in fact_checks]


def demo_image_posts() -> list[dict[str, Any]]:
    """Three posts with images: a repost of the debunked photo, a Spanish meme, an unrelated photo."""
    repost = _scene(10).crop((48, 32, 912, 608)).resize((640, 427))
    ImageDraw.Draw(repost).text((14, 400), "@stormchaser_99", fill=(255, 255, 255))
    return [
        {
            "id": "p-img-1",
            "text": "this is happening right now, stay safe everyone",
            "platform": "facebook",
            "images": [_inline(_jpeg(repost, quality=60))],
            "meta": {"expected_fact_check_id": PHOTO_FACT_CHECK},
        },
        {
            "id": "p-img-2",
            "text": "jajaja mirad esto",
            "platform": "instagram",
            "images": [_inline(_meme("Las antenas 5G propagan\nel coronavirus", 41))],
            "meta": {"expected_fact_check_id": "fc-es-003"},
        },
        {
            "id": "p-img-3",
            "text": "sunset from my balcony tonight",
            "platform": "instagram",
            "images": [_inline(_jpeg(_scene(77)))],
        },
    ]
