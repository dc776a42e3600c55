"""The composition root: every narrow config and factory built from the one ``Settings``.

Domain modules (retrieval, core, storage) take small frozen configs and know nothing of
``Settings``; this module is the one place that reads settings and builds them, so a new
setting touches :mod:`worker.settings` and the one function here that passes it on. The
worker's runtime, the CLI, the trainer and the demo all build through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from worker.core.decoding import Limits
from worker.core.document_cache import CachedDocuments, model_identity
from worker.core.encoder import (
    EncoderOptions,
    SentenceTransformerEncoder,
    autocast_context,
    keep_low_precision_weights,
    resolve_autocast,
    resolve_device,
)
from worker.core.images import ImageConfig
from worker.core.indexer import CorpusIndexer
from worker.core.pipeline import PipelineConfig
from worker.core.rematch import RematchConfig
from worker.core.retry import RetryPolicy
from worker.core.rollout import Bootstrap, RolloutConfig, ShippedDecision, bootstrap
from worker.core.serving import Loader, ModelManager, version_name_for
from worker.domain import Encoder, ModelVersion, ModeName, Tier
from worker.local.models import default_model_ref
from worker.retrieval.calibrate import CalibrationConfig
from worker.retrieval.modes import FusionConfig
from worker.retrieval.overmatch import OverMatchConfig
from worker.retrieval.rerank import Reranker
from worker.retrieval.retriever import RetrievalConfig
from worker.retrieval.shipped import shipped_decisions
from worker.settings import Settings
from worker.storage import Store, apply_migrations
from worker.wire import FactCheck

if TYPE_CHECKING:
    from worker.images.fetch import FetchPolicy
    from worker.images.ocr import Tesseract
    from worker.images.reader import ImageReader

log = logging.getLogger(__name__)


def fusion_config(settings: Settings, mode: ModeName | None = None) -> FusionConfig:
    return FusionConfig(
        mode or settings.retrieval_mode,
        settings.rrf_k,
        settings.dense_weight,
        settings.lexical_weight,
        settings.language_aware_fusion,
    )


def retrieval_config(settings: Settings, mode: ModeName | None = None) -> RetrievalConfig:
    return RetrievalConfig(
        fusion=fusion_config(settings, mode),
        top_k=settings.top_k,
        min_score=settings.min_score,
        candidates=settings.retrieval_candidates,
        decision_pool=settings.decision_pool,
        publish_untiered=settings.publish_untiered,
        rerank_top_n=settings.rerank_top_n,
    )


def evaluation_config(settings: Settings, top_k: int = 100) -> RetrievalConfig:
    """The serving configuration, ranking deeper (top 100, no cosine floor) so every metric is defined."""
    return RetrievalConfig(
        fusion=fusion_config(settings),
        top_k=top_k,
        min_score=-1.0,
        candidates=max(top_k, settings.retrieval_candidates),
    )


def tier_targets(settings: Settings) -> dict[Tier, float]:
    return {"match": settings.tier_match_precision, "suggestion": settings.tier_suggestion_precision}


def calibration_config(settings: Settings) -> CalibrationConfig:
    budgets: dict[Tier, float] = {}
    if settings.tier_match_false_alarm is not None:
        budgets["match"] = settings.tier_match_false_alarm
    if settings.tier_suggestion_false_alarm is not None:
        budgets["suggestion"] = settings.tier_suggestion_false_alarm
    return CalibrationConfig(
        retrieval_config(settings),
        tier_targets(settings),
        settings.tier_min_support,
        budgets,
        rerank_band=(settings.rerank_band_low, settings.rerank_band_high),
    )


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_record_bytes, settings.max_json_depth, settings.max_post_chars)


def serving_device(settings: Settings) -> str:
    """The device queries are encoded on; the ONNX backend is CPU-only and must start without torch."""
    return "cpu" if settings.backend == "onnx" else resolve_device(settings.device)


def pipeline_config(
    settings: Settings,
    transient: tuple[type[BaseException], ...] = (),
    on_retry: Callable[[str], None] | None = None,
) -> PipelineConfig:
    return PipelineConfig(
        token_budget=settings.token_budget(serving_device(settings)),
        encode_batch_size=settings.encode_batch_size,
        embedding_cache_size=settings.embedding_cache_size,
        result_text_max_chars=settings.result_text_max_chars,
        limits=limits(settings),
        retry=RetryPolicy(
            attempts=settings.retry_attempts,
            initial_s=settings.retry_backoff_initial_s,
            max_s=settings.retry_backoff_max_s,
            transient=RetryPolicy.transient + transient,
            on_retry=on_retry,
        ),
    )


def rematch_config(settings: Settings) -> RematchConfig:
    return RematchConfig(
        window_s=settings.cluster_window_s,
        max_clusters=settings.rematch_max_clusters,
        max_posts=settings.rematch_max_posts,
        encode_batch_size=settings.encode_batch_size,
        result_text_max_chars=settings.result_text_max_chars,
    )


def image_config(settings: Settings) -> ImageConfig:
    return ImageConfig(
        match_distance=settings.image_match_distance,
        batch_timeout_s=settings.image_batch_timeout_s,
        min_keypoints=settings.image_match_keypoints,
        words_cut=settings.image_words_cut,
    )


def image_reader(settings: Settings) -> ImageReader | None:
    """What reads posts' and fact-checks' images, words included (None when images are off)."""
    if not settings.images:
        return None
    from worker.images.fetch import ImageFetcher
    from worker.images.reader import ImageReader, ReadLimits

    policy = fetch_policy(settings)
    limits = ReadLimits(
        max_per_item=settings.image_max_per_post,
        max_bytes=settings.image_max_bytes,
        max_pixels=settings.image_max_pixels,
        concurrency=settings.image_fetch_concurrency,
    )
    return ImageReader(ImageFetcher(policy), limits, ocr_engine(settings))


def fetch_policy(settings: Settings) -> FetchPolicy:
    """What an image fetcher (the worker's, the console's) may reach and read."""
    from worker.images.fetch import FetchPolicy

    return FetchPolicy(
        max_bytes=settings.image_max_bytes,
        timeout_s=settings.image_fetch_timeout_s,
        connect_timeout_s=settings.image_connect_timeout_s,
        max_redirects=settings.image_max_redirects,
        allow_networks=FetchPolicy.networks(settings.image_allow_networks),
        hosts=tuple(h.strip().lower() for h in settings.image_hosts.split(",") if h.strip()),
    )


def ocr_engine(settings: Settings) -> Tesseract | None:
    """Tesseract for the text in images, as ``image_ocr`` asks (auto: when installed)."""
    from worker.images.ocr import Tesseract

    if settings.image_ocr == "off":
        return None
    try:
        engine = Tesseract(
            settings.image_ocr_langs,
            timeout_s=settings.image_ocr_timeout_s,
            min_word_confidence=settings.image_ocr_min_confidence,
        )
    except RuntimeError as exc:
        if settings.image_ocr == "tesseract":
            raise
        log.warning("no OCR of images: %s", exc)
        return None
    log.info("text in images read by Tesseract (%s)", settings.image_ocr_langs)
    return engine


def memes_read(settings: Settings, texts: Mapping[str, str]) -> dict[str, str] | None:
    """Labelled posts (id -> text) rendered as memes and read back by this worker's OCR, for the
    decision model for read text (``calibrate_read_text``); None when that is off or there is no
    OCR. Blocking: minutes for a thousand posts, progress logged."""
    from worker.images.memes import read_as_memes

    engine = ocr_engine(settings) if settings.calibrate_read_text else None
    return None if engine is None else read_as_memes(texts, engine, settings.image_max_pixels)


def overmatch_config(settings: Settings) -> OverMatchConfig:
    return OverMatchConfig(
        settings.overmatch_window, settings.overmatch_share, settings.overmatch_factor, settings.overmatch_min_matches
    )


def encoder_options(settings: Settings) -> EncoderOptions:
    return EncoderOptions(
        device=settings.device,
        dtype=settings.dtype,
        autocast=settings.autocast,
        query_prompt=settings.query_prompt,
        query_prompt_name=settings.query_prompt_name,
        document_prompt_name=settings.document_prompt_name,
        max_seq_length=settings.max_seq_length,
        attn_implementation=settings.attn_implementation,
        batch_size=settings.encode_batch_size,
        trust_remote_code=settings.trust_remote_code,
        cpu_parts=settings.cpu_encoder_parts,
    )


def with_document_cache(settings: Settings, model_ref: str, encoder: Encoder) -> CachedDocuments:
    """``encoder`` with its document vectors kept under ``<model_store>/eval-cache/`` (``factmatch eval``)."""
    options = f"{encoder_options(settings)!r}|{settings.backend}|{settings.onnx_int8}"
    directory = settings.model_store / "eval-cache" / model_identity(model_ref, options)
    return CachedDocuments(encoder, directory)


def encoder_loader(settings: Settings) -> Loader:
    """The one way an encoder is built from a model reference (so every path honours ``backend``)."""
    options = encoder_options(settings)
    if settings.backend == "onnx":
        from worker.core.onnx_backend import load_onnx_encoder

        return lambda ref: load_onnx_encoder(ref, options, store=settings.model_store, int8=settings.onnx_int8)
    return lambda ref: SentenceTransformerEncoder(ref, options)


def torch_encoder_loader(settings: Settings) -> Callable[[str], SentenceTransformerEncoder]:
    """A torch encoder whatever the backend: for training and exporting, which need the real model."""
    options = encoder_options(settings)
    return lambda ref: SentenceTransformerEncoder(ref, options)


def reranker_loader(settings: Settings) -> Callable[[str], Reranker | None] | None:
    """Loads a version's cross-encoder when reranking is on (``rerank_top_n`` > 0)."""
    if settings.rerank_top_n == 0:
        return None
    from worker.retrieval.rerank import load_reranker

    device = resolve_device(settings.device)
    # The cross-encoder is loaded in float32: autocast on a bf16 CPU as the encoder's posts are,
    # with its linear weights' bf16 copies made once as the encoder's are.
    autocast = resolve_autocast(settings.autocast, device, "float32")
    arithmetic = partial(autocast_context, device, autocast)

    def load(path: str) -> Reranker | None:
        reranker = load_reranker(path, device, arithmetic)
        if reranker is not None and autocast is not None:
            keep_low_precision_weights(reranker.model, autocast)
        return reranker

    return load


