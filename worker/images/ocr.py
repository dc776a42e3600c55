"""Text in images (a meme's caption, a screenshot's headline), read by Tesseract.

Tesseract is Debian's ``tesseract-ocr`` with its language data (``tesseract-ocr-spa`` and so on),
run as a subprocess: the image goes in as a freshly encoded PNG of the decoded pixels (never the
original bytes), the words come back as TSV with a confidence each, and the process is killed at
``timeout_s``. Words below ``min_word_confidence``, and "words" with no letter or digit (a
border read as ``|``), are dropped; the text's confidence is the mean
of the words kept, weighted by length. An image larger than ``max_side`` pixels is scaled down
first (OCR time grows with the area; captions stay legible). A failure is no text, never an error
for the post.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcrText:
    text: str
    confidence: float


def tesseract_languages(binary: str = "tesseract") -> set[str]:
    """The language data installed for Tesseract (empty when Tesseract is not installed)."""
    path = shutil.which(binary)
    if path is None:
        return set()
    done = subprocess.run([path, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    return {line.strip() for line in done.stdout.splitlines()[1:] if line.strip()}


class Tesseract:
    """Reads the text in RGB pixels with Tesseract's ``langs`` (e.g. ``eng+spa+fra+deu+por``)."""

    def __init__(
        self,
        langs: str,
        *,
        timeout_s: float = 10.0,
        max_side: int = 2_000,
        min_word_confidence: float = 60.0,
        max_chars: int = 2_000,
        binary: str = "tesseract",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError("Tesseract is not installed (Debian: apt-get install tesseract-ocr)")
        missing = set(langs.split("+")) - tesseract_languages(path)
        if missing:
            raise RuntimeError(f"Tesseract has no data for {', '.join(sorted(missing))} (Debian: tesseract-ocr-<lang>)")
        self.path = path
        # One thread per process: images are read side by side instead, and Tesseract's OpenMP
        # threads on a small machine cost more than they give (0.59 s an image instead of 1.26).
        self.env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        self.langs = langs
        self.timeout_s = timeout_s
        self.max_side = max_side
        self.min_word_confidence = min_word_confidence
        self.max_chars = max_chars

    def read(self, pixels: np.ndarray) -> OcrText | None:
        """The text in the image, or None when it has none (or Tesseract failed or took too long)."""
        from PIL import Image

        image = Image.fromarray(pixels)
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side))
        png = io.BytesIO()
        image.save(png, "PNG")
        try:
            done = subprocess.run(
                [self.path, "stdin", "stdout", "-l", self.langs, "--psm", "3", "tsv"],
                input=png.getvalue(),
                env=self.env,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("OCR took longer than %.0f s; the image is matched without its text", self.timeout_s)
            return None
        if done.returncode != 0:
            log.warning("OCR failed: %s", done.stderr.decode(errors="replace")[:200])
            return None
        return self._text(done.stdout.decode("utf-8", errors="replace"))

    def _text(self, tsv: str) -> OcrText | None:
        lines: dict[tuple[str, ...], list[str]] = {}
        weights = total = 0.0
        for row in tsv.splitlines()[1:]:
            cells = row.split("\t")
            if len(cells) < 12 or cells[0] != "5" or not cells[11].strip():
                continue
            confidence = float(cells[10])
            if confidence < self.min_word_confidence:
                continue
            word = cells[11].strip()
            if not any(ch.isalnum() for ch in word):  # a border or a smudge read as "|" or "—"
                continue
            lines.setdefault(tuple(cells[1:5]), []).append(word)
            weights += len(word)
            total += confidence * len(word)
        text = "\n".join(" ".join(words) for words in lines.values())[: self.max_chars]
        if not text:
            return None
        return OcrText(text, round(total / weights, 1))
