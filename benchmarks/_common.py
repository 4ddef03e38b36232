"""Shared helpers of the benchmarks (not a benchmark itself).

train_step.py and inference.py measure each (variant, size) in a fresh subprocess, so that its peak
resident memory is its own, and within that process against a reference model, with the timed
steps of the two interleaved (variant, reference, variant, reference, ...): on a shared machine
whose load changes over minutes, the ratio of two medians measured side by side stays meaningful
when absolute numbers do not. The JSON records the load average and the thread count next to the
numbers. They share their command line (:func:`benchmark_parser`, :func:`settings`), the loop over
sizes and variants (:func:`measure_each`) and the report's frame (:func:`new_report`,
:func:`print_report`); every benchmark that runs a child process and reads its JSON
(data_pipeline.py's stages, train_step.py's DDP workers too) does so through :func:`run_json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIZES = (64, 128, 224)
#: (max - min) / median of the timed steps above which a result is measured again / called noisy.
NOISY_SPREAD = 0.25


def cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine slows every number)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    from facescan.data.loader import usable_cores
    from facescan.runtime import cpu_supports_bf16

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "cpu_bf16": cpu_supports_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def gpu_peak(device: Any) -> dict[str, float]:
    """``{"gpu_peak_mb": ...}`` (``torch.cuda.max_memory_allocated``) on a GPU, ``{}`` elsewhere."""
    import torch

    if device.type != "cuda":
        return {}
    return {"gpu_peak_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}


def sync(device: Any) -> None:
    """Wait for the device (CUDA kernels are asynchronous)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: Mapping[str, Callable[[], None]], repeats: int, device: Any
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of ``repeats`` calls of each function, taken in turns (a, b, a, ...).

    CPU seconds are this process's (all threads): with one thread they barely move when other
    processes share the cores, which makes ``--threads 1`` comparisons usable on a busy machine.
    """
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def warm_up(fn: Callable[[], None], steps: int, device: Any) -> float:
    """Run ``fn`` ``steps`` times (at least once); returns the first call's seconds (compilation,
    oneDNN primitive creation)."""
    first = 0.0
    for i in range(max(1, steps)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if i == 0:
            first = time.perf_counter() - start
    return first


def summary(
    seconds: Mapping[str, list[float]], images: int, flops: int | None, clock: str
) -> dict[str, Any]:
    """Median images/s (and GFLOP/s from the FLOPs of one call) of timed calls.

    ``clock`` picks the median the numbers come from: ``wall`` (what a user waits) or ``cpu``,
    this process's CPU time over all threads (equal to wall time x threads on an idle machine;
    with ``--threads 1`` it barely moves when other processes share the cores, so it is the
    usable one on a busy machine). The other clock's images/s is reported too; ``spread`` is
    (max - min) / median.
    """
    median = statistics.median(seconds[clock])
    other = "cpu" if clock == "wall" else "wall"
    out: dict[str, Any] = {
        "images_per_s": round(images / median, 2),
        "median_step_s": round(median, 4),
        "spread": round((max(seconds[clock]) - min(seconds[clock])) / median, 3),
        f"{other}_images_per_s": round(images / statistics.median(seconds[other]), 2),
    }
    if flops is not None:
        out["gflop_per_s"] = round(flops / median / 1e9, 1)
    return out


def against_reference(
    out: Mapping[str, Any], seconds: Mapping[str, list[float]], size: int, passes: int, clock: str
) -> dict[str, Any]:
    """``reference``, the :func:`summary` of the reference's timed calls (its forward FLOPs x
    ``passes`` per image: 1 for inference, 3 for training), and ``ratio_to_reference``, the
    images/s of ``out`` (a child's result so far) over the reference's."""
    batch = out["batch_size"]
    ref = summary(seconds, batch, forward_flops(REFERENCE, size) * passes * batch, clock)
    return {
        "reference": ref,
        "ratio_to_reference": round(out["images_per_s"] / ref["images_per_s"], 3),
    }


class ChildFailed(RuntimeError):
    """A child process exited with an error; the message is the last line of its stderr."""


def run_json(cmd: Sequence[str], cwd: Path | str | None = REPO) -> Any:
    """Run ``cmd`` (Kedro telemetry and tqdm off) and parse the last line of its stdout as JSON.

    Raises:
        ChildFailed: it exited with an error; the end of its stderr is written to this one's.
    """
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        lines = proc.stderr.strip().splitlines()
        raise ChildFailed(lines[-1] if lines else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(script: Path, args: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``script --child '<json args>'`` in a fresh interpreter; its last stdout line is JSON,
    or ``{"error": <its last stderr line>}``."""
    try:
        return run_json([sys.executable, str(script), "--child", json.dumps(dict(args))])
    except ChildFailed as exc:
        return {"error": str(exc)}


def _worst_spread(result: Mapping[str, Any]) -> float:
    """The largest ``spread`` of a result and of its nested comparisons (reference, fp32)."""
    spreads = [result.get("spread", 0.0)]
    spreads += [v["spread"] for v in result.values() if isinstance(v, dict) and "spread" in v]
    return max(spreads)


def noisy(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """``variant@size`` of the results whose timed steps still spread more than NOISY_SPREAD."""
    return [f"{r['variant']}@{r['size']}" for r in results if _worst_spread(r) > NOISY_SPREAD]


def run_measured(
    script: Path, args: Mapping[str, Any], max_spread: float, retries: int
) -> dict[str, Any]:
    """:func:`run_child`, measured again (up to ``retries`` times) while the spread of its timed
    steps exceeds ``max_spread``: on a shared machine another process starting up mid-measurement
    shows as a wide spread. Keeps the attempt with the smallest spread; ``attempts`` says how many
    were made."""
    best: dict[str, Any] = {}
    for attempt in range(1, retries + 2):
        result = run_child(script, args)
        if "error" in result:
            return result
        if not best or _worst_spread(result) < _worst_spread(best):
            best = result
        best["attempts"] = attempt
        if _worst_spread(best) <= max_spread:
            break
    return best


def benchmark_parser(
    description: str, batch_size: int, warmup: int, unit: str
) -> argparse.ArgumentParser:
    """The command line of train_step.py and inference.py, before each adds its own options.

    ``unit`` names what is timed (``steps``, ``calls``); ``--child`` is the hidden option a child
    process gets its arguments with (:func:`run_child`).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variants", type=csv_list, default=None, help="default: all")
    parser.add_argument("--sizes", type=lambda s: csv_list(s, int), default=list(SIZES))
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=5, help=f"timed {unit} (median)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed {unit} first")
    parser.add_argument("--threads", default="auto", help="intra-op threads (auto: the cores)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference (torchvision ResNet-50)"
    )
    parser.add_argument(
        "--options",
        type=json_options,
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
        default=NOISY_SPREAD,
        help="measure a (variant, size) again when (max - min) / median of its steps is above",
    )
    parser.add_argument("--retries", type=int, default=2, help="at most this many re-measurements")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def settings(ns: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The settings of :func:`benchmark_parser`'s options (and ``extra``), as the JSON records
    them and every child gets them."""
    return {
        "batch_size": ns.batch_size,
        "repeats": ns.repeats,
        "warmup": ns.warmup,
        "threads": ns.threads if ns.threads == "auto" else int(ns.threads),
        "device": ns.device,
        "amp": ns.amp,
        "channels_last": {"auto": "auto", "true": True, "false": False}[ns.channels_last],
        **extra,
        "clock": ns.clock,
        "options": ns.options,
    }


def new_report(benchmark: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The start of a benchmark's JSON: its name, the machine, the settings, the load average."""
    return {
        "benchmark": benchmark,
        "machine": machine(),
        "settings": dict(settings),
        "load_average_start": load_average(),
    }


def print_report(report: dict[str, Any], summary: Callable[[list], Any] | None = None) -> None:
    """Add the load average at the end (and ``summary`` of the results) and print the JSON."""
    report["load_average_end"] = load_average()
    if summary is not None:
        report["summary"] = summary(report["results"])
    print(json.dumps(report, indent=2))


def measure_each(
    script: Path,
    ns: argparse.Namespace,
    variants: Iterable[str],
    child_args: Callable[[str, int], Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Each of ``--sizes`` x ``variants`` measured by ``script``'s child (:func:`run_measured`,
    ``--max-spread``, ``--retries``) with ``child_args(variant, size)``; every result also goes
    to stderr as it comes (progress)."""
    results = []
    for size in ns.sizes:
        for variant in variants:
            measured = run_measured(script, child_args(variant, size), ns.max_spread, ns.retries)
            result = {"variant": variant, "size": size, **measured}
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    return results


def json_options(text: str) -> dict[str, Any]:
    """``--options '{"vit_attention_dropout": 0.1}'``: model options on top of each variant's."""
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError(f"--options must be a JSON object, got {text!r}")
    return options


def csv_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b"`` -> ``["a", "b"]`` (argparse type)."""
    return [cast(x) for x in text.split(",") if x]


def reference_model() -> Any:
    """The yardstick: torchvision's ResNet-50 (2 classes, like every variant), float32, eager."""
    import torchvision

    return torchvision.models.resnet50(num_classes=2)


def forward_flops(variant: str, size: int, options: Mapping[str, Any] | None = None) -> int:
    """Forward FLOPs of one image (attention included), counted on a ``meta`` model (no compute)."""
    import torch

    from facescan.models import count_forward_flops, create_model

    with torch.device("meta"):
        if variant == REFERENCE:
            model = reference_model()
        else:
            model = create_model(variant, **(options or {}))
    return count_forward_flops(model, size)


#: Name of the reference in ``--variants`` and in the JSON.
REFERENCE = "torchvision_resnet50_fp32"
