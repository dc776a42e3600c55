"""Run under torchrun by tests/quality/test_trainer_scale.py: the trainer's loss, one half-batch per rank.

Prints (rank 0) the loss averaged over ranks with and without gathering, and the loss of the
whole batch in one process: with gathering, the two ranks together must see exactly what one
process with the whole batch sees.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from sentence_transformers import SentenceTransformer

from trainer import distributed
from trainer.train import make_loss
from worker.settings import Settings


def main(model_dir: str) -> None:
    ranks = distributed.init()
    model = SentenceTransformer(model_dir, device="cpu")
    torch.manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    documents = torch.nn.functional.normalize(queries + 0.8 * torch.randn(8, 16), dim=1)
    mine = slice(ranks.rank * 4, ranks.rank * 4 + 4)
    found: dict[str, float] = {}
    for gather in (True, False):
        settings = Settings(_env_file=None, train_gather_across_devices=gather)  # type: ignore[call-arg]
        loss = make_loss(model, settings, ranks).calculate_loss([[queries[mine]], [documents[mine]]]).detach()
        dist.all_reduce(loss)
        found[f"gathered={gather}"] = loss.item() / ranks.world_size
    whole = make_loss(model, Settings(_env_file=None), distributed.Ranks())  # type: ignore[call-arg]
    found["one_process"] = whole.calculate_loss([[queries], [documents]]).item()
    if ranks.main:
        print("LOSSES " + json.dumps(found), flush=True)
    distributed.shutdown(ranks)


if __name__ == "__main__":
    main(sys.argv[1])
