"""Document vectors kept on disk between evaluations of one model on one corpus.

Why it exists: ``factmatch eval`` embeds the whole labelled corpus every run, and people run it
again and again on the same corpus with the same model (another mode, another open-set seed,
another decision model, a fusion sweep). The corpus's vectors do not change between those runs:
they are kept under a key made of the model's identity and the options that shape its vectors,
so a second run encodes only its queries and the fact-checks it has not seen.

A cache entry is one directory: ``keys.json`` (SHA-1 of each text) and ``vectors.npy``, written
to a temporary name and renamed, so a reader never sees half a write.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.domain import Encoder, Vectors


def model_identity(model_ref: str, options: str) -> str:
    """A key that changes when the model's files or the vector-shaping ``options`` change.

    A directory is identified by its resolved path and every file's name, size and modification
    time (hashing many gigabytes of weights would cost more than the encoding it saves); a hub
    name by itself.
    """
    digest = hashlib.sha1(options.encode())
    path = Path(model_ref).expanduser()
    if path.is_dir():
        digest.update(str(path.resolve()).encode())
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        digest.update(model_ref.encode())
    return digest.hexdigest()[:20]


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class CachedDocuments:
    """``encoder`` with its document vectors read from and added to ``directory``; queries pass through."""

    def __init__(self, encoder: Encoder, directory: Path) -> None:
        self.encoder = encoder
        self.directory = directory
        self._vectors: dict[str, np.ndarray] | None = None
        self.hits = 0
        self.misses = 0

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self.encoder.encode_queries(texts)

    def encode_documents(self, texts: Sequence[str]) -> Vectors:
        cache = self._load()
        keys = [_text_key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cache}
        self.hits += len(keys) - sum(1 for k in keys if k in missing)
        self.misses += len(missing)
        if missing:
            fresh = self.encoder.encode_documents(list(missing.values()))
            cache.update(zip(missing, np.asarray(fresh, dtype=np.float32), strict=True))
            self._save(cache)
        if not keys:
            return np.zeros((0, self.dimension), np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32, copy=False)

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            keys_file, vectors_file = self.directory / "keys.json", self.directory / "vectors.npy"
            if keys_file.is_file() and vectors_file.is_file():
                try:
                    keys = json.loads(keys_file.read_text())
                    vectors = np.load(vectors_file)
                    if len(keys) == len(vectors) and vectors.shape[1:] == (self.dimension,):
                        self._vectors = dict(zip(keys, vectors, strict=True))
                except (OSError, ValueError):
                    self._vectors = {}  # unreadable: encode again, and write it anew
        return self._vectors

    def _save(self, cache: dict[str, np.ndarray]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        keys = list(cache)
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".npy", delete=False) as out:
            np.save(out, np.stack([cache[k] for k in keys]))
        tmp_keys = self.directory / f".keys-{os.getpid()}.json"
        tmp_keys.write_text(json.dumps(keys))
        # vectors first, keys last: a reader pairs them only when their lengths agree.
        os.replace(out.name, self.directory / "vectors.npy")
        os.replace(tmp_keys, self.directory / "keys.json")
