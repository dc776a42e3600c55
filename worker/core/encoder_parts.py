"""An encoder call on CPU as parts run at once, each on its share of torch's threads (one on 2 cores).

torch splits every matrix product of a call over its intra-op threads and waits for the slowest:
when another process takes a core for a moment (Postgres searching the previous call's posts, the
worker's own event loop), every product of the call waits for it. Measured on 2 cores
(docs/measurements.md, "The encoder's CPU arithmetic"): 98.9 posts/s for one call on 2 threads
against 106.8 for the same calls as 2 single-threaded halves, and with a third of a core busy
elsewhere 58-60 against 76-80. So a CPU encoder splits each call into ``parts`` slices (every
``parts``-th text: calls come sorted by length, so the slices cost alike), encodes them at once,
and puts the vectors back in order. Where there are more cores than parts (by default at most
``MAX_AUTO_PARTS``: every part's Python dispatches its operations under the one interpreter lock),
each part runs on its share of torch's threads; beyond 2 cores this is unmeasured.

Thread counts: ``torch.set_num_threads`` sets the calling thread's OpenMP threads and the default
that threads take on their first parallel operation. Each part thread starts from the default,
sets itself to its share, and once they all have, the constructing thread gives the process back
its own count: nothing else in the process (a trainer in the same process, a reranker) changes.

Tokenizing stays one at a time (a fast tokenizer is one Rust object; its settings are shared by
every call), the model's forward runs in the parts at once (inference reads the weights only).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from worker.domain import Vectors

MAX_AUTO_PARTS = 4


class EncoderParts:
    """``parts`` torch threads that encode the slices of a call at once, each on its share of the
    process's intra-op threads (one each where there are as many parts as threads)."""

    def __init__(self, parts: int, *, torch_threads: bool = True) -> None:
        if parts < 2:
            raise ValueError("an encoder call is split into two parts or more")
        self.parts = parts
        if not torch_threads:  # a runtime that shares its threads out itself (ONNX Runtime's session)
            self.pool = ThreadPoolExecutor(parts, thread_name_prefix="encoder-part")
            weakref.finalize(self, self.pool.shutdown, wait=False)
            return
        import torch

        started = threading.Barrier(parts)
        own = torch.get_num_threads()
        # The process's threads shared out: one each where parts match the cores (measured on 2).
        each = max(1, own // parts)

        def part_threads() -> None:
            torch.get_num_threads()  # this thread's pool starts from the process's count...
            torch.set_num_threads(each)  # ...and is its share from now on

        self.pool = ThreadPoolExecutor(parts, thread_name_prefix="encoder-part", initializer=part_threads)
        # Every thread started and set (each waits for the others, so none serves two), then the
        # process's own count back as the default and for this thread.
        list(self.pool.map(lambda _: started.wait(), range(parts)))
        torch.set_num_threads(own)
        # A retired model version's encoder takes its threads with it.
        weakref.finalize(self, self.pool.shutdown, wait=False)

    def thread_counts(self) -> list[int]:
        """Each part thread's torch intra-op threads (for tests and logs)."""
        import torch

        started = threading.Barrier(self.parts)

        def count(_: int) -> int:
            started.wait()
            return int(torch.get_num_threads())

        return list(self.pool.map(count, range(self.parts)))

    def encode(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], Any],
        arithmetic: Callable[[], contextlib.AbstractContextManager[object]],
    ) -> Vectors:
        """``encode`` over the slices at once, inside ``arithmetic`` in each part (autocast is per
        thread), the rows back in the order of ``texts``; a single text in the calling thread, on
        all of its threads."""
        slices = [list(texts[k :: self.parts]) for k in range(min(self.parts, len(texts)))]

        def part(chunk: list[str]) -> Vectors:
            with arithmetic():
                vectors: Vectors = np.asarray(encode(chunk), dtype=np.float32)
            return vectors

        if len(slices) == 1:
            return part(slices[0])
        encoded = list(self.pool.map(part, slices))
        out = np.empty((len(texts), encoded[0].shape[1]), dtype=np.float32)
        for k, rows in enumerate(encoded):
            out[k :: self.parts] = rows
        return out


def split_calls(requested: int, threads: int, *, torch_threads: bool = True) -> EncoderParts | None:
    """The parts a CPU encoder's calls run as: ``requested`` (0: the process's ``threads``, at most
    ``MAX_AUTO_PARTS``), or None where that is a single part."""
    parts = requested or min(threads, MAX_AUTO_PARTS)
    return EncoderParts(parts, torch_threads=torch_threads) if parts > 1 else None


def locked(function: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    """``function`` called by one thread at a time."""

    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return function(*args, **kwargs)

    return call