def rollout_config(settings: Settings) -> RolloutConfig:
    return RolloutConfig(
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        retain_versions=settings.retain_versions,
        gate_shadow_min_posts=settings.gate_shadow_min_posts,
        gate_shadow_min_agreement=settings.gate_shadow_min_agreement,
        after_index=_onnx_export(settings) if settings.backend == "onnx" else None,
    )


def _onnx_export(settings: Settings) -> Callable[[Encoder], Awaitable[None]]:
    """Workers on the ONNX backend find a version's export in the model store, so switching to it
    (or restarting on it) needs no torch; one export when the version is indexed, not one per replica."""

    async def export(encoder: Encoder) -> None:
        if isinstance(encoder, SentenceTransformerEncoder):
            from worker.core.onnx_backend import ensure_export

            await asyncio.to_thread(ensure_export, encoder, settings.model_store, int8=settings.onnx_int8)

    return export


def shipped_decision(model_ref: str) -> ShippedDecision | None:
    """The decision model that came with ``model_ref`` (in its directory, or shipped by the project)."""
    shipped = shipped_decisions(model_ref)
    if shipped is None:
        return None
    model, thresholds, report, path = shipped
    return ShippedDecision(model.to_dict(), thresholds, report, source=f"shipped: {path.name}")


def bootstrap_model_ref(settings: Settings) -> str:
    """The configured model, or the default; a local directory as an absolute path, since the
    path is registered for every worker and a relative one would depend on each one's cwd."""
    ref = settings.model or default_model_ref(settings.model_store)
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_dir() else ref


