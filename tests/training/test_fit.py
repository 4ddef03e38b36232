"""fit() in one process: learning, determinism, resume, early stopping, skipping, TensorBoard, NaN.

The model is :class:`TinyNet` (see conftest); the loop, files and decisions are the real ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from facescan.checkpoint import CHECKPOINT_FORMAT, HISTORY_COLUMNS
from facescan.training import TrainingDivergedError, class_weight_tensor, fit
from facescan.training import trainer as trainer_module

from .conftest import INPUT, TINY_OPTIONS, make_config

NS = "tiny_variant"
RESULT_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def run(caches, config, **kwargs: Any) -> dict[str, Any]:
    train, val = caches
    return fit(
        namespace=NS,
        variant=NS,
        model_options=TINY_OPTIONS,
        train_cache=train,
        val_cache=val,
        config=config,
        input_size=INPUT,
        **kwargs,
    )


def results(history: list[dict[str, float]]) -> list[tuple[float, ...]]:
    """What must replay exactly (wall times excluded)."""
    return [tuple(h[k] for k in RESULT_KEYS) for h in history]


class Killed(BaseException):
    """Stands for a kill -9 / Ctrl-C in the middle of an epoch."""


def count_epochs(
    monkeypatch: pytest.MonkeyPatch,
    kill_at: int | None = None,
    before: Callable[[torch.nn.Module, int], None] | None = None,
) -> list[int]:
    """Wrap the engine's train_one_epoch: record calls, optionally die in call ``kill_at``."""
    real = trainer_module.train_one_epoch
    calls: list[int] = []

    def wrapper(model, *args, **kwargs):
        calls.append(len(calls) + 1)
        if before is not None:
            before(model, len(calls))
        if kill_at is not None and len(calls) == kill_at:
            raise Killed()
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_one_epoch", wrapper)
    return calls


