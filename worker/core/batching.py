"""Splits a fetched batch into encoder calls that respect a padded-token budget.

Kafka hands the worker up to ``batch_max_records`` posts at once; encoding them in one
call would pad every short post to the longest one. Sorting by length and cutting when
rows x longest-row would exceed the budget keeps memory bounded (long posts make smaller
batches) and wastes little compute on padding.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(token_counts: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group indices into encoder calls, shortest first; each group's padded cost fits the budget.

    A single text longer than the budget still gets a group of its own (it is truncated
    by the encoder, never dropped).
    """
    if token_budget < 1:
        raise ValueError("token_budget must be positive")
    order = sorted(range(len(token_counts)), key=lambda i: (token_counts[i], i))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(1, token_counts[index])
        # Sorted ascending, so this text is the group's longest if it joins.
        if current and (len(current) + 1) * max(longest, length) > token_budget:
            groups.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups
