"""Tiny random sentence-transformers models built in-process (no download), for tests.

``build_tiny_bert`` is the fast general-purpose one. ``build_tiny_gemma2`` mirrors the
reference production model's format: a Gemma2 decoder, last-token pooling with the prompt
included, the seed's ``<instruct>...\\n<query>`` query prompt, and more than 2,000
dimensions so that the ``halfvec`` index path runs.
"""

from __future__ import annotations

import json
from pathlib import Path

SEED_QUERY_PROMPT = (
    "<instruct>Given a social media post as a query, retrieve fact checks that verify or debunk the post.\n<query>"
)

_SENTENCES = [
    "5G towers spread the coronavirus",
    "drinking bleach cures covid",
    "vaccines cause autism",
    "the moon landing was faked",
    "garlic protects against the virus",
    "masks cause oxygen deficiency",
    "the earth is flat",
    "chemtrails are poisoning us",
    "a shark swims on the flooded highway",
    "la vacuna tiene grafeno",
    "le vaccin modifie l'ADN",
    "die Impfung verändert das Erbgut",
    "given a social media post as a query retrieve fact checks that verify or debunk the post",
    "instruct query",
    "hello world this is a post about nothing at all",
    "election ballots were stuffed",
] * 20


def _train_tokenizer(kind: str) -> object:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        )
        # The trainer breaks ties between pieces of equal frequency in a per-process order, so
        # each build is another random model: a test must not rest on one build's cosines between
        # different texts (measured: 0.86-0.94 for two unrelated claims across builds).
        tok.train_from_iterator(_SENTENCES, trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        return tok
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<instruct>", "<query>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_SENTENCES, trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    # Gemma-style: BOS in front and, as bge-multilingual-gemma2 does for last-token pooling, EOS at the end.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 64-dim BERT + mean pooling + Normalize, saved as a sentence-transformers directory."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    hf_dir = directory / "hf"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer("wordpiece"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(64, "mean"), Normalize()], device="cpu")
    out = directory / "tiny-bert"
    model.save(str(out))
    return out


def build_tiny_gemma2(directory: Path, hidden_size: int = 2304, seed: int = 0) -> Path:
    """A Gemma2 decoder with the seed's prompt format and last-token pooling, ``hidden_size`` dims."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    hf_dir = directory / "hf-gemma2"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer("bpe"),
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        additional_special_tokens=["<instruct>", "<query>"],
        model_max_length=512,
        padding_side="left",
    )
    config = Gemma2Config(
        vocab_size=tokenizer.vocab_size + len(tokenizer.get_added_vocab()),
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        sliding_window=256,
    )
    Gemma2Model(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=512)
    model = SentenceTransformer(
        modules=[transformer, Pooling(hidden_size, "lasttoken", include_prompt=True), Normalize()],
        prompts={"query": SEED_QUERY_PROMPT, "document": ""},
        device="cpu",
    )
    out = directory / "tiny-gemma2"
    model.save(str(out))
    # The saved config is what production reads: check the prompt really landed there.
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == SEED_QUERY_PROMPT
    return out
