"""Reranking: a cross-encoder reads each post with its top candidates, one pair at a time.

A bi-encoder compares two vectors made apart; a cross-encoder attends across the post and
the fact-check together, which catches what a single vector blurs (negations, numbers, who
said what). It costs one transformer pass per (post, candidate) pair, so it only sees the
fused top ``rerank_top_n``, and its score is one more feature of the decision model rather
than a ranking of its own: the decision weighs it against the retrievers' evidence.

No pretrained reranker can be downloaded here, so the trainer makes one from the version's
own encoder weights (sentence-transformers converts a bi-encoder into a ``CrossEncoder``
with a fresh one-logit head) and trains it on the labelled pairs with hard negatives mined
from the retriever (``trainer/rerank.py``). It lives in the version's directory as
``reranker/``, so it is versioned, rolled out and rolled back with the encoder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RERANKER_DIR = "reranker"


class Reranker(Protocol):
    def score(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float64]:
        """One relevance logit per (post, fact-check text) pair."""
        ...


class CrossEncoderReranker:
    """A cross-encoder's logits, each batch inside ``arithmetic`` (the caller's precision context:
    on a CPU with native bf16, the encoder's autocast; by default none, float32)."""

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 256,
        arithmetic: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(path, device=device, max_length=max_length)
        self.path = path
        self.batch_size = batch_size
        self.arithmetic = arithmetic

    def score(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float64]:
        if not pairs:
            return np.zeros(0)
        # Raw logits: the decision model standardises and weighs them itself.
        with self.arithmetic():
            out = self.model.predict(
                list(pairs), batch_size=self.batch_size, activation_fn=_identity, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float64).reshape(-1)


def _identity(x: object) -> object:
    return x


def reranker_path(version_path: str) -> Path:
    return Path(version_path) / RERANKER_DIR


def load_reranker(
    version_path: str,
    device: str = "cpu",
    arithmetic: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> CrossEncoderReranker | None:
    """The version's reranker, when it was trained with one."""
    path = reranker_path(version_path)
    if not (path / "config.json").is_file():
        return None
    log.info("loading the reranker in %s", path)
    return CrossEncoderReranker(str(path), device=device, arithmetic=arithmetic)
