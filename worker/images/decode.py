"""Untrusted bytes into pixels, or a clear refusal.

What an image is is read from its first bytes (JPEG, PNG, GIF, WebP; nothing else is opened),
never from a header or a file name. Pillow reads only the header before the pixel count is
checked against ``max_pixels``, so a decompression bomb (a few kilobytes that decode to
gigapixels) is refused before any pixel is decoded; Pillow's own bomb check stays on behind it.
An animated image is read at its first frame. The pixels come back as RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np

from worker.images.fetch import ImageRefused

# What the first bytes of each accepted format are (Pillow's format name: its magic).
MAGIC = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "WEBP": (b"RIFF",),
}


def sniff(data: bytes) -> str:
    """The image format of ``data`` from its first bytes, or :class:`ImageRefused`."""
    for name, magics in MAGIC.items():
        if any(data.startswith(m) for m in magics) and (name != "WEBP" or data[8:12] == b"WEBP"):
            return name
    raise ImageRefused("not_an_image", "not a JPEG, PNG, GIF or WebP image")


def inline_bytes(data: str, max_bytes: int) -> bytes:
    """A post's inline image (base64) as bytes, bounded before it is decoded."""
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise ImageRefused("too_large", f"inline image over {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRefused("bad_data", "inline image is not valid base64") from exc


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """RGB pixels (height x width x 3, uint8) of ``data``, or :class:`ImageRefused`."""
    from PIL import Image

    kind = sniff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise ImageRefused("too_many_pixels", f"{width}x{height} (at most {max_pixels} pixels)")
            image.seek(0)
            rgb = image.convert("RGB")
            rgb.load()
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_many_pixels", str(exc)[:200]) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what Pillow raises on broken files
        raise ImageRefused("broken_image", f"{kind}: {str(exc)[:200]}") from exc
    return np.asarray(rgb, dtype=np.uint8)
