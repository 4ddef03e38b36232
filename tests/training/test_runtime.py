"""Device, precision, memory format and thread choices."""

from __future__ import annotations

import contextlib

import pytest
import torch

from facescan import runtime
from facescan.runtime import inference_settings
from facescan.training import TrainConfig

CPU = torch.device("cpu")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as a GPU-less one, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_asking_for_a_gpu_without_one_says_how_to_fix_it(no_gpu: None) -> None:
    with pytest.raises(
        ValueError,
        match=r"^training.device: cuda was requested but no CUDA GPU is visible "
        r"\(torch.cuda.is_available\(\) is False\); set training.device: auto or cpu",
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
    with pytest.raises(ValueError, match=r"^training.amp: fp16 was requested, which needs a CUDA"):
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
    with pytest.raises(
        ValueError, match=r"^training.distributed.backend: nccl was requested, which needs CUDA"
    ):
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
    with pytest.raises(ValueError, match="^training.amp: bf16 was requested but Tesla V100"):
        runtime.resolve_precision("bf16", gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert runtime.resolve_precision("auto", gpu) == runtime.Precision(torch.bfloat16, False)
    assert runtime.resolve_precision("fp16", gpu) == runtime.Precision(torch.float16, True)

    monkeypatch.setattr(runtime, "gpu_count", lambda: 4)
    assert runtime.resolve_nproc("auto", "cuda") == 4
    with pytest.raises(
        ValueError,
        match=r"^training.distributed.nproc_per_node: 8 workers were requested on training.device "
        r"cuda but only 4 CUDA GPU\(s\) are visible; set training.distributed.nproc_per_node: "
        r"auto \(one worker per GPU\) or at most 4",
    ):
        runtime.resolve_nproc(8, "cuda")
    assert runtime.resolve_backend("auto", gpu) == "nccl"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"device": "cuda"},
            r"^training.device: cuda was requested but no CUDA GPU is visible .*; "
            r"set training.device: auto or cpu",
        ),
        (
            {"device": "cuda", "distributed": {"nproc_per_node": 2}},
            r"^training.device: cuda was requested but no CUDA GPU is visible",
        ),
        (
            {"amp": "fp16"},
            r"^training.amp: fp16 was requested, which needs a CUDA GPU, but no CUDA GPU is "
            r"visible \(torch.cuda.is_available\(\) is False\); set training.amp: auto, bf16 or off$",
        ),
        (
            {"distributed": {"backend": "nccl"}},
            r"^training.distributed.backend: nccl was requested, which needs CUDA GPUs, but no "
            r"CUDA GPU is visible .*; set training.distributed.backend: auto or gloo$",
        ),
    ],
)
def test_gpu_options_on_a_cpu_machine_fail_at_config_validation(
    no_gpu: None, options: dict, message: str
) -> None:
    """Refused by TrainConfig.from_params, i.e. in the training node before fit() or any worker."""
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_params(options)
    config = TrainConfig.from_params(options, check_machine=False)  # the values themselves are fine
    with pytest.raises(ValueError, match=message):
        config.check_machine()


def test_cpu_options_pass_the_machine_check(no_gpu: None) -> None:
    config = TrainConfig.from_params({"amp": "bf16", "distributed": {"nproc_per_node": 2}})
    assert config.check_machine() == "cpu"
    assert runtime.resolve_backend("gloo", "cpu") == "gloo"


def test_gpu_options_with_training_device_cpu_on_a_gpu_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="^training.amp: fp16 .* but training.device is cpu;"):
        TrainConfig.from_params({"device": "cpu", "amp": "fp16"})
    with pytest.raises(ValueError, match="^training.distributed.backend: nccl .* is cpu;"):
        TrainConfig.from_params({"device": "cpu", "distributed": {"backend": "nccl"}})
    with pytest.raises(ValueError, match="^training.distributed.nproc_per_node: 2 workers"):
        TrainConfig.from_params({"device": "cuda", "distributed": {"nproc_per_node": 2}})


def test_inference_errors_name_their_own_section(no_gpu: None) -> None:
    with pytest.raises(ValueError, match="^predict.device: cuda was requested .* predict.device:"):
        inference_settings("cuda", "off", prefix="predict")
    with pytest.raises(ValueError, match="^evaluation.amp: fp16 was requested"):
        inference_settings("cpu", "fp16")


