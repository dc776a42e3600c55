"""Claims, not posts: a viral stream from CheckThat! 2020, the worker against the hand-written loop.

The stream (``viral_stream``): CheckThat! 2020 test tweets that have a gold fact-check are the
claims (``--splits``; the cluster cut was chosen on a stream of train and dev tweets);
each post draws a claim with Zipf-like popularity (weight 1 / rank^1.1), so a few claims are
posted hundreds of times and most a handful. A claim's first post is its tweet; a later post is
the tweet again (a retweet as platforms send it) or, about half of the stream, a near-copy: a
retweet prefix, a changed link, an emoji, changed spacing (the same claim text), or a changed
mention, a typo or a different casing (a different claim text, left to the clusters). Posts
carry ``created_at`` over one simulated day, with a few claims spiking in one hour.

Each path drains the same stream from a backlog through real tansu and embedded Postgres, the
corpus being CheckThat!'s 10,375 fact-checks, and is read back by an independent client:

- the hand-written loop (``benchmarks/hand_loop.py``: poll, encode, one query per post, produce);
- the worker with ``reuse_window_s=0`` (every post encoded and searched);
- the worker as configured by default (a claim said again is answered once).

Printed: posts/s of each and the ratios (goal: worker >= 3x the loop on this stream), the share
of posts answered by reuse, and whether reuse changed any post's published matches (fact-check
ids and tiers, post by post, reuse on vs off; goal: identical), the clusters' adjusted Rand index
and purity against each post's claim and gold fact-check (goal ARI >= 0.9) and how often a
near-copy lands in its original's cluster (goal >= 99%), and which fact-checks the over-match
watch flags when it counts claim clusters (the worker) and when it counts posts (the reuse-off
run also has clusters off). The quarantine itself is off in both worker runs, so that what one
run quarantines cannot change the other's results. Then the emerging-claims phase
(``benchmarks/emerging_phase.py``): the spiking claims' fact-checks withheld, are those claims in
the top 10 emerging clusters, and do they match again once their fact-checks are back?

    .venv/bin/python benchmarks/viral_stream.py --posts 2000 --out benchmarks/results/viral_2core.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.perf_common import DATA, Model, free_port  # noqa: E402
from benchmarks.perf_stream import Reader, running_system  # noqa: E402
from benchmarks.performance import prepare  # noqa: E402
from worker.configs import encoder_options  # noqa: E402
from worker.core.encoder import SentenceTransformerEncoder  # noqa: E402
from worker.local.models import default_model_ref, minilm_model_ref  # noqa: E402
from worker.retrieval.cluster_cut import near_copy  # noqa: E402
from worker.settings import Settings  # noqa: E402

SAME_CLAIM = ("retweet", "link", "emoji", "spacing")
OTHER_TEXT = ("mention", "typo", "casing")


def labelled_claims(splits: Sequence[str]) -> list[tuple[str, str]]:
    """(tweet text, its gold fact-check id) for every CheckThat! tweet of ``splits`` that has one."""
    from worker.retrieval.evaluation import load_jsonl

    claims: dict[str, tuple[str, str]] = {}
    for split in splits:
        gold: dict[str, str] = {}
        for line in (DATA / f"{split}_qrels.tsv").read_text().splitlines():
            if "\t" in line:
                query, fc = line.split("\t")[:2]
                gold.setdefault(query.strip(), fc.strip())
        for row in load_jsonl(DATA / f"{split}_queries.jsonl"):
            if str(row["id"]) in gold:
                claims.setdefault(str(row["text"]), (str(row["text"]), gold[str(row["id"])]))
    return list(claims.values())


def viral_stream(
    posts: int, splits: Sequence[str] = ("test",), seed: int = 7, spiking: int = 3
) -> list[dict[str, Any]]:
    """The stream's posts in arrival order: ``{"id", "text", "created_at", "claim", "fact_check", "kind"}``.

    Built from the test split by default (held out: the cluster cut was chosen on train and dev)."""
    rng = random.Random(seed)
    claims = labelled_claims(splits)
    rng.shuffle(claims)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(claims))]
    start = datetime(2026, 12, 1, tzinfo=UTC)
    spikes = {rng.randrange(10, len(claims)): rng.uniform(2, 22) for _ in range(spiking)}  # claim -> spike hour
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for n in range(posts):
        claim = rng.choices(range(len(claims)), weights)[0] if rng.random() > 0.08 * len(spikes) else 0
        if claim == 0 and spikes:
            claim = rng.choice(list(spikes))
        text, fc = claims[claim]
        kind = "first" if claim not in seen else "exact"
        if claim in seen and rng.random() < 0.5:
            kind = rng.choice(SAME_CLAIM + OTHER_TEXT)
            text = near_copy(text, kind, rng)
        seen.add(claim)
        hour = spikes[claim] + rng.uniform(0, 1) if claim in spikes else rng.uniform(0, 24)
        at = start + timedelta(hours=hour)
        post = {"id": f"v{n}", "text": text, "created_at": at.isoformat(), "claim": claim, "fact_check": fc,
                "spike": claim in spikes}  # fmt: skip
        out.append({**post, "kind": kind})
    return out


CROSSLINGUAL = ROOT / "benchmarks" / "data" / "crosslingual.jsonl"


def crosslingual_rows() -> list[dict[str, str]]:
    """benchmarks/data/crosslingual.jsonl: a fact-check, a post in its language and the post translated."""
    return [json.loads(line) for line in CROSSLINGUAL.read_text(encoding="utf-8").splitlines() if line.strip()]


def with_translations(stream: list[dict[str, Any]], copies: int = 2, seed: int = 11) -> list[dict[str, Any]]:
    """``stream`` with the cross-lingual check's 24 claims added: each said first in its fact-check's
    language, then ``copies`` times translated (kind ``translation``), at random places after it.
    Their fact-checks must be in the corpus (:func:`crosslingual_fact_checks`)."""
    rng = random.Random(seed)
    out = list(stream)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for n, row in enumerate(crosslingual_rows()):
        claim = 100_000 + n  # apart from the CheckThat! claims' indices
        first = rng.randrange(len(out) // 2)
        posts = [(row["same_post"], "first")] + [(row["post"], "translation")] * copies
        places = [first, *sorted(rng.randrange(first + 1, len(out) + 1) for _ in range(copies))]
        for j, ((text, kind), place) in enumerate(reversed(list(zip(posts, places, strict=True)))):
            at = start + timedelta(hours=rng.uniform(0, 24))
            out.insert(place, {"id": f"t{n}-{copies - j}", "text": text, "created_at": at.isoformat(),
                               "claim": claim, "fact_check": row["id"], "spike": False, "kind": kind})  # fmt: skip
    return out


def crosslingual_fact_checks() -> list[Any]:
    from worker.wire import FactCheck

    return [FactCheck(id=r["id"], claim=r["claim"], lang=r["lang"]) for r in crosslingual_rows()]


class ResultReader(Reader):
    """The reader that also keeps each post's published (fact-check id, tier) pairs and ``duplicate_of``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.results: dict[str, dict[str, Any]] = {}

    def drain(self, timeout_s: float) -> None:
        for message in self.raw.consume(num_messages=500, timeout=max(0.001, timeout_s)):
            if message.error() is None:
                result = json.loads(message.value())
                post_id = result["post_id"]
                self.seen.setdefault(post_id, time.monotonic())
                self.published.setdefault(post_id, message.timestamp()[1] / 1000)
                self.results.setdefault(post_id, result)


