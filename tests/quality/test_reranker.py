"""The version's reranker: trained from its encoder, and distilled into fewer layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.rerank import Pair, cross_encoder, fit_reranker, train_reranker
from worker.retrieval.rerank import RERANKER_DIR, CrossEncoderReranker, load_reranker
from worker.settings import Settings

CLAIMS = [
    "5G towers spread the coronavirus",
    "vaccines cause autism in children",
    "the moon landing was staged in a studio",
    "drinking bleach cures the virus",
    "the election was stolen by voting machines",
    "climate change is a hoax invented for taxes",
]


def _pairs() -> list[Pair]:
    """Each claim reposted, with its own fact-check (right) and two others (wrong)."""
    pairs: list[Pair] = []
    for i, claim in enumerate(CLAIMS):
        post = f"people say {claim}!!"
        pairs.append((post, f"Fact check: {claim}", 1.0))
        pairs += [(post, f"Fact check: {CLAIMS[(i + k) % len(CLAIMS)]}", 0.0) for k in (1, 3)]
    return pairs


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


class Teacher:
    """A trained cross-encoder's part in distillation: a logit per pair (here +2 or -2 by the
    fact-check, which a one-layer student can learn in a few steps)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.asked += pairs
        return np.asarray([2.0 if next(i for i, c in enumerate(CLAIMS) if c in d) % 2 else -2.0 for _, d in pairs])


def test_a_shallower_reranker_learns_its_teachers_logits(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings()
    pairs = _pairs()
    texts = [(p, d) for p, d, _ in pairs]
    teacher = Teacher()
    target = teacher.score(texts)

    untrained = cross_encoder(str(tiny_model), 128, layers=1)
    before = np.asarray(untrained.predict(texts, activation_fn=lambda x: x, show_progress_bar=False)).reshape(-1)
    train_reranker(
        settings,
        str(tiny_model),
        pairs,
        tmp_path / "student",
        epochs=20,
        batch_size=8,
        learning_rate=5e-3,
        layers=1,
        teacher=teacher,
    )
    student = CrossEncoderReranker(str(tmp_path / "student" / RERANKER_DIR))
    config = json.loads((tmp_path / "student" / RERANKER_DIR / "config.json").read_text())

    assert config["num_hidden_layers"] == 1
    assert sorted(teacher.asked) == sorted(texts * 2)  # the targets are the teacher's, over the same pairs
    assert _mse(student.score(texts), target) < 0.25 * _mse(before, target)


def test_the_trainer_setting_ships_a_distilled_reranker_the_worker_loads(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(train_reranker_layers=1, train_reranker_distil_epochs=1)
    fit_reranker(settings, str(tiny_model), _pairs(), tmp_path, heldout=_pairs()[:6])

    reranker = load_reranker(str(tmp_path))
    assert reranker is not None
    assert reranker.model.model.config.num_hidden_layers == 1
    assert reranker.score([("a post", "a fact-check")]).shape == (1,)


def test_a_student_as_deep_as_its_encoder_is_refused(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="has 2 layers"):
        cross_encoder(str(tiny_model), 128, layers=2)


def test_the_workers_reranker_keeps_bf16_copies_and_scores_as_autocast_did(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from worker.configs import reranker_loader
    from worker.core import encoder as encoder_module

    fit_reranker(
        Settings(train_reranker_layers=1, train_reranker_distil_epochs=1),
        str(tiny_model),
        _pairs(),
        tmp_path,
        heldout=_pairs()[:6],
    )
    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: True)  # emulated where there is none: same sums
    loader = reranker_loader(Settings(rerank_top_n=5, device="cpu"))
    assert loader is not None
    reranker = loader(str(tmp_path))
    casts = load_reranker(str(tmp_path), "cpu", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert isinstance(reranker, CrossEncoderReranker) and casts is not None
    assert any("forward" in vars(m) for m in reranker.model.modules())  # the copies are in use
    texts = [(p, d) for p, d, _ in _pairs()]
    np.testing.assert_array_equal(reranker.score(texts), casts.score(texts))
    assert not np.array_equal(reranker.score(texts), load_reranker(str(tmp_path)).score(texts))  # bf16 indeed
