"""The reference model's scale on CPU: LoRA on a Gemma2-architecture encoder, torchrun, the memory plan."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import consume_until, produce, settings_env
from tests.integration.test_trainer import write_labelled
from tests.integration.test_worker import bodies, post, seed_corpus
from trainer.job import run_training
from trainer.lora import ADAPTER_DIR
from trainer.plan import GIB, plan_memory
from worker.adapter.runtime import running
from worker.settings import Settings
from worker.storage import Store

TEXTS = ["5G towers spread the coronavirus", "vaccines cause autism", "la vacuna tiene grafeno"]


def _encode(path: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    return np.asarray(model.encode(texts, prompt_name="query", normalize_embeddings=True))


async def test_lora_fine_tune_of_a_gemma2_encoder_trains_gates_promotes_and_serves(
    kafka: str, database_url: str, make_settings: Any, tiny_gemma: Path, tmp_path: Path
) -> None:
    from worker.adapter.topics import ensure_topics

    settings = make_settings(
        kafka_bootstrap=kafka,
        database_url=database_url,
        model=str(tiny_gemma),
        model_version="gemma2-base",
        model_store=tmp_path / "store",
        train_method="lora",
        lora_rank=4,
        lora_target_modules="q_proj,v_proj,gate_proj",
        train_gradient_checkpointing=True,
        train_max_steps=3,
        train_batch_size=8,
        train_mini_batch_size=4,
        train_learning_rate=5e-3,
        gate_margin=-1.0,
        model_poll_interval_s=1.0,
    )
    await ensure_topics(settings)
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    async with running(settings) as runtime:
        outcome = await run_training(
            runtime.store, settings, train_files=[(queries, qrels)], use_feedback=False, promote_if_better=True
        )
        assert outcome.status == "active", outcome.reason
        for _ in range(100):
            if runtime.models.current().version == outcome.version:
                break
            await asyncio.sleep(0.1)
        assert runtime.models.current().version == outcome.version
        await produce(kafka, settings.topic_posts, [post(1, TEXTS[0])])
        records = await consume_until(kafka, [settings.topic_matches], lambda rs: len(rs) >= 1, timeout_s=60)
        registered = await runtime.store.registry.get_version(outcome.version)
    result = bodies(records, settings.topic_matches)[0]
    assert result["model_version"] == outcome.version

    # The registry says how it was trained.
    assert registered is not None and registered.base == str(tiny_gemma)
    training = registered.metrics["training"]
    assert training["method"] == "lora" and training["gradient_checkpointing"] is True
    assert training["lora"] == {
        "rank": 4,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj", "gate_proj"],
    }

    # Served form (merged) == base + adapter, and training moved the weights.
    merged = _encode(outcome.path, TEXTS)
    adapter = _encode(outcome.path / ADAPTER_DIR, TEXTS)
    base = _encode(tiny_gemma, TEXTS)
    assert merged.shape[1] == 2304
    assert np.abs(merged - adapter).max() < 1e-4
    assert np.abs(merged - base).max() > 1e-3, "LoRA training left the embeddings unchanged"
    assert not (outcome.path / ".checkpoints").exists()
    assert json.loads((outcome.path / ADAPTER_DIR / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.parametrize(
    ("method", "fsdp", "parallel"), [("lora", False, "ddp"), ("full", True, "fsdp")], ids=["lora-ddp", "full-fsdp"]
)
async def test_torchrun_two_cpu_processes_train_one_version_registered_by_rank_zero(
    database_url: str, make_settings: Any, tiny_gemma: Path, tmp_path: Path, method: str, fsdp: bool, parallel: str
) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    factmatch = shutil.which("factmatch", path=str(Path(sys.executable).parent))
    assert torchrun and factmatch
    settings = make_settings(
        database_url=database_url,
        model=str(tiny_gemma),
        model_store=tmp_path / "store",
        train_method=method,
        train_fsdp=fsdp,
        lora_rank=4,
        train_max_steps=2,
        train_batch_size=4,
        train_mini_batch_size=2,
        metrics_port=0,
    )
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    env = {**settings_env(settings), "OMP_NUM_THREADS": "1"}
    # gloo on CPU: the same code path as NCCL on GPUs, minus the device.
    command = [torchrun, "--nproc-per-node", "2", "--standalone", "--no-python", factmatch, "train"]
    command += ["--queries", str(queries), "--qrels", str(qrels), "--no-feedback", "--version", "gemma2-ddp"]
    log = tmp_path / "torchrun.log"
    with log.open("w") as sink:
        try:
            done = await asyncio.to_thread(
                subprocess.run, command, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=300, cwd=tmp_path
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"torchrun did not finish in 300 s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert done.returncode == 0, output[-4000:]

    store = Store(database_url)
    await store.open()
    try:
        versions = await store.registry.list_versions()
    finally:
        await store.close()
    assert [v.version for v in versions] == ["gemma2-ddp"], "exactly one version, registered once (rank 0)"
    training = versions[0].metrics["training"]
    assert training["world_size"] == 2 and training["parallel"] == parallel and training["method"] == method
    assert training["gather_across_devices"] is True
    assert (Path(versions[0].path) / "model.safetensors").is_file()
    assert (Path(versions[0].path) / ADAPTER_DIR / "adapter_config.json").is_file() == (method == "lora")
    # The saved version is a whole model any tool loads (FSDP's shards gathered, LoRA merged).
    assert _encode(Path(versions[0].path), TEXTS).shape == (3, 2304)
    # Every matrix saved whole and moved a little by two steps: not FSDP shards, not weights
    # lost in sharding and re-initialised at load.
    from safetensors.torch import load_file

    base = load_file(str(tiny_gemma / "model.safetensors"))
    trained = load_file(str(Path(versions[0].path) / "model.safetensors"))
    assert set(trained) == set(base)
    moved = {k: float((trained[k] - base[k]).norm() / base[k].norm()) for k in base if base[k].dim() == 2}
    assert all(trained[k].shape == base[k].shape for k in base)
    assert (
        all(v < 0.05 for v in moved.values())
        and min(moved["layers.0.self_attn.q_proj.weight"], moved["layers.0.mlp.down_proj.weight"]) > 0
    ), moved


def test_memory_plan_of_the_reference_model_and_its_refusal() -> None:
    lora = Settings(_env_file=None, train_method="lora", train_gpu_memory_gib=80)  # type: ignore[call-arg]
    plan = plan_memory(lora, "BAAI/bge-multilingual-gemma2")
    assert 9.2e9 < plan.params < 9.3e9  # Gemma2-9B without its LM head
    assert plan.trainable < plan.params / 100
    assert plan.fits and plan.total < 80 * GIB

    full = Settings(_env_file=None, train_gpu_memory_gib=80)  # type: ignore[call-arg]
    single = plan_memory(full, "BAAI/bge-multilingual-gemma2")
    assert not single.fits and single.total > 144 * GIB  # 16 bytes per parameter before activations
    assert "FACTMATCH_TRAIN_METHOD=lora" in single.refusal()
    assert "FACTMATCH_TRAIN_GRADIENT_CHECKPOINTING=true" in single.refusal()

    sharded = Settings(  # type: ignore[call-arg]
        _env_file=None, train_fsdp=True, train_gradient_checkpointing=True, train_gpu_memory_gib=80
    )
    assert plan_memory(sharded, "BAAI/bge-multilingual-gemma2", world_size=8).fits
    checkpointed = plan_memory(sharded, "BAAI/bge-multilingual-gemma2", world_size=8)
    assert checkpointed.parts["activations"] == checkpointed.activations_with_checkpointing


async def test_train_refuses_at_start_up_a_plan_that_cannot_fit(
    database_url: str, make_settings: Any, tiny_gemma: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=database_url, model=str(tiny_gemma), model_store=tmp_path / "s", train_gpu_memory_gib=0.5
    )
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    env = settings_env(settings)
    factmatch = shutil.which("factmatch", path=str(Path(sys.executable).parent))
    assert factmatch
    done = await asyncio.to_thread(
        subprocess.run,
        [factmatch, "train", "--queries", str(queries), "--qrels", str(qrels)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "GiB per device" in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
    assert os.environ.get("FACTMATCH_TRAIN_GPU_MEMORY_GIB") is None


def test_gathered_in_batch_negatives_across_two_ranks_equal_one_process_with_the_whole_batch(
    tiny_gemma: Path, tmp_path: Path
) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun
    script = Path(__file__).with_name("distributed_loss.py")
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(script), str(tiny_gemma)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOSSES "))
    losses = json.loads(line.removeprefix("LOSSES "))
    assert losses["gathered=True"] == pytest.approx(losses["one_process"], abs=1e-5)
    # Without gathering each rank only sees its own 4 candidates: a different (easier) loss.
    assert abs(losses["gathered=False"] - losses["one_process"]) > 1e-2


def test_serving_guards_the_length_and_takes_the_attention_kernel(tiny_gemma: Path, tiny_model: Path) -> None:
    from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder

    with pytest.raises(ValueError, match="exceeds"):
        SentenceTransformerEncoder(str(tiny_gemma), EncoderOptions(device="cpu", max_seq_length=4096))
    gemma = SentenceTransformerEncoder(str(tiny_gemma), EncoderOptions(device="cpu"))
    assert gemma.max_seq_length == 512
    assert gemma.model[0].model.config._attn_implementation == "eager"  # exact soft-capping
    eager = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", attn_implementation="eager"))
    sdpa = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu", attn_implementation="sdpa"))
    assert sdpa.model[0].model.config._attn_implementation == "sdpa"
    texts = [*TEXTS, "a much longer post " * 20]
    cosines = np.sum(eager.encode_queries(texts) * sdpa.encode_queries(texts), axis=1)
    assert cosines.min() > 0.999
