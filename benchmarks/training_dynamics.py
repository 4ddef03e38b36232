"""Training dynamics of the first steps: loss, logit and activation scales, feature diversity and
gradient norms per part, for chosen variants and recipes (prints JSON).

This is the measurement behind docs/model.md's "Why the tail-ViT variants sat at chance": it trains
each variant for ``--steps`` optimizer steps on the project's training cache (run ``make ablation``
or the ``data`` pipelines first) with the training engine's own optimizer, schedule, clipping and
autocast, and records every ``--every`` steps:

- ``loss`` and ``logit_abs`` (mean |logit|; a blown-up head shows here first);
- ``rms/<part>``: root-mean-square of the outputs of layer4, ASPP, the tail patch embedding, the
  ViT, the pooled features (what the classifier reads);
- ``diversity``: the pooled features' standard deviation across the images of the batch over their
  RMS: near 0, every image looks the same to the classifier (representation collapse);
- ``grad/<group>``: the gradient's L2 norm of the trunk (conv1..layer4), ASPP, the ViTs, the head.

Example:
    python benchmarks/training_dynamics.py --variants resnet50,aspp_vit,aspp_crossscan_vit \\
        --steps 25 --lr 1e-3 --warmup-epochs 1 --clip-grad-norm 1 --transformer-lr-scale 0.2
    python benchmarks/training_dynamics.py --model-options \\
        '{"vit_init": "torch", "head_norm": false, "zero_init_head": false}'   # before the fix
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, csv_list, json_options, machine  # noqa: E402


def _catalog(project: Path, env: str | None) -> tuple[Any, dict[str, Any]]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        return context.catalog, context.params


def _groups(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    named = dict(net.named_parameters())
    groups: dict[str, list[nn.Parameter]] = {"trunk": [], "aspp": [], "vit": [], "head": []}
    for name, p in named.items():
        top = name.split(".", 1)[0]
        key = {"aspp": "aspp", "mid_vit": "vit", "tail_vit": "vit", "fc": "head"}.get(top)
        groups[key or ("head" if top == "global_pool" else "trunk")].append(p)
    return groups


def run_variant(
    variant: str, cache: Any, params: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Train ``variant`` for ``args.steps`` steps and record its dynamics."""
    from facescan import runtime
    from facescan.data.loader import build_loader
    from facescan.models import create_model
    from facescan.training import TrainConfig
    from facescan.training.schedule import optimizer_and_schedule

    torch.manual_seed(args.seed)
    model_params = {k: v for k, v in (params.get("model") or {}).items() if k != "pretrained"}
    net = create_model(variant, **{**model_params, **args.model_options})
    net.train()
    device = torch.device("cpu")
    precision = runtime.resolve_precision(args.amp, device)
    loader = build_loader(
        cache,
        train=True,
        input_size=int(params["preprocess"]["input_size"]),
        batch_size=args.batch_size,
        num_workers=0,
        seed=args.seed,
    )
    recipe = TrainConfig.from_params(
        {
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "t_max": args.t_max,
            "eta_min": min(1e-6, args.lr),
            "warmup_epochs": args.warmup_epochs,
            "transformer_lr_scale": args.transformer_lr_scale,
        },
        check_machine=False,
    )
    optimizer, scheduler = optimizer_and_schedule(net, recipe, len(loader))
    rms: dict[str, float] = {}
    diversity: list[float] = []

    def hook(name: str) -> Any:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            t = (out if torch.is_tensor(out) else out[0]).detach().float()
            rms[name] = float(t.pow(2).mean().sqrt())
            if name == "pooled":
                diversity.append(float(t.std(0).mean() / t.pow(2).mean().sqrt().clamp_min(1e-12)))

        return record

    for name, module in (
        ("layer4", net.layer4),
        ("aspp", net.aspp),
        ("mid_vit", net.mid_vit),
        ("tail_vit", net.tail_vit),
        ("pooled", net.global_pool),
    ):
        if not isinstance(module, nn.Identity):
            module.register_forward_hook(hook(name))
    if hasattr(net.tail_vit, "patch_embed"):
        net.tail_vit.patch_embed.register_forward_hook(hook("tail_patch_embed"))
    groups = {k: v for k, v in _groups(net).items() if v}
    criterion = nn.CrossEntropyLoss()
    records, losses, step = [], [], 0
    while step < args.steps:
        for images, targets in loader:
            if step >= args.steps:
                break
            with runtime.autocast(device, precision.dtype):
                logits = net(images)
                loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            loss.backward()
            grads = {
                k: float(
                    torch.linalg.vector_norm(
                        torch.stack(
                            [
                                torch.linalg.vector_norm(p.grad.float())
                                for p in v
                                if p.grad is not None
                            ]
                        )
                    )
                )
                if any(p.grad is not None for p in v)
                else 0.0
                for k, v in groups.items()
            }
            if args.clip_grad_norm:
                nn.utils.clip_grad_norm_(net.parameters(), args.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss))
            if step % args.every == 0 or step == args.steps - 1:
                records.append(
                    {
                        "step": step,
                        "lr": lr,
                        "loss": round(float(loss), 4),
                        "logit_abs": round(float(logits.float().abs().mean()), 3),
                        "diversity": round(diversity[-1], 3) if diversity else None,
                        **{f"rms/{k}": round(v, 3) for k, v in rms.items()},
                        **{f"grad/{k}": float(f"{v:.3g}") for k, v in grads.items()},
                    }
                )
            step += 1
    first_epoch = losses[: len(loader)]
    return {
        "variant": variant,
        "steps_per_epoch": len(loader),
        "first_epoch_mean_loss": round(statistics.fmean(first_epoch), 4),
        "last10_mean_loss": round(statistics.fmean(losses[-10:]), 4),
        "max_loss": round(max(losses), 4),
        "records": records,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variants", type=csv_list, default="resnet50,aspp_vit,aspp_crossscan_vit,vit_aspp"
    )
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--t-max", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup-epochs", type=float, default=0.0)
    ap.add_argument("--clip-grad-norm", type=float, default=0.0)
    ap.add_argument("--transformer-lr-scale", type=float, default=1.0)
    ap.add_argument("--amp", default="auto", help="auto | bf16 | off")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-options", type=json_options, default={})
    ap.add_argument("--project", type=Path, default=REPO)
    ap.add_argument("--env", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = sys.stdout
    # Kedro's rich log handler writes to whatever sys.stdout is: stderr here, so that stdout holds
    # only the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        catalog, params = _catalog(args.project, args.env)
        if not catalog.exists("train_cache"):
            sys.exit("no training cache: run `make ablation` (or the data pipelines) first")
        cache = catalog.load("train_cache")
        results = [run_variant(v, cache, params, args) for v in args.variants]
    settings = {k: v for k, v in vars(args).items() if k not in ("project", "variants")}
    record = {"settings": settings, "machine": machine(), "results": results}
    print(json.dumps(record, default=str), file=out)


if __name__ == "__main__":
    main()
