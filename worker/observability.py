"""Prometheus metrics, health and readiness over HTTP, and consumer lag.

Operators watch a moderation stream through these: are posts flowing, how far behind are
the workers, where does a batch's time go, which model version serves. The HTTP server is a
few lines on the worker's own event loop, so a response to ``/healthz`` is itself proof the
loop is responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_SCORE_BUCKETS = tuple(round(x * 0.1, 1) for x in range(-2, 11))


class Metrics:
    """Every factmatch metric, in a registry of its own (tests build as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._stream(self.registry)
        self._results(self.registry)
        self._versions(self.registry)
        self._kafka_and_corpus(self.registry)
        self._trainer(self.registry)

    def _stream(self, r: CollectorRegistry) -> None:
        """What flows: posts in, results and dead letters out, retries, batches, reuse."""
        self.posts_consumed = Counter("factmatch_posts_consumed", "Records consumed from the posts topic.", registry=r)
        self.results_published = Counter("factmatch_results_published", "Match results published.", registry=r)
        self.results_by_language = Counter(
            "factmatch_results_by_language",
            "Results published, by the post's (given or detected) language.",
            ["lang", "tier"],
            registry=r,
        )
        self.dead_letters = Counter(
            "factmatch_dead_letters", "Messages sent to the dead-letter topic.", ["source", "reason"], registry=r
        )
        self.retries = Counter("factmatch_retries", "Retries against a dependency.", ["what"], registry=r)
        self.errors = Counter(
            "factmatch_errors", "Batches that failed and were left uncommitted.", ["stage"], registry=r
        )
        self.batch_records = Histogram(
            "factmatch_batch_records", "Records per consumed batch.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "factmatch_batch_tokens", "Tokens per consumed batch.", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.embedding_cache_hits = Counter(
            "factmatch_embedding_cache_hits",
            "Posts whose text was encoded recently (or earlier in the batch) and reused its vector.",
            registry=r,
        )
        self.answers_reused = Counter(
            "factmatch_answers_reused",
            "Posts answered with an earlier post's matches (the same claim said again; results say duplicate_of).",
            registry=r,
        )
        self.rematched = Counter(
            "factmatch_rematched",
            "Posts the worker had abstained on that a fact-check added later matched (an updated result each).",
            registry=r,
        )

    def _results(self, r: CollectorRegistry) -> None:
        """Where a batch's time goes and what the results look like."""
        self.stage_seconds = Histogram(
            "factmatch_stage_seconds", "Time per batch and stage.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "factmatch_end_to_end_seconds",
            "From the post's Kafka timestamp to its result published.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.matches_per_post = Histogram(
            "factmatch_matches_per_post",
            "Matches published per post (0: the worker abstained).",
            buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100),
            registry=r,
        )
        self.best_score = Histogram(
            "factmatch_best_score", "Score of each post's best match.", buckets=_SCORE_BUCKETS, registry=r
        )
        self.best_probability = Histogram(
            "factmatch_best_probability",
            "Match probability of each post's best match (calibrated versions).",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.overmatch_flags = Counter(
            "factmatch_overmatch_flags",
            "Fact-checks flagged for matching a far larger share of posts than their baseline.",
            ["fact_check_id"],
            registry=r,
        )

    def _versions(self, r: CollectorRegistry) -> None:
        """The serving version, its index's recall and the shadow version beside it."""
        self.model = Info("factmatch_model", "The model version serving.", registry=r)
        self.ann_recall = Gauge(
            "factmatch_ann_recall_at_10",
            "Recall@10 of the HNSW index against an exact scan, over the last sampled searches.",
            ["model_version"],
            registry=r,
        )
        self.ann_recall_probes = Counter(
            "factmatch_ann_recall_probes", "Searches re-run exactly.", ["model_version"], registry=r
        )
        self.shadow_posts = Counter(
            "factmatch_shadow_posts",
            "Posts the shadow version also answered (unpublished).",
            ["model_version"],
            registry=r,
        )
        self.shadow_agreements = Counter(
            "factmatch_shadow_agreements",
            "Shadow posts whose rank 1 (or no match) equals the active version's.",
            ["model_version"],
            registry=r,
        )
        self.shadow_score_shift = Summary(
            "factmatch_shadow_score_shift",
            "Shadow minus active rank-1 score, per language.",
            ["model_version", "lang"],
            registry=r,
        )
        self.shadow_dropped = Counter("factmatch_shadow_dropped", "Shadow samples dropped: queue full.", registry=r)
        self.model_loads = Counter("factmatch_model_loads", "Model versions loaded.", registry=r)
        self.model_switches = Counter("factmatch_model_switches", "Switches of the serving version.", registry=r)

    def _kafka_and_corpus(self, r: CollectorRegistry) -> None:
        """Lag and partition coverage of the consumed topics; the corpus and its changes."""
        self.consumer_lag = Gauge(
            "factmatch_consumer_lag",
            "End offset minus the group's committed offset, every partition of the topic (aggregate with max).",
            ["topic", "partition"],
            registry=r,
        )
        self.topic_partitions = Gauge(
            "factmatch_topic_partitions", "Partitions the consumed topic has.", ["topic"], registry=r
        )
        self.assigned_partitions = Gauge(
            "factmatch_assigned_partitions", "Partitions of the topic assigned to this worker.", ["topic"], registry=r
        )
        self.unserved_partitions = Gauge(
            "factmatch_unserved_partitions",
            "Partitions with waiting records whose committed offset has not moved for the grace period, "
            "not assigned to this worker.",
            ["topic"],
            registry=r,
        )
        self.corpus_size = Gauge(
            "factmatch_corpus_size", "Fact-checks embedded per model version.", ["model_version"], registry=r
        )
        self.feedback_stored = Counter("factmatch_feedback_stored", "Moderator verdicts stored.", registry=r)
        self.corpus_changes = Counter(
            "factmatch_corpus_changes", "Fact-check upserts and deletes applied.", ["op"], registry=r
        )

    def _trainer(self, r: CollectorRegistry) -> None:
        """The trainer job's runs (its pod is scraped like a worker's)."""
        self.trainer_runs = Counter("factmatch_trainer_runs", "Training runs by outcome.", ["outcome"], registry=r)
        self.trainer_heldout = Gauge(
            "factmatch_trainer_heldout",
            "Held-out metrics of the last run.",
            ["model_version", "role", "metric"],
            registry=r,
        )
        self.trainer_seconds = Gauge("factmatch_trainer_duration_seconds", "Duration of the last run.", registry=r)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


Check = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port."""

    metrics: Metrics
    ready_checks: dict[str, Check]
    host: str = "0.0.0.0"
    # /startupz: what a start waits for (the model), so a startup probe measures the slow part.
    startup_checks: dict[str, Check] = field(default_factory=dict)
    port: int = 9400
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.port
        log.info("metrics and health on port %d", self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def readiness(self, timeout_s: float = 1.5, startup: bool = False) -> tuple[bool, dict[str, str]]:
        """Every check at once, each bounded: a probe gets its answer within ``timeout_s`` even
        while a dependency hangs."""

        async def run(check: Check) -> tuple[bool, str]:
            try:
                return await asyncio.wait_for(check(), timeout=timeout_s)
            except TimeoutError:
                return False, f"no answer within {timeout_s:.1f}s"
            except Exception as exc:
                return False, f"{type(exc).__name__}: {exc}"

        checks = self.startup_checks if startup else self.ready_checks
        outcomes = await asyncio.gather(*(run(check) for check in checks.values()))
        results = {
            name: ("ok: " if passed else "FAIL: ") + detail
            for name, (passed, detail) in zip(checks, outcomes, strict=True)
        }
        return all(passed for passed, _ in outcomes), results

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, body, ctype = 200, self.metrics.scrape(), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                status, body, ctype = 200, b"ok\n", "text/plain"
            elif path in ("/readyz", "/startupz"):
                ok, results = await self.readiness(startup=path == "/startupz")
                status = 200 if ok else 503
                body = "".join(f"{k}: {v}\n" for k, v in results.items()).encode()
                ctype = "text/plain"
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
