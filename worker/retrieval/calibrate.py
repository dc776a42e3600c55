"""Fitting a version's tier thresholds on labelled posts, as the worker would rank them.

One function for ``factmatch calibrate`` and for the trainer's promotion: rank the labelled
posts with the serving retriever, label each published candidate right or wrong, fit the
per-language cuts at the target precisions and store them with the version (which NOTIFYs
the workers to reload them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from worker.retrieval.evaluation import rank_queries
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.retrieval.tiers import Threshold, Tier, fit_thresholds

if TYPE_CHECKING:
    from worker.core.encoder import Encoder
    from worker.settings import Settings
    from worker.storage import Store


async def score_labelled(
    retriever: Retriever,
    version: str,
    encoder: Encoder,
    queries: Mapping[str, str],
    query_langs: Mapping[str, str | None],
    qrels: Mapping[str, set[str]],
) -> list[tuple[str | None, float, bool]]:
    """(language, cosine, is_correct) for every candidate the worker would publish for each labelled query."""
    labelled = {q: t for q, t in queries.items() if qrels.get(q)}
    ranked = await rank_queries(retriever, version, encoder, labelled, query_langs)
    return [(query_langs.get(q), m.score, m.fact_check_id in qrels[q]) for q, found in ranked.items() for m in found]


async def calibrate_version(
    store: Store,
    settings: Settings,
    version: str,
    encoder: Encoder,
    queries: Mapping[str, str],
    query_langs: Mapping[str, str | None],
    qrels: Mapping[str, set[str]],
    *,
    source: str,
) -> list[Threshold]:
    """Fit and store ``version``'s thresholds at the settings' target precisions; the fitted cuts."""
    config = RetrievalConfig.from_settings(settings)
    # Every candidate the worker could publish is scored, whatever floor serving applies.
    retriever = Retriever(store, RetrievalConfig(config.fusion, config.top_k, -1.0, config.candidates))
    scored = await score_labelled(retriever, version, encoder, queries, query_langs, qrels)
    targets: dict[Tier, float] = {
        "match": settings.tier_match_precision,
        "suggestion": settings.tier_suggestion_precision,
    }
    fitted = fit_thresholds(scored, targets, settings.tier_min_support)
    if fitted:
        await store.save_thresholds(version, fitted, source=source)
    return fitted
