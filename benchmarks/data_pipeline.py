"""Throughput and memory of the data pipelines; prints one JSON document.

    python benchmarks/data_pipeline.py [--faces-a DIR] [--n-synthetic 5000] [--workdir DIR]
    python benchmarks/data_pipeline.py --augment-only     # the degradations' cost alone (~2 min)

Measured, each stage in a fresh subprocess so its peak resident memory (``ru_maxrss``) is its own:

- ``ingestion`` (+ ``split``) and ``preprocess`` through Kedro's ``SequentialRunner`` on a temporary
  copy of the project (the catalog's real datasets: parquet manifest, memory-mapped caches), on
  ``../shared/data/faces-a`` (when present; at the demo's and the paper's cache sizes) and on
  synthetic JPEGs made by :mod:`facescan.data.synthetic` (generation is not timed). Images/s is
  images over the runner's wall time; ``rss_*_mb`` are the process's resident memory after
  start-up (imports, Kedro context) and at its peak: with a streamed cache the peak should not grow
  with the number of images.
- loaders: training batches/s from the cache (:func:`facescan.data.loader.build_loader`) against a
  naive ``torchvision.datasets.ImageFolder`` loader that decodes and resizes every JPEG every epoch
  (same augmentation, same batch size), each over one full epoch after a warm-up epoch.
- ``augmentation``: the training loader with and without the degradations of
  ``preprocess.augment`` (:class:`facescan.data.transforms.Degradations`: Gaussian blur, JPEG
  re-compression, before the crop), at the CPU demo's sizes (cache 56, input 48, batch 16) and the
  paper's (cache 256, input 224, batch 32), on faces-a's images (when present; else the synthetic
  ones); whole epochs, the settings interleaved over 3 rounds after a warm-up round, the median
  reported as ms per image, as the extra time over the loader without degradations and as a ratio.

Not a test: numbers depend on the machine; the JSON names its core count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.project_copy

import _common as C  # noqa: E402

from tests.project_copy import copy_project  # noqa: E402

FACES_A = C.REPO.parent / "shared" / "data" / "faces-a"


def _rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------ stages (run in subprocesses)


def stage_kedro(
    project: Path, images: Path, cache_size: int, pipelines: list[str]
) -> dict[str, Any]:
    """Run ``pipelines`` one after the other with SequentialRunner; time each."""
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    import logging

    from kedro.framework.project import pipelines as registry
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    logging.disable(logging.WARNING)  # keep per-node INFO logs out of the JSON output
    bootstrap_project(project)
    params = {
        "data": {"source": {"type": "folder", "path": str(images)}},
        "preprocess": {"cache_size": cache_size},
    }
    out: dict[str, Any] = {}
    with KedroSession.create(project_path=project, env="base", runtime_params=params) as session:
        catalog = session.load_context().catalog
        out["rss_start_mb"] = round(_rss_mb(), 1)
        for name in pipelines:
            start = time.perf_counter()
            SequentialRunner().run(registry[name], catalog)
            seconds = time.perf_counter() - start
            n = len(catalog.load("image_manifest"))
            out[name] = {"seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}
        out["n_images"] = len(catalog.load("image_manifest"))
        if "ingestion" in pipelines and catalog.exists("rejected_images"):
            out["rejected"] = len(catalog.load("rejected_images"))
    out["rss_peak_mb"] = round(C.peak_rss_mb(), 1)
    return out


def stage_loader(project: Path, images: Path, input_size: int, batch_size: int) -> dict[str, Any]:
    """Batches/s of the cached loader and of a naive decode-every-epoch ImageFolder loader."""
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    from facescan.data.cache import ImageCache
    from facescan.data.loader import build_loader, default_num_workers
    from facescan.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    cache = ImageCache.open(project / "data" / "05_model_input" / "train")
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    def batches_per_s(loader: Any) -> float:
        for _ in loader:  # warm-up: worker start, page cache
            pass
        start, count = time.perf_counter(), 0
        for _ in loader:
            count += 1
        return round(count / (time.perf_counter() - start), 1)

    # Same augmentation as train_transform, after decoding the file and bringing it to the cache
    # size (what a loader without a cache has to do each epoch).
    naive_tf = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(cache.size, antialias=True),
            v2.CenterCrop(cache.size),
            v2.RandomResizedCrop(input_size, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )
    # ImageFolder over the same training files (links, so the class folders are its classes).
    folder = Path(tempfile.mkdtemp(prefix="imagefolder-"))
    for i, (path, label) in enumerate(zip(cache.paths, cache.labels.tolist(), strict=True)):
        sub = folder / str(label)
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}{Path(path).suffix}").symlink_to(path)
    naive_set = datasets.ImageFolder(str(folder), transform=naive_tf)

    out: dict[str, Any] = {
        "train_images": len(cache),
        "batch_size": batch_size,
        "input_size": input_size,
        "cache_size": cache.size,
    }
    for workers in sorted({0, 1, default_num_workers()}):
        cached = build_loader(
            cache,
            train=True,
            input_size=input_size,
            batch_size=batch_size,
            num_workers=workers,
            seed=0,
        )
        naive = torch.utils.data.DataLoader(
            naive_set,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=workers > 0,
        )
        c, n = batches_per_s(cached), batches_per_s(naive)
        out[f"workers_{workers}"] = {
            "cached_batches_per_s": c,
            "naive_imagefolder_batches_per_s": n,
            "speedup": round(c / n, 2),
        }
    shutil.rmtree(folder)
    out["rss_peak_mb"] = round(C.peak_rss_mb(), 1)
    return out


#: Loader settings timed by :func:`stage_augment`: name -> ``preprocess.augment``.
AUGMENT_SETTINGS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "blur_p1": {"blur": {"p": 1.0}},  # every image, sigma in the default (0.1, 3.0): kernel 19
    "jpeg_p1": {"jpeg": {"p": 1.0}},  # every image, quality in the default (30, 100)
    "blur_jpeg_p0.5": {"blur": {"p": 0.5}, "jpeg": {"p": 0.5}},  # a typical recipe
}
#: (name, cache_size, input_size, batch_size, images) of :func:`stage_augment`.
AUGMENT_SIZES = (("demo", 56, 48, 16, 800), ("paper", 256, 224, 32, 320))
#: Timed epochs per setting (after one warm-up epoch); the median is reported.
AUGMENT_ROUNDS = 3


def stage_augment(project: Path, images: Path) -> dict[str, Any]:
    """ms per training image of the cached loader with and without degradations."""
    import functools

    import torch

    from facescan.data.cache import ImageStream, write_cache
    from facescan.data.loader import build_loader, default_num_workers
    from facescan.data.preprocess import stream_images
    from facescan.data.transforms import Degradations

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    files = sorted(str(p) for p in images.glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    out: dict[str, Any] = {
        "images": str(images),
        "threads": torch.get_num_threads(),
        "load_average_before": C.load_average(),
    }
    for name, cache_size, input_size, batch_size, n in AUGMENT_SIZES:
        paths = [files[i % len(files)] for i in range(n)]
        stream = ImageStream(
            cache_size,
            [i % 2 for i in range(n)],
            paths,
            functools.partial(stream_images, paths, cache_size, 1024, (255, 255, 255)),
        )
        cache = write_cache(project / f"augment-{cache_size}", stream)
        entry: dict[str, Any] = {
            "cache_size": cache_size,
            "input_size": input_size,
            "batch_size": batch_size,
            "train_images": n,
        }
        for workers in sorted({0, default_num_workers()}):
            loaders = {
                setting: build_loader(
                    cache,
                    train=True,
                    input_size=input_size,
                    batch_size=batch_size,
                    num_workers=workers,
                    seed=0,
                    degradations=Degradations.from_params(augment),
                )
                for setting, augment in AUGMENT_SETTINGS.items()
            }
            # Whole epochs, the settings interleaved round after round (a shared machine's load
            # drifts); the first round is the warm-up (kernels, page cache), the median is kept.
            samples: dict[str, list[float]] = {setting: [] for setting in loaders}
            for _ in range(1 + AUGMENT_ROUNDS):
                for setting, loader in loaders.items():
                    start, count = time.perf_counter(), 0
                    for x, _ in loader:
                        count += len(x)
                    samples[setting].append((time.perf_counter() - start) * 1000 / count)
            base = statistics.median(samples["none"][1:])
            timings: dict[str, Any] = {}
            for setting, times in samples.items():
                ms = statistics.median(times[1:])
                timings[setting] = {
                    "ms_per_image": round(ms, 3),
                    "extra_ms_per_image": round(ms - base, 3),
                    "vs_none": round(ms / base, 2),
                    "spread": round((max(times[1:]) - min(times[1:])) / ms, 2),
                }
            entry[f"workers_{workers}"] = timings
        out[name] = entry
        shutil.rmtree(cache.path, ignore_errors=True)
    out["load_average_after"] = C.load_average()
    out["rss_peak_mb"] = round(C.peak_rss_mb(), 1)
    return out


def stage_scaling(project: Path, images: Path, n: int, cache_size: int) -> dict[str, Any]:
    """Peak memory of decoding and writing ``n`` images (the files cycled) without Kedro."""
    import functools

    from facescan.data.cache import ImageStream, write_cache
    from facescan.data.preprocess import stream_images

    files = sorted(str(p) for p in images.glob("*/*.jpg"))
    paths = [files[i % len(files)] for i in range(n)]
    stream = ImageStream(
        cache_size,
        [0] * n,
        paths,
        functools.partial(stream_images, paths, cache_size, 1024, (255, 255, 255)),
    )
    rss_start = _rss_mb()
    start = time.perf_counter()
    write_cache(project / "scaling", stream)
    seconds = time.perf_counter() - start
    return {
        "n_images": n,
        "cache_mb": round(n * 3 * cache_size**2 / 2**20, 1),
        "images_per_s": round(n / seconds, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(C.peak_rss_mb(), 1),
        "rss_growth_mb": round(C.peak_rss_mb() - rss_start, 1),
    }


# ------------------------------------------------------------------ driver


def _sub(stage: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``stage`` with ``kwargs`` in a fresh interpreter (in ``kwargs["project"]``)."""
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--stage", stage, "--args", json.dumps(kwargs, default=str)]
    try:
        return C.run_json(cmd, cwd=kwargs.get("project"))
    except C.ChildFailed:
        raise SystemExit(f"stage {stage} failed") from None


