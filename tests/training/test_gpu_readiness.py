"""Issue 18 (the trainer's part): SyncBatchNorm, compile per run, out-of-memory, world size.

CUDA itself is not available here: what depends on it is tested through the decisions the trainer
takes from the device (mocked), and the GPU-only effects are listed in docs/scaling.md's checklist.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from facescan import runtime
from facescan.models import resolve_options
from facescan.training import TrainConfig, run_fingerprint
from facescan.training import trainer as trainer_module

from .conftest import make_config
from .test_fit import NS, run

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_sync_batchnorm_is_used_on_cuda_with_several_workers_only() -> None:
    assert runtime.use_sync_batchnorm("auto", CUDA, 8)
    assert not runtime.use_sync_batchnorm("auto", CUDA, 1)
    assert not runtime.use_sync_batchnorm("auto", CPU, 4)  # gloo: SyncBatchNorm cannot run
    assert not runtime.use_sync_batchnorm(False, CUDA, 8)
    with pytest.raises(ValueError, match=r"^training\.sync_batchnorm: true needs CUDA GPUs"):
        runtime.use_sync_batchnorm(True, CPU, 2)


def test_sync_batchnorm_true_on_a_cpu_machine_fails_at_validation(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"training\.sync_batchnorm: true needs CUDA GPUs"):
        TrainConfig.from_params({"sync_batchnorm": True})
    assert TrainConfig.from_params({"sync_batchnorm": "auto"}).sync_batchnorm == "auto"


def test_the_number_of_workers_is_part_of_the_fingerprint() -> None:
    config = TrainConfig.from_params({}, check_machine=False)
    options = resolve_options("resnet50")
    one = run_fingerprint(options, config, 0, 48, "data", world_size=1)
    eight = run_fingerprint(options, config, 0, 48, "data", world_size=8)
    assert one != eight
    assert {"tf32", "sync_batchnorm"} <= set(config.result_affecting())


def test_every_run_in_one_process_really_runs_compiled(
    tiny_model, caches, tmp_path, monkeypatch
) -> None:
    """Dynamo is reset per run: the 5th model compiles as the 1st did (no silent eager)."""
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "eager")  # Dynamo's capture, no toolchain
    compiled = []
    for i in range(5):
        config = make_config(tmp_path / str(i), max_epochs=1, t_max=1, compile=True)
        ckpt = run(caches, config)
        compiled.append(ckpt["provenance"]["runtime"]["compiled"])
    assert compiled == [True] * 5
    plain = run(caches, make_config(tmp_path / "eager", max_epochs=1, t_max=1))
    assert plain["provenance"]["runtime"]["compiled"] is False
    assert plain["provenance"]["runtime"]["sync_batchnorm"] is False


def test_out_of_memory_names_the_batch_size_and_the_variant(
    tiny_model, caches, tmp_path, monkeypatch
) -> None:
    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "train_one_epoch", oom)
    with pytest.raises(
        RuntimeError,
        match=rf"ran out of memory training variant '{NS}' at \d+ px with 8 images per GPU "
        r"\(training\.batch_size 8 over 1 worker\(s\), .*lower training\.batch_size",
    ):
        run(caches, make_config(tmp_path))
