"""Small Kafka conversations the CLI and the demo have with a running worker.

Every client comes from :mod:`worker.adapter.kafka`, so these reach a TLS or SASL cluster
exactly as the worker does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from worker.adapter import kafka
from worker.settings import Settings
from worker.wire import Feedback, Post


async def send_post(settings: Settings, post: Post, *, wait_s: float | None) -> dict[str, Any] | None:
    """Produce ``post`` to the posts topic; with ``wait_s``, its result from the matches topic (None on timeout)."""
    consumer = None
    if wait_s is not None:
        consumer = kafka.consumer(
            settings,
            settings.topic_matches,
            auto_offset_reset="latest",
            group_id=f"factmatch-cli-{uuid.uuid4().hex[:8]}",
        )
        await consumer.start()
        # Join the group before producing, so "latest" cannot skip our own result.
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_posts, post.model_dump_json().encode(), key=post.id.encode())
    finally:
        await producer.stop()
    if consumer is None or wait_s is None:
        return None
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    body: dict[str, Any] = json.loads(record.value)
                    if body.get("post_id") == post.id:
                        return body
        return None
    finally:
        await consumer.stop()


async def send_feedback(settings: Settings, item: Feedback) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_feedback, item.model_dump_json().encode(), key=item.post_id.encode()
        )
    finally:
        await producer.stop()


async def stream_and_collect(
    settings: Settings,
    posts: Sequence[dict[str, Any]],
    bad: Sequence[bytes],
    timeout_s: float,
    on_result: Callable[[dict[str, Any]], None],
    on_dead_letter: Callable[[dict[str, Any]], None],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Produce ``posts`` and ``bad`` payloads, then read results and dead letters until all are back."""
    consumer = kafka.consumer(
        settings,
        settings.topic_matches,
        settings.topic_dead_letter,
        group_id=f"factmatch-demo-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    producer = kafka.producer(settings)
    await producer.start()
    wanted = {str(p["id"]) for p in posts}
    results: dict[str, dict[str, Any]] = {}
    dead: list[dict[str, Any]] = []
    try:
        for post in posts:
            payload = json.dumps(post, ensure_ascii=False).encode()
            await producer.send(settings.topic_posts, payload, key=str(post["id"]).encode())
        for payload in bad:
            await producer.send(settings.topic_posts, payload, key=b"malformed")
        await producer.flush()
        deadline = time.monotonic() + timeout_s
        while (len(results) < len(wanted) or len(dead) < len(bad)) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    body = json.loads(record.value)
                    if record.topic == settings.topic_dead_letter:
                        dead.append(body)
                        on_dead_letter(body)
                    elif body["post_id"] in wanted and body["post_id"] not in results:
                        results[body["post_id"]] = body
                        on_result(body)
    finally:
        await producer.stop()
        await consumer.stop()
    return results, dead
