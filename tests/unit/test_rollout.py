"""The lifecycle's rules (bootstrap, promotion, shadow gate, retention, rollback, following the
active version) on the in-memory store: the same checks run against Postgres in
``tests/integration/test_store_contract.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.lifecycle_contract import CHECKS
from worker.storage.memory import MemoryStore


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_lifecycle_rule_on_the_memory_store(check: Callable[[Any], Awaitable[None]]) -> None:
    await check(MemoryStore())
