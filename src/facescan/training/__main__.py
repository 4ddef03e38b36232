"""Train one variant outside ``kedro run``: the entry point for several nodes under torchrun.

Run from the project root (the folder holding ``conf/`` and ``data/``), on every node, with the
same configuration and the same caches (run ``kedro run --pipelines data`` once, on shared storage
or on each node)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint node0.example:29500 --rdzv-id aspp-run \\
        -m facescan.training --variant aspp_crossscan_vit --env paper

The configuration is read exactly as ``kedro run --env <env>`` reads it (Kedro's
``OmegaConfigLoader`` with the project's settings: ``base`` + the environment, soft-merged, and
``--params key=value`` overrides), and so are the caches (``train_cache`` / ``val_cache`` from the
catalog). Rank 0 saves the best checkpoint and its history to the catalog's ``{ns}.model`` (a new
version) and ``{ns}.history``, as the ``training`` pipeline would; ``--no-save`` skips that. Without
torchrun the command trains on this machine alone (with ``training.distributed.nproc_per_node``
workers), like ``kedro run --pipelines training --namespaces <ns>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("facescan.training")


def split_params(text: str) -> list[str]:
    """Split ``a=1,b=[1, 2]`` on commas outside brackets (Kedro's ``--params`` splits on every comma,
    so a list can only be passed here)."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item.strip()]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["training.max_epochs=3", ...]`` -> nested dict, read as ``kedro run --params`` reads them
    (``OmegaConf.from_dotlist``: numbers, ``1e-3``, lists, ``null``; an empty value is null)."""
    from omegaconf import OmegaConf

    dotlist = []
    for pair in pairs:
        for item in split_params(pair):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--params: expected key=value, got {item!r}")
            dotlist.append(f"{key.strip()}={value}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))  # type: ignore[return-value]


def _select_run(ablation: dict[str, Any], variant: str, seed: int | None) -> Any:
    """The run ``kedro run`` would make for ``variant`` (same namespace and seed), so that the
    two entry points share resume files and checkpoints.

    Raises:
        ValueError: when ``ablation.seeds`` lists several seeds and ``--seed`` picks none of them.
    """
    from facescan.runs import VariantRun, expand_runs

    runs = expand_runs({**ablation, "variants": [variant]})
    if seed is not None:  # a seed outside ablation.seeds gets a namespace of its own
        runs = [r for r in runs if r.seed == seed] or [
            VariantRun(f"{variant}_seed{seed}", variant, seed)
        ]
    if len(runs) > 1:
        raise ValueError(
            f"--seed: ablation.seeds lists {[r.seed for r in runs]}; pass --seed to pick one"
        )
    return runs[0]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m facescan.training``."""
    parser = argparse.ArgumentParser(
        prog="python -m facescan.training",
        description="Train one facescan variant (use under torchrun for several nodes).",
    )
    parser.add_argument("--variant", required=True, help="variant key (ablation.variants)")
    parser.add_argument(
        "--seed",
        type=int,
        help="which of ablation.seeds to train (needed "
        "when it lists several; the namespace is then <variant>_seed<seed>)",
    )
    parser.add_argument("--env", default=None, help="Kedro environment (e.g. paper)")
    parser.add_argument("--conf-source", default="conf", help="configuration folder")
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        help="overrides as in kedro run: key=value[,key=value] (repeatable)",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="do not save to the catalog (the best checkpoint stays in "
        "training.resume_dir/<namespace>/best.pt)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the configuration and caches, train, save on rank 0."""
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    )
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

    from kedro.io import DataCatalog
    from kedro.io.core import generate_timestamp

    from facescan.locks import RunLocks, plan_locks
    from facescan.pipeline_registry import config_loader

    conf_source = Path(args.conf_source)
    if not conf_source.is_dir():
        raise FileNotFoundError(
            f"--conf-source: {conf_source.resolve()} is not a folder; run from the project root"
        )
    loader = config_loader(conf_source, env=args.env, runtime_params=parse_params(args.params))
    params = loader["parameters"]
    catalog = DataCatalog.from_config(loader["catalog"], save_version=generate_timestamp())
    run = _select_run(params.get("ablation") or {}, args.variant, args.seed)
    # As `kedro run --pipelines training --namespaces <ns>` (facescan.hooks.RunLockHook): the
    # project lock shared and this namespace's exclusively; rank 0 only (one lock per job).
    locks = RunLocks(Path.cwd(), plan_locks([run.namespace])).acquire() if rank == 0 else None
    try:
        return _train(args, params, catalog, run)
    finally:
        if locks is not None:
            locks.release()


def _train(args: argparse.Namespace, params: dict[str, Any], catalog: Any, run: Any) -> int:
    """Train ``run`` and save it to the catalog (rank 0)."""
    import pandas as pd

    from facescan.checkpoint import HISTORY_COLUMNS
    from facescan.data.transforms import Degradations
    from facescan.models import resolve_options
    from facescan.training import TrainConfig, fit
    from facescan.training.config import ModelParams

    config = TrainConfig.from_params(params.get("training"))
    model = ModelParams.parse(params.get("model"))
    options = resolve_options(
        args.variant,
        (params.get("ablation") or {}).get("custom_variants") or {},
        **model.overrides(),
    )
    checkpoint = fit(
        namespace=run.namespace,
        variant=run.variant,
        model_options=options,
        train_cache=catalog.load("train_cache"),
        val_cache=catalog.load("val_cache"),
        config=config,
        input_size=int(params["preprocess"]["input_size"]),
        seed=run.seed,
        pretrained=model.pretrained,
        degradations=Degradations.from_params((params.get("preprocess") or {}).get("augment")),
    )
    namespace = run.namespace
    if checkpoint is not None and not args.no_save:
        catalog.save(f"{namespace}.model", checkpoint)
        catalog.save(
            f"{namespace}.history",
            pd.DataFrame(checkpoint["history"], columns=list(HISTORY_COLUMNS)),
        )
        logger.info("Saved %s.model and %s.history", namespace, namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