def produce_posts(bootstrap: str, topic: str, prefix: str, stream: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for post in stream:
        key = f"{prefix}-{post['id']}"
        body = {"id": key, "text": post["text"], "created_at": post["created_at"], "platform": "x"}
        producer.produce(topic, value=json.dumps(body).encode(), key=key.encode())
        producer.poll(0)
    producer.flush(60)


PATHS = ("hand-written loop", "worker, reuse off", "worker")
# Also selectable: where the worker's time goes.
EXTRA_PATHS = ("worker, clusters off",)


def path_settings(base: Settings, model: Model, **overrides: Any) -> Settings:
    """``base`` with topics and groups of the path's own, ``model``, the quarantine off, and ``overrides``."""
    suffix = uuid.uuid4().hex[:6]
    return base.model_copy(
        update={
            "topic_posts": f"posts-{suffix}", "topic_matches": f"matches-{suffix}",
            "topic_dead_letter": f"dlq-{suffix}", "topic_factchecks": f"fc-{suffix}",
            "topic_feedback": f"fb-{suffix}", "topic_trending": f"tr-{suffix}", "topic_emerging": f"em-{suffix}",
            "group_id": f"g-{suffix}", "indexer_group_id": f"i-{suffix}", "feedback_group_id": f"f-{suffix}",
            "console_group_id": f"c-{suffix}", "model": model.ref, "metrics_port": free_port(),
            "overmatch_quarantine": False, **overrides,
        }
    )  # fmt: skip


async def fresh_start(settings: Settings) -> None:
    """No answer, cluster or count of an earlier path: each path starts from the same state."""
    from worker.storage import Store

    store = Store(settings.require_database_url())
    await store.open()
    try:
        await store.answers.forget_answers(0, limit=10_000_000)
        await store.clusters.forget_clusters(0, limit=10_000_000)
        await store.trends.forget_hits(0)
    finally:
        await store.close()


def run_path(path: str, model: Model, base: Settings, stream: list[dict[str, Any]]) -> dict[str, Any]:
    """Drain the stream through one path; its rate and what it published, by stream post id."""
    from worker.adapter.topics import ensure_topics

    settings = path_settings(
        base,
        model,
        reuse_window_s=0.0 if path == "worker, reuse off" else base.reuse_window_s,
        # Without clusters the over-match watch counts posts, as it did before claim clusters.
        claim_clusters=path not in ("worker, reuse off", "worker, clusters off"),
    )
    asyncio.run(ensure_topics(settings))
    asyncio.run(fresh_start(settings))
    reader = ResultReader(settings.kafka_bootstrap, settings.topic_matches)
    with running_system(path, settings, model, Path(base.model_store) / f"worker-{settings.group_id}.log"):
        at = stream[0]["created_at"]
        warm = [{"id": f"w{i}", "text": f"warm-up post number {i}", "created_at": at} for i in range(32)]
        produce_posts(settings.kafka_bootstrap, settings.topic_posts, "warm", warm)
        reader.until("warm", 32, 600)
        started = time.monotonic()
        produce_posts(settings.kafka_bootstrap, settings.topic_posts, "run", stream)
        finished = reader.until("run", len(stream), 1800)
        flagged = overmatch_flags(settings.metrics_port) if path != "hand-written loop" else []
    reader.close()
    rate = len(stream) / (finished - started)
    published = {k.removeprefix("run-"): v for k, v in reader.results.items() if k.startswith("run-")}
    print(f"  {path}: {rate:.1f} posts/s", flush=True)
    return {"rate": rate, "results": published, "flagged": flagged}


def overmatch_flags(port: int) -> list[str]:
    """The fact-checks the worker's over-match watch flagged (its metric; the quarantine itself is off)."""
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sorted(set(re.findall(r'factmatch_overmatch_flags_total\{fact_check_id="([^"]+)"\} [1-9]', body)))


def answers(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(m["fact_check_id"], m.get("tier")) for m in result["matches"]]


def cluster_figures(stream: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ARI and purity of the clusters against each post's claim and gold fact-check; copies with their original."""
    from collections import Counter, defaultdict

    from sklearn.metrics import adjusted_rand_score

    assigned = [results[p["id"]]["cluster_id"] for p in stream]
    first: dict[int, Any] = {}
    for post, cluster in zip(stream, assigned, strict=True):
        first.setdefault(post["claim"], cluster)
    together: dict[str, list[bool]] = defaultdict(list)
    for post, cluster in zip(stream, assigned, strict=True):
        if post["kind"] != "first":
            together[post["kind"]].append(cluster == first[post["claim"]])
    members: dict[Any, list[str]] = defaultdict(list)
    for post, cluster in zip(stream, assigned, strict=True):
        members[cluster].append(post["fact_check"])
    purity = sum(Counter(m).most_common(1)[0][1] for m in members.values()) / len(stream)
    copies = [same for kind in together for same in together[kind]]
    return {
        "clusters": len(members),
        "ari_claim": adjusted_rand_score([p["claim"] for p in stream], assigned),
        "ari_fact_check": adjusted_rand_score([p["fact_check"] for p in stream], assigned),
        "purity_fact_check": purity,
        "copy_with_original": sum(copies) / len(copies),
        "copy_with_original_by_kind": {k: sum(v) / len(v) for k, v in together.items()},
    }


def reused_by_kind(stream: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, str]:
    """Per kind of post, how many were answered by reuse (a typo, a casing or a mention has a claim
    text of its own: only a near-duplicate cut, ``--near``, reuses those)."""
    counts: dict[str, list[int]] = {}
    for post in stream:
        seen = counts.setdefault(post["kind"], [0, 0])
        seen[0] += bool(results[post["id"]].get("duplicate_of"))
        seen[1] += 1
    return {kind: f"{n}/{total}" for kind, (n, total) in sorted(counts.items())}


def report(stream: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for post in stream:
        kinds[post["kind"]] = kinds.get(post["kind"], 0) + 1
    claims = len({p["claim"] for p in stream})
    on, off, loop = runs["worker"], runs["worker, reuse off"], runs["hand-written loop"]
    reused = sum(1 for r in on["results"].values() if r.get("duplicate_of"))
    differ = [p["id"] for p in stream if answers(on["results"][p["id"]]) != answers(off["results"][p["id"]])]
    figures = {
        "posts": len(stream),
        "claims": claims,
        "kinds": kinds,
        "rate": {path: run["rate"] for path, run in runs.items()},
        "worker_vs_loop": on["rate"] / loop["rate"],
        "reuse_off_vs_loop": off["rate"] / loop["rate"],
        "reused_share": reused / len(stream),
        "reused_by_kind": reused_by_kind(stream, on["results"]),
        "reuse_changed_posts": len(differ),
        "overmatch_flags_by_clusters": on["flagged"],
        "overmatch_flags_by_posts": off["flagged"],
    }
    if all(r.get("cluster_id") is not None for r in on["results"].values()):
        figures["clusters"] = c = cluster_figures(stream, on["results"])
    else:
        c = None
    print(f"\n{len(stream)} posts of {claims} claims; kinds: {kinds}")
    print(f"  throughput, worker / hand-written loop: {figures['worker_vs_loop']:.2f}x (goal >= 3x);"
          f" reuse off: {figures['reuse_off_vs_loop']:.2f}x")  # fmt: skip
    print(f"  over-match watch, counting claim clusters: {len(on['flagged'])} fact-check(s) flagged {on['flagged']};"
          f" counting posts (clusters off): {len(off['flagged'])} {off['flagged']}")  # fmt: skip
    print(f"  posts answered by reuse: {reused} ({figures['reused_share']:.1%}); the rest encoded and searched")
    print(f"  reused, by kind of post (reused / posts): {figures['reused_by_kind']}")
    print(f"  posts whose matches (ids, tiers) differ with reuse on vs off: {len(differ)} (goal 0)"
          + (f", e.g. {differ[:5]}" if differ else ""))  # fmt: skip
    if c is not None:
        ari = f"ARI against the claim {c['ari_claim']:.3f}, against the gold fact-check {c['ari_fact_check']:.3f}"
        print(
            f"  clusters: {c['clusters']} for {claims} claims; {ari} (goal >= 0.9); purity {c['purity_fact_check']:.3f}"
        )
        by_kind = ", ".join(f"{k} {v:.1%}" for k, v in sorted(c["copy_with_original_by_kind"].items()))
        together = c["copy_with_original"]
        print(f"  a repeat or near-copy in its original's cluster: {together:.1%} (goal >= 99%): {by_kind}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="default, minilm, or a model directory")
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--splits", nargs="+", default=["test"], help="CheckThat! splits the claims come from.")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS + EXTRA_PATHS)
    parser.add_argument("--no-emerging", action="store_true", help="Skip the emerging-claims phase.")
    parser.add_argument(
        "--translations", action="store_true", help="Add the cross-lingual check's claims, each also posted translated."
    )
    parser.add_argument(
        "--near", type=float, default=None, help="The worker's FACTMATCH_REUSE_NEAR_SIMILARITY (default: unset)."
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"))
    parser.add_argument("--out", type=Path, default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found (CheckThat! 2020 is read from ../shared/data)")
        return

    from worker.local.stack import local_stack
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.storage import Store, apply_migrations

    stream = viral_stream(args.posts, args.splits)
    if args.translations:
        stream = with_translations(stream)
    args.cache.mkdir(parents=True, exist_ok=True)
    with local_stack() as (broker, database):
        base = Settings(  # type: ignore[call-arg]
            _env_file=None, kafka_bootstrap=broker.bootstrap, database_url=database.url, device="cpu",
            model_store=args.cache / "models", session_timeout_ms=6000, reuse_near_similarity=args.near,
        )  # fmt: skip
        Path(base.model_store).mkdir(parents=True, exist_ok=True)

        async def load_corpus() -> None:
            await apply_migrations(database.url)
            store = Store(database.url)
            await store.open()
            await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DATA / "corpus.jsonl")))
            if args.translations:
                await store.corpus.upsert_fact_checks(crosslingual_fact_checks())
            await store.close()

        asyncio.run(load_corpus())
        ref = {"default": lambda: default_model_ref(base.model_store), "minilm": minilm_model_ref}.get(
            args.model, lambda: args.model
        )()
        model = Model(args.model, ref, SentenceTransformerEncoder(ref, encoder_options(base)))
        print(f"{args.model}: {ref}", flush=True)
        asyncio.run(prepare(model, base, args.cache))
        runs = {path: run_path(path, model, base, stream) for path in args.paths}
        if not args.no_emerging:
            from benchmarks.emerging_phase import emerging_phase

            emerged = emerging_phase(model, base, stream)
    if set(PATHS) <= set(runs):
        figures = report(stream, runs)
        if not args.no_emerging:
            figures["emerging"] = emerged
        figures["model"] = args.model
        figures["cpu_cores"] = multiprocessing.cpu_count()
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
