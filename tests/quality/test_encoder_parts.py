"""A CPU encoder call as single-threaded parts at once: the same vectors, in order, and no other
thread's torch thread count changed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder

TEXTS = [
    "5G towers spread the coronavirus",
    "vaccines cause autism",
    "the moon landing was faked in a studio by the government",
    "garlic protects against the virus",
    "la vacuna tiene grafeno",
    "a shark swims on the flooded highway after the hurricane",
    "the earth is flat",
]


def _count_in_new_thread() -> int:
    import torch

    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return counts[0]


def test_parts_encode_the_same_vectors_in_order_and_leave_the_process_threads_alone(tiny_model: Path) -> None:
    import torch

    before = torch.get_num_threads()
    whole = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", cpu_parts=1))
    split = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", cpu_parts=3))

    assert split._parts is not None and whole._parts is None
    assert split._parts.thread_counts() == [1, 1, 1]
    assert torch.get_num_threads() == before
    assert _count_in_new_thread() == before

    for texts in (TEXTS, TEXTS[:2], TEXTS[:1]):
        # Posts under bf16 autocast where the CPU has it: other padding, other rounding.
        np.testing.assert_allclose(split.encode_queries(texts), whole.encode_queries(texts), atol=1e-4)
        np.testing.assert_allclose(split.encode_documents(texts), whole.encode_documents(texts), atol=1e-6)


def test_a_call_parts_tokenize_one_at_a_time_and_run_at_once(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_transformers import SentenceTransformer

    inside, most = 0, 0
    seen: set[str] = set()
    guard = threading.Lock()
    preprocess, forward = SentenceTransformer.preprocess, SentenceTransformer.forward

    def counting(self: SentenceTransformer, *args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # long enough for the other part to come in, were it let in
        try:
            return preprocess(self, *args, **kwargs)
        finally:
            with guard:
                inside -= 1

    def naming(self: SentenceTransformer, *args: Any, **kwargs: Any) -> Any:
        seen.add(threading.current_thread().name)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "preprocess", counting)
    monkeypatch.setattr(SentenceTransformer, "forward", naming)
    split = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", cpu_parts=2))
    split.encode_queries(TEXTS * 8)

    assert most == 1
    assert len({name for name in seen if name.startswith("encoder-part")}) == 2


def test_a_dropped_encoder_takes_its_part_threads_with_it(tiny_model: Path) -> None:
    import gc

    split = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", cpu_parts=2))
    split.encode_queries(TEXTS)
    assert split._parts is not None
    threads = list(split._parts.pool._threads)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)

    del split
    gc.collect()
    for t in threads:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
