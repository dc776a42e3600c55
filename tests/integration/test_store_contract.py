"""The Postgres store keeps the contract the in-memory one is unit-tested with: the lifecycle's
rules (``tests/lifecycle_contract.py``) give the same outcomes on both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.lifecycle_contract import CHECKS
from worker.storage import Store


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_lifecycle_rule_on_postgres(database_url: str, check: Callable[[Any], Awaitable[None]]) -> None:
    store = Store(database_url)
    await store.open()
    try:
        await check(store)
    finally:
        await store.close()
