"""Training speed of every variant with the project's defaults; prints one JSON document.

    python benchmarks/train_step.py [--variants resnet50,aspp] [--sizes 64,128,224]
        [--batch-size 16] [--repeats 5] [--warmup 2] [--threads auto] [--device auto]
        [--amp auto] [--channels-last auto] [--compile] [--options JSON] [--clock wall|cpu]
        [--max-spread 0.25] [--retries 2] [--steps N] [--check-every N]
        [--no-cudnn-benchmark] [--no-tf32]
    python benchmarks/train_step.py --ddp 1,2,4,8 --variants aspp_crossscan_vit --sizes 224

Training steps are :func:`facescan.training.engine.train_one_epoch` over ``--steps`` batches of
random images (default 1 on a CPU, 20 on a GPU), timed as one call and divided by the steps: the
per-step time of training, where the loss is read on the host every ``--check-every`` steps
(the engine's 50 by default; ``--check-every 1`` puts a host-device sync in every step) and the
epoch's sums at its end. As the training node runs them: the project's fused AdamW,
cross-entropy, a ``GradScaler`` with fp16, batches in pinned memory on a GPU (copied
asynchronously), ``cudnn.benchmark`` and TF32 on a GPU (``training.cudnn_benchmark``,
``training.tf32``); the reference gets ``torch.optim.AdamW``'s defaults. Data loading is not
included (benchmarks/data_pipeline.py measures that). Each (variant, size) runs in a fresh
subprocess with the settings the project resolves on this machine (``training.amp``,
``channels_last``, ``threads`` = ``auto`` unless given), after ``--warmup`` calls (the first of
one step: ``first_step_s``); its timed calls are interleaved with those of the reference,
torchvision's ResNet-50 in float32, eager, in the same process, and the medians of ``--repeats``
calls, per step, are reported:

- ``images_per_s``; ``ratio_to_reference`` = variant images/s / reference images/s;
- ``gflop_per_s``: forward FLOPs (``FlopCounterMode``, attention included) x 3 per image x images/s;
- ``efficiency_vs_baseline``: the variant's GFLOP/s over the ``resnet50`` variant's (with the same
  defaults), whose steps are interleaved in the same process too, so load that changes between
  processes cancels out; the summary tabulates it per size and lists as ``noisy`` the results
  whose timings still spread more than 25% after ``--retries`` re-measurements;
- ``peak_rss_mb`` after the variant's warm-up steps (before the reference is built); on a GPU also
  ``gpu_peak_mb`` (``torch.cuda.max_memory_allocated``) and ``host_syncs_per_call``: how often
  one more call (``steps_per_call`` steps) made the host wait for the GPU
  (``torch.cuda.set_sync_debug_mode("warn")``): a constant, whatever ``--steps``, unless
  ``--check-every`` is below it.

With ``--ddp 1,2,...`` it measures DDP scaling instead: for each worker count, workers started by
``torch.distributed.run`` (one per GPU; on a CPU they split the cores), ``--batch-size`` images per
worker, global images/s from rank 0 and ``scaling_efficiency`` = images/s / (workers x 1-worker
images/s).

Not a test: numbers depend on the machine and its load; the JSON records both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BASELINE = "resnet50"
TARGETS = {"baseline_vs_reference_128": 1.8, "efficiency_128": 0.85, "efficiency_224": 0.70}


def _setup(args: dict[str, Any], ranks: int = 1, local_rank: int | None = None) -> Any:
    """Threads, device, precision, memory format and CUDA math as the training node resolves
    them."""
    import torch

    from facescan import runtime

    torch.set_num_threads(runtime.threads_per_rank(args["threads"], ranks))
    device = runtime.select_device(args["device"], local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    configure = getattr(runtime, "configure_cuda_math", None)  # absent in older checkouts
    if configure is not None:
        configure(
            device,
            cudnn_benchmark=args.get("cudnn_benchmark", True),
            tf32=args.get("tf32", True),
        )
    precision = runtime.resolve_precision(args["amp"], device)
    channels_last = runtime.resolve_channels_last(args["channels_last"], precision)
    return device, precision, channels_last


def _steps(args: dict[str, Any], device: Any) -> int:
    """Training steps per timed call: ``--steps``, or 1 on a CPU (no host-device syncs to
    amortise there) and 20 on a GPU."""
    return args.get("steps") or (20 if device.type == "cuda" else 1)


def _per_step(times: dict[str, dict[str, list[float]]], steps: int) -> dict[str, Any]:
    """Seconds of calls of ``steps`` steps -> seconds per step."""
    return {
        name: {clock: [t / steps for t in values] for clock, values in clocks.items()}
        for name, clocks in times.items()
    }


def _make_step(
    net: Any, args: dict[str, Any], device: Any, precision: Any, cl: bool, project: bool
) -> Any:
    """``run(steps)``: ``steps`` training steps of ``net`` on a fixed random batch, through the
    engine, as one epoch.

    ``project``: the training node's optimizer, precision (``GradScaler`` with fp16) and compile
    setting; otherwise plain ``torch.optim.AdamW`` defaults, float32 and eager (the reference).
    On a GPU the batch is in pinned memory, as the training loader's batches are.
    """
    import torch
    from torch import nn

    from facescan import runtime
    from facescan.training.engine import train_one_epoch

    size, batch = args["size"], args["batch_size"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    net.to(device, memory_format=torch.channels_last if cl else torch.preserve_format)
    model = runtime.compile_model(net, args["compile"]) if project else net
    if torch.distributed.is_initialized():
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    make_optimizer = getattr(runtime, "make_optimizer", None)  # absent in older checkouts
    if project and make_optimizer is not None:
        optimizer = make_optimizer(net.parameters(), lr=1e-4, weight_decay=0.05)
    else:
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.05)
    criterion = nn.CrossEntropyLoss()
    amp_dtype = precision.dtype if project else None
    scaler = torch.amp.GradScaler(device.type) if project and precision.use_scaler else None
    extra = {"check_every": args["check_every"]} if args.get("check_every") else {}

    def run(steps: int) -> None:
        train_one_epoch(
            model,
            criterion,
            [(images, labels)] * steps,
            optimizer,
            device=device,
            amp_dtype=amp_dtype,
            scaler=scaler,
            channels_last=cl,
            **extra,
        )

    return run


def _warm_up(run: Any, calls: int, steps: int, device: Any) -> float:
    """``calls`` untimed calls (at least one): the first of one step, whose seconds are returned
    (compilation, kernel selection), the others of ``steps`` steps."""
    first = C.warm_up(lambda: run(1), 1, device)
    if calls > 1:
        C.warm_up(lambda: run(steps), calls - 1, device)
    return first


def host_syncs(fn: Any, device: Any) -> int | None:
    """How many times ``fn()`` made the host wait for the GPU: the warnings of
    ``torch.cuda.set_sync_debug_mode("warn")`` (``.item()``, ``.tolist()``, blocking copies) during
    one call; None on a CPU, where nothing waits."""
    import warnings

    import torch

    if device.type != "cuda":
        return None
    C.sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def child(args: dict[str, Any]) -> dict[str, Any]:
    """Measure one variant at one size against the reference (runs in its own process)."""
    import torch

    from facescan.models import create_model

    device, precision, channels_last = _setup(args)
    size, batch, variant = args["size"], args["batch_size"], args["variant"]
    steps = _steps(args, device)
    torch.manual_seed(0)
    net = create_model(variant, **args["options"])
    run = _make_step(net, args, device, precision, channels_last, project=True)
    first_step_s = _warm_up(run, args["warmup"], steps, device)
    out: dict[str, Any] = {
        "variant": variant,
        "size": size,
        "batch_size": batch,
        "amp": precision.name,
        "grad_scaler": precision.use_scaler,
        "channels_last": channels_last,
        "compile": args["compile"],
        "threads": torch.get_num_threads(),
        "steps_per_call": steps,
        "first_step_s": round(first_step_s, 2),
        "peak_rss_mb": round(C.peak_rss_mb(), 1),
    }
    out.update(C.gpu_peak(device))
    fns = {"variant": lambda: run(steps)}
    if args["baseline"] and variant != BASELINE:
        torch.manual_seed(0)
        net = create_model(BASELINE, **args["options"])
        base = _make_step(net, args, device, precision, channels_last, True)
        _warm_up(base, args["warmup"], steps, device)
        fns["baseline"] = lambda: base(steps)
    if args["reference"]:
        torch.manual_seed(0)
        ref = _make_step(C.reference_model(), args, device, precision, False, project=False)
        _warm_up(ref, args["warmup"], steps, device)
        fns["reference"] = lambda: ref(steps)
    times = _per_step(C.interleaved(fns, args["repeats"], device), steps)
    syncs = host_syncs(fns["variant"], device)
    if syncs is not None:
        out["host_syncs_per_call"] = syncs  # per epoch of steps_per_call steps
    flops = C.forward_flops(variant, size, args["options"]) * 3 * batch
    out.update(C.summary(times["variant"], batch, flops, args["clock"]))
    out["forward_gflop_per_image"] = round(flops / 3 / batch / 1e9, 3)
    if "baseline" in fns:
        base_flops = C.forward_flops(BASELINE, size, args["options"]) * 3 * batch
        out["baseline"] = C.summary(times["baseline"], batch, base_flops, args["clock"])
        out["efficiency_vs_baseline"] = round(
            out["gflop_per_s"] / out["baseline"]["gflop_per_s"], 3
        )
    elif variant == BASELINE:
        out["efficiency_vs_baseline"] = 1.0
    if args["reference"]:
        out.update(C.against_reference(out, times["reference"], size, 3, args["clock"]))
    out["load_average"] = C.load_average()
    return out


def ddp_child(args: dict[str, Any]) -> dict[str, Any] | None:
    """One DDP worker under ``torch.distributed.run``: ``--batch-size`` images per worker (weak
    scaling); rank 0 returns the global images/s."""
    import os

    import torch
    import torch.distributed as dist

    from facescan import runtime
    from facescan.models import create_model

    world, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device, precision, channels_last = _setup(args, int(os.environ["LOCAL_WORLD_SIZE"]), local_rank)
    dist.init_process_group(runtime.resolve_backend("auto", device))
    try:
        steps = _steps(args, device)
        torch.manual_seed(0)
        net = create_model(args["variant"], **args["options"])
        run = _make_step(net, args, device, precision, channels_last, project=True)
        _warm_up(run, args["warmup"], steps, device)
        dist.barrier()
        times = _per_step(
            C.interleaved({"step": lambda: run(steps)}, args["repeats"], device), steps
        )
        batch = args["batch_size"] * world
        flops = C.forward_flops(args["variant"], args["size"], args["options"]) * 3 * batch
        out = {
            "variant": args["variant"],
            "size": args["size"],
            "workers": world,
            "batch_per_worker": args["batch_size"],
            "threads_per_worker": torch.get_num_threads(),
            "steps_per_call": steps,
            "backend": dist.get_backend(),
            **C.summary(times["step"], batch, flops, "wall"),
            **C.gpu_peak(device),
        }
        return out if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()


def ddp_scaling(ns: argparse.Namespace, variants: list[str], common: dict[str, Any]) -> list:
    """Global images/s with 1..N workers (``--ddp 1,2,4``), each count under torch's launcher."""
    rows = []
    for size in ns.sizes:
        for variant in variants:
            single = None
            for workers in ns.ddp:
                args = {**common, "variant": variant, "size": size}
                cmd = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={workers}",
                    str(Path(__file__).resolve()),
                    "--ddp-child",
                    json.dumps(args),
                ]
                try:
                    row = C.run_json(cmd)
                except C.ChildFailed:
                    rows.append(
                        {"variant": variant, "size": size, "workers": workers, "error": True}
                    )
                    continue
                single = row["images_per_s"] if workers == 1 else single
                if single:
                    row["scaling_efficiency"] = round(row["images_per_s"] / (workers * single), 3)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Efficiency of each variant vs the baseline per size, and the issue's targets.

    ``efficiency_vs_baseline``: a variant's GFLOP/s / the ``resnet50`` variant's, both measured
    in the variant's process with interleaved steps (what the targets use);
    ``efficiency_across_processes``: the same from the baseline's own process, which drifts with
    the machine's load between processes.
    """
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"efficiency_vs_baseline": {}, "efficiency_across_processes": {}}
    gflops = {(r["variant"], r["size"]): r["gflop_per_s"] for r in ok}
    for r in ok:
        size = str(r["size"])
        if "efficiency_vs_baseline" in r:
            out["efficiency_vs_baseline"].setdefault(size, {})[r["variant"]] = r[
                "efficiency_vs_baseline"
            ]
        base = gflops.get((BASELINE, r["size"]))
        if base:
            out["efficiency_across_processes"].setdefault(size, {})[r["variant"]] = round(
                r["gflop_per_s"] / base, 3
            )
    out["noisy"] = C.noisy(ok)
    targets: dict[str, Any] = {}
    base128 = next((r for r in ok if r["variant"] == BASELINE and r["size"] == 128), None)
    if base128 and "ratio_to_reference" in base128:
        value = base128["ratio_to_reference"]
        target = TARGETS["baseline_vs_reference_128"]
        targets["baseline_vs_reference_128"] = {
            "value": value,
            "target": target,
            "met": value >= target,
        }
    efficiency = out["efficiency_vs_baseline"]
    for size in ("128", "224"):
        if efficiency.get(size):
            worst = min(efficiency[size], key=efficiency[size].get)
            target = TARGETS[f"efficiency_{size}"]
            targets[f"efficiency_{size}"] = {
                "worst_variant": worst,
                "value": efficiency[size][worst],
                "target": target,
                "met": efficiency[size][worst] >= target,
            }
    out["targets"] = targets
    return out


def main() -> None:
    from facescan.models import list_variants

    parser = C.benchmark_parser(__doc__.splitlines()[0], batch_size=16, warmup=2, unit="steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the variant")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process resnet50 variant"
    )
    parser.add_argument(
        "--ddp",
        type=lambda s: C.csv_list(s, int),
        default=None,
        help="DDP scaling instead: worker counts, e.g. 1,2,4 (one per GPU; --batch-size each)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per timed call, as one epoch (default: 1 on a CPU, 20 on a GPU)",
    )
    parser.add_argument(
        "--check-every",
        type=int,
        default=None,
        help="steps between the engine's loss checks (host-device syncs); default the "
        "engine's (50), 1 = a sync every step",
    )
    parser.add_argument(
        "--no-cudnn-benchmark",
        action="store_true",
        help="training.cudnn_benchmark: false (GPU)",
    )
    parser.add_argument("--no-tf32", action="store_true", help="training.tf32: false (GPU)")
    parser.add_argument("--ddp-child", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(child(json.loads(ns.child))))
        return
    if ns.ddp_child:
        out = ddp_child(json.loads(ns.ddp_child))
        if out is not None:
            print(json.dumps(out))
        return

    variants = ns.variants or list_variants()
    settings = C.settings(
        ns,
        compile=ns.compile,
        steps=ns.steps,
        check_every=ns.check_every,
        cudnn_benchmark=not ns.no_cudnn_benchmark,
        tf32=not ns.no_tf32,
    )
    report = C.new_report("train_step_ddp" if ns.ddp else "train_step", settings)
    if ns.ddp:
        report["results"] = ddp_scaling(ns, variants, settings)
        C.print_report(report)
        return
    report["results"] = C.measure_each(
        Path(__file__),
        ns,
        variants,
        lambda variant, size: {
            **settings,
            "variant": variant,
            "size": size,
            "reference": not ns.no_reference,
            "baseline": not ns.no_baseline,
        },
    )
    C.print_report(report, summarise)


if __name__ == "__main__":
    main()
