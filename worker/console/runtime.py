"""The console process: its own consumer group on ``matches``, the verdict sender, the live
queue's listener and the web server, composed from the one ``Settings``.

- **Reading results.** A consumer in ``console_group_id`` (not the worker's) turns each result
  with a tiered match into a review item (and keeps a preview of each dead letter for the
  admins' view), then commits: at-least-once, and the store makes a
  redelivered result a no-op. A message that is not a result is logged, counted and skipped:
  the worker's dead letters are the worker's; nothing here can hold the partition.
- **Sending verdicts.** Verdicts wait out their undo window in Postgres; a loop publishes the due
  ones as ``Feedback`` records (keyed by post id) to the feedback topic, waits for the acks,
  then marks them sent. A broker outage leaves them pending; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import uvicorn
from pydantic import BaseModel, ValidationError

from worker.adapter import kafka
from worker.configs import fetch_policy, tier_targets
from worker.console.admin import AdminActions
from worker.console.app import ConsoleDeps, create_app
from worker.console.auth import Authenticator
from worker.console.events import Broadcaster
from worker.console.precision import ConsoleMetrics, LivePrecision
from worker.console.review import pr_polyline
from worker.images.fetch import ImageFetcher
from worker.settings import Settings
from worker.storage import Store
from worker.wire import DeadLetter, MatchResult

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the console's process owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StoreAdmin(AdminActions):
    """The admin pages' actions on the real registry and quarantine."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def versions(self) -> list[dict[str, Any]]:
        rows = []
        for v in await self.store.registry.list_versions():
            report = await self.store.decisions.decision_report(v.version) or {}
            shadow = (await self.store.shadow.shadow_report(v.version)).as_dict()
            rows.append(
                {
                    "version": v.version,
                    "status": v.status,
                    "indexed": v.indexed_at is not None,
                    "metrics": v.metrics,
                    "decision": {k: report[k] for k in ("auroc", "match", "match_or_suggestion") if k in report},
                    "curve": pr_polyline(report.get("curve") or []),
                    "shadow": shadow if shadow["posts"] else None,
                }
            )
        return rows

    async def rollback(self, version: str | None) -> str:
        from worker.configs import encoder_loader, rollout_config
        from worker.core.rollout import rollback, rollback_target

        mv = await rollback_target(self.store, version)
        loader = encoder_loader(self.settings)
        await rollback(self.store, rollout_config(self.settings), mv, lambda: loader(mv.path))
        return mv.version

    async def quarantined(self) -> list[dict[str, Any]]:
        return [r for r in await self.store.quarantine.quarantine_log() if r.get("cleared_at") is None]

    async def clear_quarantine(self, fact_check_id: str, by: str) -> bool:
        return await self.store.quarantine.clear_quarantine(fact_check_id, by)


class ConsoleRuntime:
    """Everything `factmatch console` runs, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        from worker.configs import store_from_settings

        self.settings = settings
        self.store = store_from_settings(settings)
        self.events = Broadcaster()
        self.metrics = ConsoleMetrics()
        # The console shows posts' images through itself, under the workers' network policy.
        self.image_fetcher = ImageFetcher(fetch_policy(settings)) if settings.images else None
        self.deps = ConsoleDeps(
            reviews=self.store.reviews,
            accounts=self.store.accounts,
            auth=Authenticator(
                self.store.accounts, settings.console_session_ttl_s, settings.console_login_attempts_per_minute
            ),
            events=self.events,
            admin=StoreAdmin(self.store, settings),
            metrics=self.metrics,
            lease_s=settings.console_lease_s,
            undo_s=settings.console_undo_s,
            secure_cookies=settings.console_secure_cookies,
            proxy_user_header=settings.console_proxy_user_header,
            trusted_proxies=settings.trusted_proxies(),
            ready=self.ready,
            trends=self.store.trends,
            fact_checks=self.store.candidates.details,
            active_version=self.active_version,
            groups=self.store.review_groups,
            image_fetcher=self.image_fetcher,
            image_links=self.store.images,
            image_max_pixels=settings.image_max_pixels,
            live_precision=LivePrecision(
                self.store.verdict_stats,
                self.metrics.registry,
                tier_targets(settings),
                window_s=settings.console_precision_window_s,
            ),
        )
        self.app = create_app(self.deps)
        self.server: _Server | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def ready(self) -> dict[str, bool]:
        return {"database": await self.store.ping()}

    async def active_version(self) -> str | None:
        active = await self.store.registry.active_version()
        return active.version if active else None

    async def start(self) -> int:
        """Open the store, start the loops and the web server; returns the port it listens on."""
        await self.store.open(wait=False)
        config = uvicorn.Config(
            self.app,
            host=self.settings.console_host,
            port=self.settings.console_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = _Server(config)
        serving = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self._tasks = [
            serving,  # type: ignore[list-item]
            asyncio.create_task(self.events.follow(self.store.reviews.changes)),
            asyncio.create_task(self.consume_results()),
            asyncio.create_task(self.send_verdicts()),
        ]
        return self.port

    async def stop(self) -> None:
        self.events.close()
        if self.server is not None:
            self.server.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        if self.image_fetcher is not None:
            await self.image_fetcher.close()
        await self.store.close()

    async def consume_results(self) -> None:
        """The console's consumer group on the matches topic: results into review items."""
        s = self.settings
        while True:
            consumer = kafka.consumer(
                s,
                s.topic_matches,
                s.topic_dead_letter,
                group_id=s.console_group_id,
                auto_offset_reset=s.auto_offset_reset,
                session_timeout_ms=s.session_timeout_ms,
            )
            try:
                await consumer.start()
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=500)
                    records = [r for rs in batches.values() for r in rs]
                    if not records:
                        continue
                    results = [r for r in records if r.topic == s.topic_matches]
                    letters = [r for r in records if r.topic == s.topic_dead_letter]
                    added = await self.store.reviews.add_results(self._parsed(results, MatchResult))
                    await self.store.reviews.add_dead_letters(self._parsed(letters, DeadLetter))
                    self.metrics.items_added.inc(added)
                    await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("console consumer: %r; reconnecting", exc)
                await asyncio.sleep(2)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    @staticmethod
    def _parsed(records: list[Any], model: type[M]) -> list[M]:
        parsed = []
        for record in records:
            try:
                parsed.append(model.model_validate_json(record.value or b""))
            except (ValidationError, ValueError) as exc:
                log.warning(
                    "skipped a record that is not a %s at %s/%d@%d: %s",
                    model.__name__,
                    record.topic,
                    record.partition,
                    record.offset,
                    str(exc)[:200],
                )
        return parsed

    async def send_verdicts(self, every_s: float = 0.5) -> None:
        """Publish verdicts whose undo window closed, as Feedback records on the feedback topic."""
        producer = kafka.producer(self.settings)
        started = False
        try:
            while True:
                try:
                    if not started:
                        await producer.start()
                        started = True

                    async def send(batch: list[dict[str, Any]]) -> None:
                        import json

                        sends = [
                            await producer.send(
                                self.settings.topic_feedback,
                                json.dumps(feedback).encode(),
                                key=str(feedback["post_id"]).encode(),
                            )
                            for feedback in batch
                        ]
                        await asyncio.gather(*sends)

                    await self.store.reviews.send_due(send)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("verdict sender: %r; retrying", exc)
                await asyncio.sleep(every_s)
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await producer.stop()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the console until ``stop`` is set (or the process is interrupted)."""
    runtime = ConsoleRuntime(settings)
    port = await runtime.start()
    print(f"console: http://{settings.console_host}:{port}/", flush=True)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runtime.stop()
