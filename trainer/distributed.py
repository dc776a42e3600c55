"""Training under ``torchrun``: which process this is, and the few things rank 0 shares.

torchrun (torch.distributed's launcher) starts one process per GPU and the Hugging Face Trainer
that sentence-transformers uses runs DDP/FSDP across them; nothing here launches or schedules
anything. What the trainer job adds is a single owner for side effects: rank 0 reads the
training data (so every rank trains on the same snapshot even while feedback arrives), names
the version, saves it, and does the registry, gate and rollout work; the other ranks train and
exit. Outside torchrun every helper is a no-op and the job runs as one process.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Ranks:
    """This process's place, from the variables torchrun sets (none: a single process)."""
    return Ranks(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init() -> Ranks:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); the Trainer reuses it."""
    import torch
    import torch.distributed as dist

    ranks = current()
    if ranks.distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return ranks


def _broadcast(payload: object) -> object:
    import torch.distributed as dist

    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


async def from_main(ranks: Ranks, compute: Callable[[], Awaitable[T]]) -> T:
    """``compute()`` on rank 0, its value (or its error) handed to every rank.

    An error is re-raised everywhere, so a bad input stops all ranks at once instead of
    leaving the others waiting in a collective until the job's deadline.
    """
    if not ranks.distributed:
        return await compute()
    payload: tuple[T | None, BaseException | None] = (None, None)
    if ranks.main:
        try:
            payload = (await compute(), None)
        except Exception as exc:  # handed to the other ranks, then re-raised here too
            payload = (None, exc)
    shared: tuple[T | None, BaseException | None] = _broadcast(payload)  # type: ignore[assignment]
    value, error = shared
    if error is not None:
        if ranks.main:
            raise error
        raise RuntimeError(f"rank 0 failed: {error}") from error
    return value  # type: ignore[return-value]


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
