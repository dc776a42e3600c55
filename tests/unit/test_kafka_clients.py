"""Unit tier: every Kafka client the project builds carries the configured TLS and SASL settings."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from worker.adapter import kafka
from worker.settings import Settings


def secured(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "kafka-1.internal:9093,kafka-2.internal:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "factmatch",
        "kafka_sasl_password": "s3cret-pw",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_producer_consumer_and_admin_carry_sasl_ssl() -> None:
    settings = secured()
    producer = kafka.producer(settings)
    consumer = kafka.consumer(settings, "posts", group_id="g")
    admin = kafka.admin(settings)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "factmatch"
        assert client._sasl_plain_password == "s3cret-pw"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._bootstrap_servers == settings.kafka_bootstrap
    await producer.stop()
    await consumer.stop()


def test_plaintext_clients_get_no_security_and_tls_without_sasl_gets_only_a_context() -> None:
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert kafka.client_security(plain) == {}
    assert kafka.broker_security(plain) is None
    tls = Settings(_env_file=None, kafka_security_protocol="SSL")  # type: ignore[call-arg]
    options = kafka.client_security(tls)
    assert options["security_protocol"] == "SSL" and isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


def test_the_workers_broker_carries_the_same_security() -> None:
    from faststream.security import SASLScram512

    security = kafka.broker_security(secured())
    assert isinstance(security, SASLScram512) and security.use_ssl
    assert security.username == "factmatch" and security.password == "s3cret-pw"
    options = kafka.broker(secured()).config.broker_config.builder.keywords  # type: ignore[attr-defined]
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "factmatch" and options["sasl_plain_password"] == "s3cret-pw"
    # Each bootstrap server on its own: one "a:1,b:2" string would be read as a single host.
    assert options["bootstrap_servers"] == ["kafka-1.internal:9093", "kafka-2.internal:9093"]


def test_a_missing_ca_file_fails_at_start_up_not_on_first_connect(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        kafka.client_security(secured(kafka_ssl_cafile=tmp_path / "absent.pem"))


def test_no_module_builds_a_raw_kafka_client() -> None:
    """The factory is the only place that constructs aiokafka clients or a FastStream broker."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("worker/**/*.py"), *root.glob("trainer/**/*.py")]:
        if path.name == "kafka.py" and path.parent.name == "adapter":
            continue
        text = path.read_text()
        for needle in ("AIOKafkaProducer(", "AIOKafkaConsumer(", "AIOKafkaAdminClient(", "KafkaBroker("):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []
