"""Compare training recipes by nested hold-out inside the train + validation images (prints JSON).

Not speed: how a recipe generalises, measured without the test split. The measurement behind
conf/faces/parameters.yml. Choosing settings by their test score would tune the recipe to that one
test split. This script pools a finished run's train and validation caches (the test cache is never
opened) and re-splits the pool ``--splits`` times, stratified: ``--test-size`` of it becomes an inner
test set, ``--val-size`` of the rest an inner validation set. The proportions default to the
project's. Each recipe then trains on every inner split with the project's own :func:`fit`. Inner
validation plays its real part: the epoch kept, the tuned threshold. Each run is scored on its inner
test set: AUC, fake and real accuracy at the tuned threshold, the epoch kept, training time.

A recipe is ``NAME=JSON``: overrides on the environment's parameters, as
``{"training": {...}, "augment": {...}, "model": {...}}`` (``augment`` replaces
``preprocess.augment``; ``model`` holds options on top of the variant's). ``NAME`` alone (or ``=``
with ``{}``) is the environment as it is.

Example (after ``kedro run --pipelines ablation --env faces``, which builds the caches):
    python benchmarks/recipe_selection.py --env faces --variant resnet50 \\
        --recipe 'before={"training": {"max_epochs": 10, "t_max": 10, "keep": "best"}}' \\
        --recipe faces
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine  # noqa: E402


def recipe(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` or ``NAME`` (argparse type)."""
    name, _, body = text.partition("=")
    overrides = json.loads(body) if body.strip() else {}
    if (
        not name
        or not isinstance(overrides, dict)
        or set(overrides) - {"training", "augment", "model"}
    ):
        raise argparse.ArgumentTypeError(
            f"--recipe {text!r}: expected NAME or NAME=JSON with keys training, augment, model"
        )
    return name, overrides


def _catalog(project: Path, env: str | None) -> tuple[Any, dict[str, Any]]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        return context.catalog, context.params


def _plain(section: Any) -> dict[str, Any]:
    """A parameter section as a plain dict (typed sections come as pydantic models)."""
    if hasattr(section, "to_dict"):
        return section.to_dict()
    return copy.deepcopy(dict(section or {}))


def inner_splits(
    labels: np.ndarray, n_splits: int, test_size: float, val_size: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n_splits`` stratified (train, val, test) index triples of the pool, seeds ``seed + k``."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    splits = []
    for k in range(n_splits):
        rest, test = train_test_split(
            index, test_size=test_size, stratify=labels, random_state=seed + k
        )
        train, val = train_test_split(
            rest, test_size=val_size, stratify=labels[rest], random_state=seed + k
        )
        splits.append((np.sort(train), np.sort(val), np.sort(test)))
    return splits


class Pool:
    """The train and validation caches as one array, written back out as sub-caches on demand."""

    def __init__(self, caches: list[Any], folder: Path) -> None:
        self.images = np.concatenate([np.asarray(c.images) for c in caches])
        self.labels = np.concatenate([c.labels for c in caches])
        self.paths = [p for c in caches for p in c.paths]
        self.meta = caches[0].meta
        self.folder = folder

    def cache(self, name: str, index: np.ndarray) -> Any:
        from facescan.data.cache import ImageStream, write_cache

        meta = {k: self.meta[k] for k in ("max_size", "background") if k in self.meta}
        stream = ImageStream(
            self.images.shape[-1],
            self.labels[index],
            [self.paths[i] for i in index],
            lambda: (self.images[i] for i in index),
            {"split": name, **meta},
        )
        return write_cache(self.folder / name, stream, desc=name)


def score(checkpoint: dict[str, Any], cache: Any, input_size: int) -> dict[str, Any]:
    """AUC and accuracies at the checkpoint's tuned threshold on ``cache``."""
    import torch

    from facescan.checkpoint import model_from_checkpoint
    from facescan.data.loader import build_loader
    from facescan.evaluation.metrics import classification_metrics
    from facescan.evaluation.scoring import predict_logits

    model = model_from_checkpoint(checkpoint)
    loader = build_loader(cache, train=False, input_size=input_size, batch_size=64)
    logits, labels = predict_logits(model, loader, device=torch.device("cpu"))
    metrics = classification_metrics(
        labels, logits, val_threshold=float(checkpoint["val_threshold"])
    )
    return {
        "auc": round(metrics["auc"], 4),
        "fake_acc_at_val_threshold": round(metrics["acc_fake_at_val_threshold"], 4),
        "real_acc_at_val_threshold": round(metrics["acc_real_at_val_threshold"], 4),
        "kept_epoch": checkpoint["best_epoch"],
        "train_seconds": round(float(checkpoint["train_seconds"]), 1),
    }


def run_recipe(
    name: str,
    overrides: dict[str, Any],
    params: dict[str, Any],
    pool: Pool,
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    variant: str,
) -> dict[str, Any]:
    """Train ``variant`` with one recipe on every inner split and score each inner test set."""
    from facescan.data.transforms import Degradations
    from facescan.models import resolve_options
    from facescan.training import TrainConfig, fit

    training = {**_plain(params.get("training")), **overrides.get("training", {})}
    # Every run from scratch, in a temporary folder: no resume, no skip, nothing written to data/.
    training.update(resume_dir=None, tensorboard_dir=None, force=True)
    config = TrainConfig.from_params(training)
    preprocess = _plain(params.get("preprocess"))
    augment = overrides.get("augment", preprocess.get("augment"))
    model = _plain(params.get("model"))
    pretrained = model.pop("pretrained", None)
    options = resolve_options(
        variant,
        _plain(params.get("ablation")).get("custom_variants") or {},
        **{**{k: v for k, v in model.items() if v is not None}, **overrides.get("model", {})},
    )
    input_size = int(preprocess["input_size"])
    runs = []
    for k, (train, val, test) in enumerate(splits):
        print(f"[recipe_selection] {name}: inner split {k + 1}/{len(splits)}", file=sys.stderr)
        start = time.perf_counter()
        checkpoint = fit(
            namespace=f"{variant}_{name}_{k}",
            variant=variant,
            model_options=options,
            train_cache=pool.cache("train", train),
            val_cache=pool.cache("val", val),
            config=config,
            input_size=input_size,
            seed=config.seed + k,
            pretrained=pretrained,
            degradations=Degradations.from_params(augment),
        )
        result = score(checkpoint, pool.cache("test", test), input_size)
        runs.append({"split": k, **result, "seconds": round(time.perf_counter() - start, 1)})
    aucs = [r["auc"] for r in runs]
    return {
        "recipe": name,
        "overrides": overrides,
        "auc_mean": round(statistics.fmean(aucs), 4),
        "auc_std": round(statistics.stdev(aucs), 4) if len(aucs) > 1 else None,
        "fake_acc_at_val_threshold_mean": round(
            statistics.fmean(r["fake_acc_at_val_threshold"] for r in runs), 4
        ),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=recipe, action="append", required=True)
    ap.add_argument("--variant", default="resnet50")
    ap.add_argument("--splits", type=int, default=3, help="inner splits (seeds --seed + k)")
    ap.add_argument("--test-size", type=float, default=None, help="default: split.test_size")
    ap.add_argument("--val-size", type=float, default=None, help="default: split.val_size")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--project", type=Path, default=REPO)
    ap.add_argument("--env", default=None)
    args = ap.parse_args()
    out = sys.stdout
    # Kedro's rich log handler writes to whatever sys.stdout is: stderr here, so that stdout holds
    # only the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        catalog, params = _catalog(args.project, args.env)
        if not (catalog.exists("train_cache") and catalog.exists("val_cache")):
            sys.exit("no train/val caches: run the ablation (or the data pipelines) first")
        caches = [catalog.load("train_cache"), catalog.load("val_cache")]
        split = _plain(params.get("split"))
        test_size = args.test_size if args.test_size is not None else split.get("test_size", 0.2)
        val_size = args.val_size if args.val_size is not None else split.get("val_size", 0.1)
        with tempfile.TemporaryDirectory(prefix="recipe-selection-") as folder:
            pool = Pool(caches, Path(folder))
            splits = inner_splits(pool.labels, args.splits, test_size, val_size, args.seed)
            results = [
                run_recipe(name, overrides, params, pool, splits, args.variant)
                for name, overrides in args.recipe
            ]
    settings = {k: v for k, v in vars(args).items() if k not in ("project", "recipe")}
    settings.update(test_size=test_size, val_size=val_size, pool=len(pool.labels))
    settings["train_val_test"] = [[len(s) for s in triple] for triple in splits]
    record = {
        "settings": settings,
        "machine": machine(),
        "results": results,
    }
    print(json.dumps(record, default=str), file=out)


if __name__ == "__main__":
    main()
