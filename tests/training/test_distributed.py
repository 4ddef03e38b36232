"""Two gloo workers through torch elastic, with the real model (slow to start: two tests only)."""

from __future__ import annotations

import pytest
import torch

from facescan.models import resolve_options
from facescan.training import WorkerFailedError, fit

from .conftest import INPUT, make_cache, make_config
from .fakes import CrashingCache

SMALL = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "aspp_channels": 32}


@pytest.mark.slow
def test_two_gloo_workers_train_in_lockstep_and_rank0_writes_one_checkpoint(tmp_path) -> None:
    # 16 train images, global batch 8 split 4 + 4: two steps per epoch on each rank.
    train = make_cache(tmp_path / "train", 16, seed=2)
    val = make_cache(tmp_path / "val", 6, seed=3)  # shards of 3 + 3, no padding
    config = make_config(
        tmp_path,
        max_epochs=2,
        t_max=2,
        lr=2e-4,
        threads="auto",
        # the per-step warm-up and the clipping run on every rank alike (the weights must agree)
        warmup_epochs=1,
        clip_grad_norm=1.0,
        distributed={"nproc_per_node": 2, "timeout_s": 120},
    )
    ckpt = fit(
        namespace="resnet50",
        variant="resnet50",
        model_options=resolve_options("resnet50", **SMALL),
        train_cache=train,
        val_cache=val,
        config=config,
        input_size=INPUT,
    )

    runtime = ckpt["provenance"]["runtime"]
    assert runtime["world_size"] == 2
    hashes = runtime["rank_state_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # both ranks ended with identical weights
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2]
    assert ckpt["history"][0]["images_per_s"] > 0
    run_dir = tmp_path / "resume" / "resnet50"
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "done.json"]
    assert len(list((tmp_path / "tb" / "resnet50").glob("events.out.tfevents.*"))) == 1
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["best_epoch"] == ckpt["best_epoch"]


@pytest.mark.slow
def test_a_crashing_worker_fails_the_node_with_its_message(caches, tmp_path) -> None:
    train, val = caches
    config = make_config(
        tmp_path, max_epochs=1, t_max=1, distributed={"nproc_per_node": 2, "timeout_s": 60}
    )
    with pytest.raises(WorkerFailedError, match=r"rank 1 of 2 failed.*" + CrashingCache.MESSAGE):
        fit(
            namespace="resnet50",
            variant="resnet50",
            model_options=resolve_options("resnet50", **SMALL),
            train_cache=CrashingCache.wrap(train),
            val_cache=val,
            config=config,
            input_size=INPUT,
        )
    assert not (tmp_path / "resume" / "resnet50" / "done.json").exists()


def test_the_recorded_cause_wins_over_a_lost_peer(tmp_path, monkeypatch) -> None:
    """Rank 0 only lost its peer; rank 1 raised first: the error names rank 1's exception."""
    from facescan.training import distributed as d

    monkeypatch.setenv(d._FAILURE_DIR_ENV, str(tmp_path))
    d.record_failure(1, RuntimeError("disk full"))
    d.record_failure(0, RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1"))
    assert d._recorded_failure(str(tmp_path)) == (1, "RuntimeError: disk full")
