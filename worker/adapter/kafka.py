"""The one Kafka client factory: every producer, consumer, admin client and FastStream broker
the project builds comes from here, with TLS and SASL applied from ``Settings``.

A CLI command, the demo, the topic admin step and the worker therefore reach exactly the
clusters the worker can reach; nothing builds a raw client with only a bootstrap address.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.metadata import MetadataRequest
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from worker.settings import Settings

CLIENT_ID = "factmatch"


class _MetadataRequestNoAutoCreate(MetadataRequest):  # type: ignore[misc]
    """A metadata request that never asks the broker to create a topic.

    aiokafka has no consumer option for it and asks for auto-creation in every metadata
    request, so a worker whose broker lost its topics (a restart, a wiped cluster) re-created
    them itself with the broker's default partition count, and stayed on the wrong partitions.
    Topics belong to ``factmatch topics create`` (or the cluster's own provisioning).
    """

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None) -> None:
        super().__init__(topics, False)


# Every aiokafka client in this process builds its metadata requests through this name.
aiokafka.client.MetadataRequest = _MetadataRequestNoAutoCreate  # type: ignore[misc]


class _NoTaskCallbackLines(logging.Filter):
    """Drops FastStream's "callback for Task-N is being executed..." lines: logged at INFO for
    every subscriber task that ends (each stop), they say nothing an operator can act on and
    landed between the demo's results. A task that failed is still logged, by its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("callback for Task")


logging.getLogger("faststream.access.kafka").addFilter(_NoTaskCallbackLines())
log = logging.getLogger(__name__)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def client_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``settings`` (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        assert settings.kafka_sasl_username and settings.kafka_sasl_password  # checked by Settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same security as FastStream's object, for the worker's broker."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context)
    use_ssl = protocol == "SASL_SSL"
    assert settings.kafka_sasl_username and settings.kafka_sasl_password  # checked by Settings
    username, password = settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_sasl_mechanism == "SCRAM-SHA-256":
        return SASLScram256(username, password, ssl_context=context, use_ssl=use_ssl)
    if settings.kafka_sasl_mechanism == "SCRAM-SHA-512":
        return SASLScram512(username, password, ssl_context=context, use_ssl=use_ssl)
    return SASLPlaintext(username, password, ssl_context=context, use_ssl=use_ssl)


def producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": settings.kafka_max_request_bytes,
        "metadata_max_age_ms": settings.kafka_metadata_max_age_ms,
    }
    options.update(kwargs)
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **client_security(settings), **options)


def consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "enable_auto_commit": False,
        "metadata_max_age_ms": settings.kafka_metadata_max_age_ms,
    }
    options.update(kwargs)
    return AIOKafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap, **client_security(settings), **options)


def admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id=f"{CLIENT_ID}-admin", **client_security(settings)
    )


class Broker(KafkaBroker):
    """FastStream's Kafka broker, joining its consumer groups at once.

    FastStream starts subscribers one after another, and each aiokafka consumer's start waits
    for its group's assignment (seconds each: the coordinator's rebalance delay, or a dead
    predecessor's session). Three groups joined in a row made a restarted worker wait for all
    three; started together, the wait is that of the slowest.
    """

    async def start(self) -> None:
        await self.connect()
        await asyncio.gather(*(subscriber.start() for subscriber in self.subscribers))
        for publisher in self.publishers:
            await publisher.start()
        self.running = True


def broker(settings: Settings, **kwargs: Any) -> KafkaBroker:
    """The worker's FastStream broker: acks from all replicas, batches sized for match results."""
    return Broker(
        # One entry per server: FastStream hands a single "a:1,b:2" string on as one host.
        [server.strip() for server in settings.kafka_bootstrap.split(",")],
        security=broker_security(settings),
        client_id=CLIENT_ID,
        acks="all",
        linger_ms=5,
        # Results carry fact-check texts; aiokafka's 16 KiB default batch is too small for many,
        # and any message the brokers accept must fit one batch.
        max_batch_size=settings.kafka_max_request_bytes,
        max_request_size=settings.kafka_max_request_bytes,
        # New partitions and re-created topics are seen within this; topics are never auto-created.
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        allow_auto_create_topics=False,
        graceful_timeout=settings.shutdown_grace_s,
        # Per-message "Received/Processed" lines go to DEBUG; our own batch logs say more.
        log_level=logging.DEBUG,
        **kwargs,
    )


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached, or refused the configured credentials, at start-up."""


def describe_connection(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        who = f"{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}"
        return f"{settings.kafka_bootstrap} over {protocol} ({who})"
    return f"{settings.kafka_bootstrap} over {protocol}"


async def preflight(settings: Settings, timeout_s: float = 30.0) -> None:
    """Connect once as the worker will, so a wrong address or credential stops start-up with a
    clear message instead of a consumer retrying in the background."""
    client = admin(settings)
    try:
        await asyncio.wait_for(client.start(), timeout_s)
        existing = set(await asyncio.wait_for(client.list_topics(), timeout_s))
    except Exception as exc:
        # aiokafka reports a refused SCRAM login as a KeyError from the server's final message.
        refused = isinstance(exc, KeyError) or "Authentication" in type(exc).__name__
        hint = (
            "authentication failed: check kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password"
            if refused and settings.kafka_security_protocol.startswith("SASL")
            else "no broker answered, or one closed the connection (a listener that wants TLS or SASL?)"
        )
        raise KafkaUnavailable(
            f"cannot use Kafka at {describe_connection(settings)}: {hint} [{type(exc).__name__}]"
        ) from exc
    finally:
        await client.close()
    missing = [t for t in topic_names(settings, reports=False) if t not in existing]
    if missing:
        # Workers never create topics (see _MetadataRequestNoAutoCreate): say which, and how.
        raise KafkaUnavailable(
            f"topics missing at {settings.kafka_bootstrap}: {', '.join(missing)}; run `factmatch topics`"
        )
    # The claim reports' topics are optional: an upgraded group keeps matching until they exist.
    if reports := [t for t in topic_names(settings) if t not in existing]:
        hint = "run `factmatch topics`; until then no report is published"
        log.warning("claim report topics missing (%s): %s", ", ".join(reports), hint)


def topic_names(settings: Settings, *, reports: bool = True) -> list[str]:
    """The topics a worker reads or writes (with ``reports``, the claim reports' when it publishes them)."""
    publishes = reports and settings.claims_report_interval_s > 0
    report_topics = [settings.topic_trending, settings.topic_emerging] if publishes else []
    return [
        settings.topic_posts,
        settings.topic_matches,
        settings.topic_dead_letter,
        settings.topic_factchecks,
        settings.topic_feedback,
        *report_topics,
    ]