async def bootstrap_active_version(store: Store, settings: Settings, manager: ModelManager) -> ModelVersion:
    """Make sure one version is active: the configured model, promoted if none is."""
    boot = Bootstrap(
        model_ref=lambda: bootstrap_model_ref(settings),
        encoder_for=manager.encoder_for,
        version_name=version_name_for,
        configured_name=settings.model_version,
        shipped=shipped_decision,
    )
    return await bootstrap(store, rollout_config(settings), boot)


def store_from_settings(settings: Settings, conninfo: str | None = None) -> Store:
    return Store(
        conninfo or settings.require_database_url(),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        ef_search=settings.ef_search,
        connect_timeout_s=settings.db_connect_timeout_s,
        pool_timeout_s=settings.db_pool_timeout_s,
    )


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, migrate_first: bool = True) -> AsyncIterator[Store]:
    """The one way tools open the database: migrations applied, pool open, closed on exit."""
    if migrate_first:
        await apply_migrations(settings.require_database_url())
    store = store_from_settings(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def model_manager(store: Store, settings: Settings) -> ModelManager:
    return ModelManager(store, encoder_loader(settings), rerankers=reranker_loader(settings))


async def load_fact_checks(store: Store, settings: Settings, fact_checks: Sequence[FactCheck]) -> int:
    """Load fact-checks and embed them under every serving version (bootstrapping one if none is active)."""
    manager = model_manager(store, settings)
    indexer = corpus_indexer(store, settings, manager.encoder_for)
    try:
        if await store.registry.active_version() is None:
            # Rows first, index after: the bootstrap embeds everything, then builds the index.
            await store.corpus.upsert_fact_checks(fact_checks)
            await indexer.index_images(list({fc.id: fc for fc in fact_checks}.values()))
            await bootstrap_active_version(store, settings, manager)
            return len({fc.id for fc in fact_checks})
        change = await indexer.upsert(fact_checks, progress=True)
        return change.upserted
    finally:
        await indexer.close()


async def index_fact_check_images(store: Store, settings: Settings, fact_checks: Sequence[FactCheck]) -> None:
    """Read and keep the fact-checks' images' hashes and words (rows loaded without a worker: demo, up)."""
    from worker.core.indexer import index_images

    reader = image_reader(settings)
    if reader is None:
        return
    try:
        await index_images(reader, store.images, fact_checks)
    finally:
        await reader.close()


def corpus_indexer(store: Store, settings: Settings, encoder_for: Callable[[str, str], Encoder]) -> CorpusIndexer:
    """Applies fact-check changes: rows, vectors under every serving version, images' hashes."""
    return CorpusIndexer(store, encoder_for, image_reader(settings), store.images)


async def eval_model_ref(settings: Settings, model: str | None) -> str:
    """The model an evaluation uses: the one named, else the active version's, else the configured default."""
    if model:
        return model
    if settings.database_url is not None:
        async with open_store(settings, migrate_first=False) as store:
            active = await store.registry.active_version()
        if active is not None:
            return active.path
    return settings.model or default_model_ref(settings.model_store)
