"""Prediction speed of every variant with the project's defaults; prints one JSON document.

    python benchmarks/inference.py [--variants aspp_crossscan_vit] [--sizes 64,128,224]
        [--batch-size 32] [--repeats 5] [--warmup 1] [--threads auto] [--device auto]
        [--amp auto] [--channels-last auto] [--fp32 resnet50,aspp_crossscan_vit | all]
        [--options JSON] [--clock wall|cpu] [--max-spread 0.25] [--retries 2]

One call is :func:`facescan.training.engine.predict_logits` over one batch of random images, on a
model prepared as the evaluation and predict pipelines prepare it
(:func:`facescan.training.runtime.inference_settings`: autocast dtype and memory format; eval
mode, no gradients). Each (variant, size) runs in a fresh subprocess; its timed calls are
interleaved with those of torchvision's ResNet-50 in float32 (``reference``) and, for the
variants named by ``--fp32``, of the same variant in float32, eager, contiguous (``fp32``: the
model's own reference, a copy with the same weights); medians of ``--repeats`` calls after
``--warmup``. A (variant, size) whose timings spread more than ``--max-spread`` (another process
woke up) is measured again, up to ``--retries`` times.

- ``images_per_s``, ``gflop_per_s`` (forward FLOPs from ``FlopCounterMode``, attention included);
- ``ratio_to_fp32`` = defaults / the variant's own float32 eager speed (``--fp32`` variants);
- ``ratio_to_reference`` = defaults / torchvision ResNet-50 float32 eager;
- ``first_call_s`` (defaults and fp32): the first call pays for oneDNN's kernel set-up, which a
  short evaluation does not amortise;
- ``peak_rss_mb`` after the defaults' warm-up (before the float32 copies exist); on a GPU also
  ``gpu_peak_mb``.

Not a test: numbers depend on the machine and its load; the JSON records both.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

FULL_MODEL = "aspp_crossscan_vit"
TARGET_FULL_VS_FP32 = 2.3


def child(args: dict[str, Any]) -> dict[str, Any]:
    """Measure one variant at one size (runs in its own process)."""
    import torch
    from torch import nn

    from facescan.models import create_model
    from facescan.training import runtime
    from facescan.training.engine import predict_logits

    torch.set_num_threads(runtime.threads_per_rank(args["threads"], 1))
    device, amp_dtype, channels_last = runtime.inference_settings(args["device"], args["amp"])
    if args["channels_last"] != "auto":
        channels_last = args["channels_last"]
    size, batch, variant = args["size"], args["batch_size"], args["variant"]
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 3, size, size, generator=gen), torch.zeros(batch))]

    def make_call(net: nn.Module, dtype: torch.dtype | None, cl: bool) -> Any:
        net.to(device, memory_format=torch.channels_last if cl else torch.preserve_format).eval()
        return lambda: predict_logits(
            net, batches, device=device, amp_dtype=dtype, channels_last=cl
        )

    torch.manual_seed(0)
    net = create_model(variant, **args["options"])
    fp32_net = copy.deepcopy(net)
    call = make_call(net, amp_dtype, channels_last)
    first = C.warm_up(call, args["warmup"], device)
    out: dict[str, Any] = {
        "variant": variant,
        "size": size,
        "batch_size": batch,
        "amp": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32"),
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        "first_call_s": round(first, 2),
        "peak_rss_mb": round(C.peak_rss_mb(), 1),
    }
    if device.type == "cuda":
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    fns = {"variant": call}
    if args["fp32"]:
        fns["fp32"] = make_call(fp32_net, None, False)
        out["fp32_first_call_s"] = round(C.warm_up(fns["fp32"], args["warmup"], device), 2)
    if args["reference"]:
        torch.manual_seed(0)
        fns["reference"] = make_call(C.reference_model(), None, False)
        C.warm_up(fns["reference"], args["warmup"], device)
    times = C.interleaved(fns, args["repeats"], device)
    flops = C.forward_flops(variant, size, args["options"]) * batch
    out.update(C.summary(times["variant"], batch, flops, args["clock"]))
    out["forward_gflop_per_image"] = round(flops / batch / 1e9, 3)
    if args["fp32"]:
        out["fp32"] = C.summary(times["fp32"], batch, flops, args["clock"])
        out["ratio_to_fp32"] = round(out["images_per_s"] / out["fp32"]["images_per_s"], 3)
    if args["reference"]:
        ref = C.summary(
            times["reference"], batch, C.forward_flops(C.REFERENCE, size) * batch, args["clock"]
        )
        out["reference"] = ref
        out["ratio_to_reference"] = round(out["images_per_s"] / ref["images_per_s"], 3)
    out["load_average"] = C.load_average()
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-up of the defaults over float32 per variant and size, and the issue's target."""
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"ratio_to_fp32": {}, "targets": {}}
    for r in (r for r in ok if "ratio_to_fp32" in r):
        out["ratio_to_fp32"].setdefault(str(r["size"]), {})[r["variant"]] = r["ratio_to_fp32"]
    out["noisy"] = [f"{r['variant']}@{r['size']}" for r in ok if C._worst_spread(r) > 0.25]
    full = [r for r in ok if r["variant"] == FULL_MODEL and "ratio_to_fp32" in r]
    if full:
        worst = min(full, key=lambda r: r["ratio_to_fp32"])
        out["targets"]["full_model_vs_own_fp32"] = {
            "worst_size": worst["size"],
            "value": worst["ratio_to_fp32"],
            "target": TARGET_FULL_VS_FP32,
            "met": worst["ratio_to_fp32"] >= TARGET_FULL_VS_FP32,
        }
    return out