def test_make_optimizer_is_fused_adamw_with_adamws_update() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    b.load_state_dict(a.state_dict())
    fused = runtime.make_optimizer(a.parameters(), lr=1e-2, weight_decay=0.05)
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.05)
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"]
    x = torch.randn(4, 8)
    for model, optimizer in ((a, fused), (b, plain)):
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_parameter_groups_give_the_transformer_its_own_rate() -> None:
    from facescan.models import create_model

    net = create_model("aspp_vit", vit_dim=32, vit_depth=1, vit_heads=2, aspp_channels=32)
    one = runtime.parameter_groups(net, 1e-3)
    assert len(one) == 1 and len(one[0]["params"]) == len(list(net.parameters()))
    groups = runtime.parameter_groups(net, 1e-3, transformer_lr_scale=0.2)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 2e-4])
    vit = {id(p) for p in net.tail_vit.parameters()}
    assert {id(p) for p in groups[1]["params"]} == vit
    assert not vit & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    # A CNN-only variant has no transformer part: one group whatever the scale.
    cnn = create_model("resnet50")
    assert len(runtime.parameter_groups(cnn, 1e-3, transformer_lr_scale=0.2)) == 1
    # The schedule keeps the ratio: warm-up and cosine scale both groups alike.
    from facescan.training.schedule import cosine_with_warmup

    optimizer = runtime.make_optimizer(groups, 1e-3, 0.0)
    scheduler = cosine_with_warmup(
        optimizer, lr=1e-3, t_max=10, eta_min=0.0, steps_per_epoch=2, warmup_epochs=1
    )
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 1e-4])
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 2e-4])


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """This machine as one whose process sees ``n`` CUDA GPUs (``gpus(n)``)."""

    def visible(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    return visible


def test_a_launcher_that_binds_one_gpu_per_process_is_honoured(gpus) -> None:
    """Issue "Ready for GPUs" item 6: SLURM/Kubernetes set CUDA_VISIBLE_DEVICES to one GPU per
    process, so local rank 3 sees one GPU, cuda:0: its own (this was refused at start-up)."""
    gpus(1)
    for local_rank in (0, 1, 3):
        assert runtime.select_device("cuda", local_rank) == torch.device("cuda", 0)
        assert runtime.select_device("auto", local_rank) == torch.device("cuda", 0)
    assert runtime.select_device("cuda") == torch.device("cuda", 0)
    assert runtime.select_device("cpu", 3) == CPU


def test_each_local_rank_takes_its_gpu_and_extra_ranks_are_refused(gpus) -> None:
    gpus(4)
    assert [runtime.select_device("cuda", r).index for r in range(4)] == [0, 1, 2, 3]
    gpus(2)
    with pytest.raises(
        ValueError,
        match=r"^training.distributed.nproc_per_node: worker 3 has no GPU of its own \(only 2 "
        r"CUDA GPU\(s\) are visible\); start at most one worker per GPU",
    ):
        runtime.select_device("cuda", 3)


@pytest.fixture
def cuda_math():
    """Restore the process-wide flags configure_cuda_math sets."""
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_cuda_math_settings_apply_on_a_gpu_only(cuda_math: None) -> None:
    """Issue "Ready for GPUs" item 8: cuDNN autotuning and TF32 (training.cudnn_benchmark,
    training.tf32); flags only, so a stand-in CUDA device is enough."""
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    assert runtime.configure_cuda_math(CPU, cudnn_benchmark=True, tf32=True) == {}
    assert not torch.backends.cudnn.benchmark
    assert torch.get_float32_matmul_precision() == "highest"

    gpu = torch.device("cuda", 0)
    applied = runtime.configure_cuda_math(gpu, cudnn_benchmark=True, tf32=True)
    assert applied == {"cudnn_benchmark": True, "tf32": True}
    assert torch.backends.cudnn.benchmark
    assert torch.get_float32_matmul_precision() == "high"
    # Torch's legacy and new flags agree (reading one after setting the other can raise).
    assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"

    applied = runtime.configure_cuda_math("cuda", cudnn_benchmark=False, tf32=False)
    assert applied == {"cudnn_benchmark": False, "tf32": False}
    assert not torch.backends.cudnn.benchmark
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert not torch.backends.cudnn.allow_tf32
