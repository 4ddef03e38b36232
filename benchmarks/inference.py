"""Prediction speed of every variant with the project's defaults; prints one JSON document.

    python benchmarks/inference.py [--variants aspp_crossscan_vit] [--sizes 64,128,224]
        [--batch-size 32] [--repeats 5] [--warmup 1] [--threads auto] [--device auto]
        [--amp auto] [--channels-last auto] [--fp32 resnet50,aspp_crossscan_vit | all]
        [--options JSON] [--clock wall|cpu] [--max-spread 0.25] [--retries 2]

One call is :func:`facescan.evaluation.scoring.predict_logits` over one batch of random images, on a
model prepared as the evaluation and predict pipelines prepare it
(:func:`facescan.runtime.inference_settings`: autocast dtype and memory format; eval
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

    from facescan import runtime
    from facescan.evaluation.scoring import predict_logits
    from facescan.models import create_model

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
    out.update(C.gpu_peak(device))
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
        out.update(C.against_reference(out, times["reference"], size, 1, args["clock"]))
    out["load_average"] = C.load_average()
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-up of the defaults over float32 per variant and size, and the issue's target."""
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"ratio_to_fp32": {}, "targets": {}}
    for r in (r for r in ok if "ratio_to_fp32" in r):
        out["ratio_to_fp32"].setdefault(str(r["size"]), {})[r["variant"]] = r["ratio_to_fp32"]
    out["noisy"] = C.noisy(ok)
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

    parser = C.benchmark_parser(__doc__.splitlines()[0], batch_size=32, warmup=1, unit="calls")
    parser.add_argument(
        "--fp32",
        type=C.csv_list,
        default=["resnet50", FULL_MODEL],
        help="variants also timed in float32 eager (their own reference); 'all' for every one",
    )
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(child(json.loads(ns.child))))
        return

    settings = C.settings(ns)
    report = C.new_report("inference", {**settings, "fp32": ns.fp32})
    report["results"] = C.measure_each(
        Path(__file__),
        ns,
        ns.variants or list_variants(),
        lambda variant, size: {
            **settings,
            "variant": variant,
            "size": size,
            "reference": not ns.no_reference,
            "fp32": "all" in ns.fp32 or variant in ns.fp32,
        },
    )
    C.print_report(report, summarise)


if __name__ == "__main__":
    main()