def main() -> None:
    from facescan.models import list_variants

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=C.csv_list, default=None, help="default: all")
    parser.add_argument("--sizes", type=lambda s: C.csv_list(s, int), default=list(C.SIZES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument(
        "--fp32",
        type=C.csv_list,
        default=["resnet50", FULL_MODEL],
        help="variants also timed in float32 eager (their own reference); 'all' for every one",
    )
    parser.add_argument("--threads", default="auto", help="intra-op threads (auto: the cores)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--no-reference", action="store_true", help="skip torchvision ResNet-50")
    parser.add_argument(
        "--options",
        type=C.json_options,
        default={},
        help="model options over each variant's, JSON: '{\"vit_attention_dropout\": 0.1}'",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time the numbers come from; cpu with --threads 1 on a busy machine",
    )
    parser.add_argument(
        "--max-spread",
        type=float,
        default=0.25,
        help="measure a (variant, size) again when (max - min) / median of its steps is above",
    )
    parser.add_argument("--retries", type=int, default=2, help="at most this many re-measurements")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(child(json.loads(ns.child))))
        return

    variants = ns.variants or list_variants()
    channels_last = {"auto": "auto", "true": True, "false": False}[ns.channels_last]
    threads = ns.threads if ns.threads == "auto" else int(ns.threads)
    report: dict[str, Any] = {
        "benchmark": "inference",
        "machine": C.machine(),
        "settings": {
            "batch_size": ns.batch_size,
            "repeats": ns.repeats,
            "warmup": ns.warmup,
            "threads": threads,
            "device": ns.device,
            "amp": ns.amp,
            "channels_last": channels_last,
            "clock": ns.clock,
            "options": ns.options,
            "fp32": ns.fp32,
        },
        "load_average_start": C.load_average(),
        "results": [],
    }
    for size in ns.sizes:
        for variant in variants:
            result = C.run_measured(
                Path(__file__),
                {
                    "variant": variant,
                    "size": size,
                    "batch_size": ns.batch_size,
                    "repeats": ns.repeats,
                    "warmup": ns.warmup,
                    "threads": threads,
                    "device": ns.device,
                    "amp": ns.amp,
                    "channels_last": channels_last,
                    "reference": not ns.no_reference,
                    "clock": ns.clock,
                    "options": ns.options,
                    "fp32": "all" in ns.fp32 or variant in ns.fp32,
                },
                ns.max_spread,
                ns.retries,
            )
            result.setdefault("variant", variant)
            result.setdefault("size", size)
            report["results"].append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)  # progress
    report["load_average_end"] = C.load_average()
    report["summary"] = summarise(report["results"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