def _dataset(name: str, images: Path, cache_sizes: list[int], tmp: Path, loader: bool) -> dict:
    result: dict[str, Any] = {"images": str(images)}
    for i, size in enumerate(cache_sizes):
        project = copy_project(tmp / f"{name}-{size}")
        entry: dict[str, Any] = {}
        if i == 0:
            entry["ingestion_split"] = _sub(
                "kedro",
                project=project,
                images=images,
                cache_size=size,
                pipelines=["ingestion", "split"],
            )
        else:  # same images: reuse the manifest and split of the first size
            first = tmp / f"{name}-{cache_sizes[0]}" / "project" / "data"
            for rel in ("02_intermediate", "03_primary"):
                shutil.copytree(first / rel, project / "data" / rel, dirs_exist_ok=True)
        entry["preprocess"] = _sub(
            "kedro", project=project, images=images, cache_size=size, pipelines=["preprocess"]
        )
        if loader and i == 0:
            entry["loader"] = _sub(
                "loader", project=project, images=images, input_size=64, batch_size=32
            )
        result[f"cache_{size}"] = entry
    return result


def _augment_images(ns: argparse.Namespace) -> Path:
    """faces-a (real faces) when present, else synthetic images (generated once, kept)."""
    if (ns.faces_a / "real").is_dir():
        return ns.faces_a
    from facescan.data.synthetic import SyntheticSpec, generate_synthetic

    spec = SyntheticSpec(n_images=ns.n_synthetic, seed=0, size=72, difficulty=0.5)
    return generate_synthetic(ns.workdir / f"synthetic-{ns.n_synthetic}", spec, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces-a", type=Path, default=FACES_A)
    parser.add_argument("--n-synthetic", type=int, default=5000)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "facescan-bench",
        help="keeps the generated synthetic images between runs",
    )
    parser.add_argument(
        "--augment-only",
        action="store_true",
        help="measure only the training loader with and without degradations (preprocess.augment)",
    )
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.stage:
        kwargs = json.loads(ns.args)
        kwargs["project"], kwargs["images"] = Path(kwargs["project"]), Path(kwargs["images"])
        stages = {"kedro": stage_kedro, "loader": stage_loader, "scaling": stage_scaling}
        fn = {**stages, "augment": stage_augment}[ns.stage]
        print(json.dumps(fn(**kwargs)))
        return

    import PIL
    import torch

    report: dict[str, Any] = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pillow": PIL.__version__,
        },
    }
    with tempfile.TemporaryDirectory(prefix="facescan-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if ns.augment_only:
            report["augmentation"] = _sub("augment", project=tmp, images=_augment_images(ns))
            print(json.dumps(report, indent=2))
            return
        if (ns.faces_a / "real").is_dir():
            report["faces_a"] = _dataset("faces_a", ns.faces_a, [72, 256], tmp, loader=True)
        else:
            report["faces_a"] = None
        from facescan.data.synthetic import SyntheticSpec, generate_synthetic

        spec = SyntheticSpec(n_images=ns.n_synthetic, seed=0, size=72, difficulty=0.5)
        start = time.perf_counter()
        synthetic = generate_synthetic(
            ns.workdir / f"synthetic-{ns.n_synthetic}", spec, progress=False
        )
        generation_s = time.perf_counter() - start
        report[f"synthetic_{ns.n_synthetic}"] = {
            "generation_seconds": round(generation_s, 1),
            **_dataset("synthetic", synthetic, [72], tmp, loader=False),
        }
        report["augmentation"] = _sub("augment", project=tmp, images=_augment_images(ns))
        # Memory must not grow with the number of images: decode + write 1,000 vs 20,000.
        report["cache_write_memory"] = [
            _sub("scaling", project=tmp, images=synthetic, n=n, cache_size=72)
            for n in (1_000, 20_000)
        ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