def test_fit_learns_and_returns_the_checkpoint_contract(tiny_model, caches, tmp_path) -> None:
    ckpt = run(caches, make_config(tmp_path, max_epochs=4, t_max=4))

    assert set(ckpt) >= {
        "format",
        "namespace",
        "variant",
        "seed",
        "model_options",
        "state_dict",
        "config",
        "history",
        "best_epoch",
        "best_val_acc",
        "best_val_loss",
        "train_seconds",
        "input_size",
        "cache_size",
        "data_fingerprint",
        "provenance",
    }
    assert ckpt["format"] == CHECKPOINT_FORMAT
    assert (ckpt["input_size"], ckpt["cache_size"], ckpt["seed"]) == (INPUT, 40, 0)
    history = ckpt["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # grad_norm_max is recorded only when training.clip_grad_norm is set
    assert all(set(h) == set(HISTORY_COLUMNS) - {"grad_norm_max"} for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert ckpt["best_val_acc"] >= 0.75  # chance is 0.5 on the balanced val set
    assert history[ckpt["best_epoch"] - 1]["val_acc"] == ckpt["best_val_acc"]
    # The cosine schedule stepped once per epoch from lr to eta_min over t_max epochs.
    assert history[0]["lr"] == pytest.approx(1e-2)
    for h in history:
        cosine = 0.5 * (1 + math.cos(math.pi * (h["epoch"] - 1) / 4))
        assert h["lr"] == pytest.approx(1e-6 + (1e-2 - 1e-6) * cosine)
    assert 0.0 <= ckpt["val_threshold"] <= 1.0  # tuned on validation with the best weights
    assert ckpt["provenance"]["runtime"]["world_size"] == 1

    run_dir = tmp_path / "resume" / NS
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "done.json"]
    on_disk = torch.load(run_dir / "best.pt", weights_only=True)
    assert on_disk["best_epoch"] == ckpt["best_epoch"]
    model = tiny_model(TINY_OPTIONS)
    model.load_state_dict(ckpt["state_dict"])


def test_seeded_runs_give_identical_histories(tiny_model, caches, tmp_path) -> None:
    first = run(caches, make_config(tmp_path / "a"))
    second = run(caches, make_config(tmp_path / "b"))
    assert results(first["history"]) == results(second["history"])
    assert all(
        torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"]
    )
    third = run(caches, make_config(tmp_path / "c", seed=1))
    assert results(third["history"]) != results(first["history"])


def test_resume_after_a_kill_continues_from_that_epoch(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    # A warm-up of 1.5 epochs: the kill falls inside it, so the schedule's step count must resume.
    stable = {"warmup_epochs": 1.5, "clip_grad_norm": 1.0}
    reference = run(caches, make_config(tmp_path / "ref", **stable))
    config = make_config(tmp_path / "killed", **stable)

    count_epochs(monkeypatch, kill_at=2)
    with pytest.raises(Killed):
        run(caches, config)
    state = torch.load(tmp_path / "killed" / "resume" / NS / "last.pt", weights_only=True)
    assert state["epoch"] == 1

    calls = count_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facescan"):
        resumed = run(caches, config)
    assert "Resuming tiny_variant from epoch 2" in caplog.text
    assert calls == [1, 2]  # epochs 2 and 3 only
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # Per-epoch seeding: the resumed run replays the uninterrupted one exactly.
    assert results(resumed["history"]) == results(reference["history"])
    assert all(
        torch.equal(resumed["state_dict"][k], reference["state_dict"][k])
        for k in reference["state_dict"]
    )


def test_corrupt_resume_file_is_set_aside_and_training_starts_fresh(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    config = make_config(tmp_path)
    count_epochs(monkeypatch, kill_at=3)
    with pytest.raises(Killed):
        run(caches, config)
    last = tmp_path / "resume" / NS / "last.pt"
    last.write_bytes(b"this is not a torch file")

    calls = count_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facescan"):
        ckpt = run(caches, config)
    assert "is corrupt" in caplog.text and "starts fresh" in caplog.text
    assert len(list(last.parent.glob("last.pt.corrupt-*"))) == 1
    assert calls == [1, 2, 3]
    assert len(ckpt["history"]) == 3


def test_changed_configuration_starts_over(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    count_epochs(monkeypatch, kill_at=2)
    with pytest.raises(Killed):
        run(caches, make_config(tmp_path))
    calls = count_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facescan"):
        run(caches, make_config(tmp_path, lr=5e-3))
    assert "starting over" in caplog.text
    assert calls == [1, 2, 3]


def test_finished_run_is_skipped_and_force_retrains(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    first = run(caches, make_config(tmp_path))

    calls = count_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facescan"):
        again = run(caches, make_config(tmp_path))
    assert calls == []
    assert "Skipping tiny_variant: already trained" in caplog.text
    assert again["history"] == first["history"]
    assert all(
        torch.equal(again["state_dict"][k], first["state_dict"][k]) for k in first["state_dict"]
    )

    forced = run(caches, make_config(tmp_path, force=True))
    assert calls == [1, 2, 3]
    assert results(forced["history"]) == results(first["history"])


def test_early_stopping_fires_at_patience_and_keeps_the_best_epoch(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    # Epoch 3 ties epoch 2's accuracy with a lower loss (better); epoch 4 ties with a higher one.
    accs = [0.50, 0.75, 0.75, 0.75, 0.60, 0.70, 0.90]
    losses = [0.70, 0.60, 0.55, 0.60, 0.70, 0.50, 0.10]
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted(model, criterion, loader, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        i = len(snapshots) - 1
        return {"loss": losses[i], "acc": accs[i], "images": 16}

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    with caplog.at_level(logging.INFO, logger="facescan"):
        ckpt = run(caches, make_config(tmp_path, max_epochs=7, t_max=7, patience=3))

    assert [h["epoch"] for h in ckpt["history"]] == [1, 2, 3, 4, 5, 6]  # never reaches 0.90
    assert "Early stop of tiny_variant at epoch 6" in caplog.text
    assert (ckpt["best_epoch"], ckpt["best_val_acc"], ckpt["best_val_loss"]) == (3, 0.75, 0.55)
    assert all(torch.equal(ckpt["state_dict"][k], snapshots[2][k]) for k in snapshots[2])
    assert not all(torch.equal(ckpt["state_dict"][k], snapshots[5][k]) for k in snapshots[5])


def test_keep_last_keeps_the_final_epoch_whatever_validation_says(
    tiny_model, caches, tmp_path, monkeypatch, caplog
) -> None:
    # Validation accuracy peaks at epoch 2: keep: best would return it, keep: last must not.
    accs = [0.50, 0.90, 0.60, 0.55]
    losses = [0.70, 0.20, 0.60, 0.65]
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted(model, criterion, loader, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        i = len(snapshots) - 1
        return {"loss": losses[i % 4], "acc": accs[i % 4], "images": 16}

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    best = run(caches, make_config(tmp_path / "best", max_epochs=4, t_max=4, patience=None))
    assert (best["best_epoch"], best["best_val_acc"]) == (2, 0.90)
    assert all(torch.equal(best["state_dict"][k], snapshots[1][k]) for k in snapshots[1])

    snapshots.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="facescan"):
        last = run(
            caches,
            make_config(tmp_path / "last", max_epochs=4, t_max=4, patience=None, keep="last"),
        )
    epochs = [r.getMessage() for r in caplog.records if " epoch 2/4:" in r.getMessage()]
    assert len(epochs) == 1 and "best" not in epochs[0]  # no "best 0.9 at epoch 2" to mislead
    assert "Finished tiny_variant: kept the last epoch, val acc 0.5500" in caplog.text
    assert [h["epoch"] for h in last["history"]] == [1, 2, 3, 4]
    assert (last["best_epoch"], last["best_val_acc"], last["best_val_loss"]) == (4, 0.55, 0.65)
    assert all(torch.equal(last["state_dict"][k], snapshots[3][k]) for k in snapshots[3])
    assert not all(torch.equal(last["state_dict"][k], snapshots[1][k]) for k in snapshots[1])
    assert last["config"]["keep"] == "last"
    # The same run otherwise: the fingerprint tells them apart (no skip, no resume across them).
    assert last["run_fingerprint"] != best["run_fingerprint"]


def _val_p_fake(model: torch.nn.Module, cache: Any) -> tuple[np.ndarray, np.ndarray]:
    from facescan.data.loader import build_loader

    loader = build_loader(cache, train=False, input_size=INPUT, batch_size=8)
    with torch.no_grad():
        pairs = [(torch.softmax(model.eval()(x), 1)[:, 1], y) for x, y in loader]
    return torch.cat([p for p, _ in pairs]).numpy(), torch.cat([y for _, y in pairs]).numpy()


def test_tta_hflip_tunes_the_threshold_on_mirror_averaged_scores_and_is_stored(
    tiny_model, caches, tmp_path
) -> None:
    from facescan.models import HorizontalFlipTTA
    from facescan.thresholds import tune_threshold

    plain = run(caches, make_config(tmp_path / "none", max_epochs=2, t_max=2))
    flipped = run(caches, make_config(tmp_path / "hflip", max_epochs=2, t_max=2, tta="hflip"))
    assert (plain["tta"], flipped["tta"]) == ("none", "hflip")
    # The same weights (tta changes no training step), yet another run: the threshold differs.
    assert all(
        torch.equal(plain["state_dict"][k], flipped["state_dict"][k]) for k in plain["state_dict"]
    )
    assert flipped["run_fingerprint"] != plain["run_fingerprint"]

    net = tiny_model(TINY_OPTIONS)
    net.load_state_dict(flipped["state_dict"])
    single, labels = _val_p_fake(net, caches[1])
    averaged, _ = _val_p_fake(HorizontalFlipTTA(net), caches[1])
    assert not np.allclose(single, averaged)  # the mirror image scores differently
    assert plain["val_threshold"] == pytest.approx(tune_threshold(labels, single), abs=1e-6)
    assert flipped["val_threshold"] == pytest.approx(tune_threshold(labels, averaged), abs=1e-6)


def test_threshold_logistic_stores_the_logistic_fit_of_the_validation_scores(
    tiny_model, caches, tmp_path
) -> None:
    from facescan.thresholds import logistic_threshold, tune_threshold

    gap = run(caches, make_config(tmp_path / "gap", max_epochs=2, t_max=2))
    fit = run(caches, make_config(tmp_path / "fit", max_epochs=2, t_max=2, threshold="logistic"))
    assert fit["config"]["threshold"] == "logistic"
    assert fit["run_fingerprint"] != gap["run_fingerprint"]
    net = tiny_model(TINY_OPTIONS)
    net.load_state_dict(fit["state_dict"])
    p_fake, labels = _val_p_fake(net, caches[1])
    assert fit["val_threshold"] == pytest.approx(logistic_threshold(labels, p_fake), abs=1e-6)
    assert fit["val_threshold"] != pytest.approx(0.5)  # a fit, not the fallback
    assert gap["val_threshold"] == pytest.approx(tune_threshold(labels, p_fake), abs=1e-6)


def test_tensorboard_holds_the_scalars(tiny_model, caches, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ckpt = run(caches, make_config(tmp_path, warmup_epochs=1, clip_grad_norm=5.0))
    events = EventAccumulator(str(tmp_path / "tb" / NS))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {
        "loss/train",
        "loss/val",
        "acc/train",
        "acc/val",
        "lr",
        "lr/step",
        "grad_norm/max_before_clip",
        "time/epoch_seconds",
        "throughput/images_per_s",
    }
    # The per-step rate shows the warm-up: a linear ramp over the first epoch, then the cosine.
    lrs = events.Scalars("lr/step")
    per_epoch = len(lrs) // 3
    assert [e.step for e in lrs] == list(range(3 * per_epoch)) and per_epoch >= 2
    ramp = [e.value for e in lrs[:per_epoch]]
    assert ramp == pytest.approx([1e-2 * (k + 1) / per_epoch for k in range(per_epoch)], rel=1e-5)
    assert [h["lr"] for h in ckpt["history"]] == pytest.approx(
        [lrs[0].value, lrs[per_epoch].value, lrs[2 * per_epoch].value], rel=1e-5
    )
    val_loss = events.Scalars("loss/val")
    assert [e.step for e in val_loss] == [1, 2, 3]
    assert [e.value for e in val_loss] == pytest.approx(
        [h["val_loss"] for h in ckpt["history"]], rel=1e-6
    )
    assert all(e.value > 0 for e in events.Scalars("throughput/images_per_s"))


def test_nan_loss_stops_naming_variant_and_epoch_and_keeps_last_good_checkpoint(
    tiny_model, caches, tmp_path, monkeypatch
) -> None:
    def poison(model: torch.nn.Module, call: int) -> None:
        if call == 2:
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))

    count_epochs(monkeypatch, before=poison)
    with pytest.raises(
        TrainingDivergedError,
        match=r"variant 'tiny_variant'.*diverged at epoch 2, step 0.*nan.*"
        r"last good checkpoint \(epoch 1\)",
    ):
        run(caches, make_config(tmp_path))
    run_dir = tmp_path / "resume" / NS
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["best_epoch"] == 1
    assert torch.isfinite(best["state_dict"]["head.weight"]).all()
    assert not (run_dir / "done.json").exists()


def test_a_non_finite_validation_loss_stops_the_run_and_is_never_kept_as_best(
    tiny_model, caches, tmp_path, monkeypatch
) -> None:
    """Issue 13 item 1: a NaN model (val loss nan, some accuracy) must not become "best"."""

    def scripted(model, criterion, loader, **kwargs):
        return {"loss": float("nan"), "acc": 0.5714, "images": 16}

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    with pytest.raises(
        TrainingDivergedError,
        match=r"variant 'tiny_variant'.*diverged at epoch 1: the validation loss is nan; "
        r"no epoch finished",
    ):
        run(caches, make_config(tmp_path))
    run_dir = tmp_path / "resume" / NS
    assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()
    assert not (run_dir / "done.json").exists()


def test_without_resume_dir_nothing_is_left_behind(tiny_model, caches, tmp_path: Path) -> None:
    ckpt = run(caches, make_config(tmp_path, resume_dir=None, tensorboard_dir=None, max_epochs=1))
    assert len(ckpt["history"]) == 1
    assert not (tmp_path / "resume").exists() and not (tmp_path / "tb").exists()


def test_configuration_errors_surface_before_any_worker_starts(
    tiny_model, caches, tmp_path
) -> None:
    with pytest.raises(
        ValueError,
        match=r"training.batch_size \(8\) is the global batch and "
        r"must split evenly across the 3 DDP workers",
    ):
        run(caches, make_config(tmp_path, distributed={"nproc_per_node": 3}))
    with pytest.raises(ValueError, match="training.class_weights: 3 weights given for 2 classes"):
        run(caches, make_config(tmp_path, class_weights=[1.0, 1.0, 1.0]))


def test_class_weights() -> None:
    balanced = class_weight_tensor("balanced", np.array([0, 0, 0, 1]), 2)
    torch.testing.assert_close(balanced, torch.tensor([4 / 6, 4 / 2]))
    assert class_weight_tensor(None, np.array([0, 1]), 2) is None
    torch.testing.assert_close(
        class_weight_tensor((1.0, 3.0), np.array([0, 1]), 2), torch.tensor([1.0, 3.0])
    )
    with pytest.raises(ValueError, match=r"'balanced' needs every class.*\[1\] have no image"):
        class_weight_tensor("balanced", np.array([0, 0]), 2)
