"""Device, precision, memory format and thread choices."""

from __future__ import annotations

import contextlib

import pytest
import torch

from facescan.training import inference_settings, runtime

CPU = torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a GPU-less machine")
def test_asking_for_a_gpu_without_one_says_how_to_fix_it() -> None:
    with pytest.raises(
        ValueError,
        match="training.device is 'cuda' but torch sees no CUDA GPU.*"
        "set training.device to auto or cpu",
    ):
        runtime.select_device("cuda")
    assert runtime.select_device("auto") == CPU
    with pytest.raises(ValueError, match="training.device: expected auto, cpu or cuda"):
        runtime.device_type("gpu")


def test_precision_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert runtime.resolve_precision("auto", CPU) == runtime.Precision(torch.bfloat16, False)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert runtime.resolve_precision("auto", CPU) == runtime.Precision(None, False)
    assert runtime.resolve_precision("off", CPU).name == "fp32"
    assert runtime.resolve_precision("bf16", CPU).name == "bf16"
    with pytest.raises(ValueError, match="training.amp: fp16 needs a CUDA GPU"):
        runtime.resolve_precision("fp16", CPU)


def test_channels_last_follows_amp_and_threads_split_the_cores(monkeypatch) -> None:
    assert runtime.resolve_channels_last("auto", runtime.Precision(torch.bfloat16, False))
    assert not runtime.resolve_channels_last("auto", runtime.Precision(None, False))
    assert runtime.resolve_channels_last(True, runtime.Precision(None, False))
    monkeypatch.setattr(runtime, "usable_cores", lambda: 16)
    assert runtime.threads_per_rank("auto", 4) == 4
    assert runtime.threads_per_rank("auto", 32) == 1
    assert runtime.threads_per_rank(3, 4) == 3


def test_workers_and_backend_on_cpu() -> None:
    assert runtime.resolve_nproc("auto", "cpu") == 1
    assert runtime.resolve_nproc(2, "cpu") == 2
    assert runtime.resolve_backend("auto", CPU) == "gloo"
    with pytest.raises(ValueError, match="training.distributed.backend: nccl needs GPUs"):
        runtime.resolve_backend("nccl", CPU)


def test_inference_settings_on_this_machine() -> None:
    device, amp_dtype, channels_last = inference_settings("cpu", "off")
    assert (device, amp_dtype, channels_last) == (CPU, None, False)
    device, amp_dtype, channels_last = inference_settings()
    assert channels_last == (amp_dtype is not None)


def test_gpu_decisions_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choices a GPU machine would make, with torch.cuda's answers stubbed."""
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )  # emulated only
    assert runtime.resolve_precision("auto", gpu) == runtime.Precision(torch.float16, True)
    with pytest.raises(ValueError, match="bf16 is not supported by Tesla V100"):
        runtime.resolve_precision("bf16", gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert runtime.resolve_precision("auto", gpu) == runtime.Precision(torch.bfloat16, False)
    assert runtime.resolve_precision("fp16", gpu) == runtime.Precision(torch.float16, True)

    monkeypatch.setattr(runtime, "gpu_count", lambda: 4)
    assert runtime.resolve_nproc("auto", "cuda") == 4
    with pytest.raises(ValueError, match="nproc_per_node: 8 workers asked for but only 4 GPU"):
        runtime.resolve_nproc(8, "cuda")
    assert runtime.resolve_backend("auto", gpu) == "nccl"
