"""The engine's non-finite check across two real gloo processes (slow to start: one test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from facescan.training import NonFiniteLossError, train_one_epoch

from .conftest import INPUT, TINY_OPTIONS, TinyNet

STEPS, POISONED_STEP, CHECK_EVERY = 8, 3, 2


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = TinyNet(TINY_OPTIONS)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(rank)
        batches = []
        for step in range(STEPS):
            images = torch.randn(4, 3, INPUT, INPUT, generator=g)
            if rank == 1 and step == POISONED_STEP:
                images[0] = float("nan")  # only rank 1 sees a NaN loss
            batches.append((images, torch.arange(4) % 2))
        taken = []

        def loader():
            for batch in batches:
                taken.append(1)
                yield batch

        result: dict = {"raised": False}
        try:
            train_one_epoch(
                model,
                nn.CrossEntropyLoss(),
                loader(),
                optimizer,
                device=torch.device("cpu"),
                check_every=CHECK_EVERY,
            )
        except NonFiniteLossError as exc:
            result = {"raised": True, "step": exc.step, "nan": math.isnan(exc.value)}
        result["taken"] = len(taken)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_check(tmp_path: Path) -> None:
    """Rank 1's loss is NaN at step 3; the check after step 4 (``check_every`` 2) stops both
    ranks there, both naming step 3, so no rank is left waiting in a collective."""
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = {"raised": True, "step": POISONED_STEP, "nan": True, "taken": 4}
    assert results == [expected, expected]
