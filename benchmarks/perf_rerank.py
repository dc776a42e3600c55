"""The worker with its version's cross-encoder on against off, side by side (issue 26's benchmark
"the worker's posts/s with it on vs off, side by side in one run").

For the two stream paths of benchmarks/performance.py that measure it, the model's version gets
what a version trained with ``FACTMATCH_TRAIN_RERANKER_LAYERS`` carries: a cross-encoder of the
encoder's first ``layers`` layers in its directory (``reranker/``), and a cascade decision fitted
with it on CheckThat! 2020 dev (open-set) at the top-N and band that benchmarks/rerank_cascade.py
chose on dev for the 2-layer student (``results/rerank_cascade_distilled_2core.json``: top 10,
band [0.05, 0.9]). Both paths run that same version: "off" with ``FACTMATCH_RERANK_TOP_N=0``
(the cascade's screen decides alone, as a worker with reranking off does), "on" with the top-N.
Afterwards the version has its shipped decision back and no reranker.

The cross-encoder here is trained on train's right/wrong labels with mined negatives (a few
minutes on 2 cores) instead of being distilled from a full-depth one (half an hour more): the
same architecture reads the same pairs at the same cost, which is what the stream measures; its
match quality is rerank_cascade.py's to report.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from benchmarks.perf_common import Model, store_shipped_decision
from worker.configs import calibration_config, reranker_loader, retrieval_config
from worker.retrieval.calibrate import Calibration, collect_pools, decision_rows
from worker.retrieval.decision import Decisions
from worker.retrieval.rerank import RERANKER_DIR
from worker.retrieval.retriever import Retriever
from worker.settings import Settings

# The cascade rerank_cascade.py chose on dev for the distilled 2-layer cross-encoder.
TOP_N = 10
BAND = (0.05, 0.9)
LAYERS = 2
SOURCE = "benchmark: a cascade fitted on CheckThat! 2020 dev, open-set"


async def cascade_decision(settings: Settings, model: Model, cache: Path) -> tuple[Path, Calibration]:
    """The cross-encoder's directory and a cascade decision fitted with it on open-set dev."""
    from decisions import CachedSource, NoEncoder, gathered_splits  # benchmarks/decisions.py
    from rerank_check import mined_pairs, trained_reranker  # benchmarks/rerank_check.py

    splits, gathered = await gathered_splits(model.ref, settings, cache)
    enc = NoEncoder(gathered.dimension)
    config = replace(retrieval_config(settings), min_score=-1.0)
    pairs = await mined_pairs(gathered, Retriever(CachedSource(gathered), config), enc)
    trained, _ = await asyncio.to_thread(trained_reranker, settings, model.ref, pairs, cache, LAYERS)
    path = Path(trained.path)
    # Loaded as a worker with reranking on loads it (its device and arithmetic).
    load = reranker_loader(settings.model_copy(update={"rerank_top_n": TOP_N}))
    assert load is not None  # reranking is on
    reranker = load(str(path.parent))
    by = Retriever(CachedSource(gathered), replace(config, rerank_top_n=TOP_N))
    dev = splits["dev"]
    pools = await collect_pools(by, "m", enc, dev, featurize=True, decisions=Decisions(reranker=reranker))
    calibration = replace(calibration_config(settings), rerank_band=BAND)
    fitted = calibration.fit(decision_rows(pools, dev), dev, {"data": SOURCE})
    share = fitted.model.fitted_on["reranked_posts"]
    print(f"  cascade fitted on dev: top {TOP_N}, band {BAND}, {share:.0%} of posts reranked", flush=True)
    return path, fitted


async def _save(settings: Settings, model: Model, cascade: Calibration | None) -> None:
    """Store ``cascade`` as the model's version's decision, or its shipped one when None."""
    from worker.storage import Store

    store = Store(settings.require_database_url())
    await store.open()
    try:
        if cascade is not None:
            await store.decisions.save_decision(
                model.version, cascade.model.to_dict(), cascade.thresholds, source=SOURCE, report=cascade.report
            )
        else:
            await store_shipped_decision(store, model)
    finally:
        await store.close()


@contextmanager
def cascade_version(settings: Settings, model: Model, cache: Path) -> Iterator[None]:
    """The model's version with a 2-layer cross-encoder and a cascade decision, until the block ends."""
    path, cascade = asyncio.run(cascade_decision(settings, model, cache))
    target = Path(model.ref) / RERANKER_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(path, target)
    try:
        asyncio.run(_save(settings, model, cascade))
        yield
    finally:
        shutil.rmtree(target, ignore_errors=True)
        asyncio.run(_save(settings, model, None))
