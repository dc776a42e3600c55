"""Creates factmatch's topics when they do not exist (local stack, tests, first deploy).

Production clusters usually manage topics themselves; this only adds what is missing and
never changes an existing topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from worker.adapter import kafka
from worker.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, partitions: int | None = None, replication: int | None = None) -> list[str]:
    """Create the missing topics (``topic_partitions`` x ``topic_replication`` unless given); the created names."""
    partitions = partitions or settings.topic_partitions
    replication = replication or settings.topic_replication
    names = kafka.topic_names(settings)
    admin = kafka.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name=n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            # Metadata propagates asynchronously; wait until every topic is visible.
            for _ in range(50):
                if set(missing) <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()
