"""The checkpoint contract through the catalog dataset, and models rebuilt from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from facescan.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save, model_from_checkpoint
from facescan.datasets import TorchCheckpointDataset
from facescan.models import create_model, resolve_options
from tests.conftest import load_catalog

SMALL = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "aspp_channels": 32}


def checkpoint_of(variant: str, model: torch.nn.Module | None = None) -> dict:
    options = resolve_options(variant, **SMALL)
    model = model if model is not None else create_model(options)
    return {
        "format": CHECKPOINT_FORMAT,
        "namespace": variant,
        "variant": variant,
        "seed": 0,
        "model_options": options,
        "state_dict": model.state_dict(),
        "config": {"lr": 2e-4},
        "history": [
            {
                "epoch": 1,
                "train_loss": 0.7,
                "train_acc": 0.5,
                "val_loss": 0.69,
                "val_acc": 0.5,
                "lr": 2e-4,
                "seconds": 1.0,
                "images_per_s": 32.0,
            }
        ],
        "best_epoch": 1,
        "best_val_acc": 0.5,
        "best_val_loss": 0.69,
        "train_seconds": 1.0,
        "input_size": 32,
        "cache_size": 40,
        "data_fingerprint": "abc",
        "provenance": {"git_commit": "unknown", "gpus": []},
    }


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = create_model("aspp_crossscan_vit", **SMALL).eval()
    return model, checkpoint_of("aspp_crossscan_vit", model)


def test_round_trip_through_the_catalog_reloads_into_create_model(
    kedro_project: Path, trained
) -> None:
    model, ckpt = trained
    catalog = load_catalog(kedro_project)
    catalog.save("aspp_crossscan_vit.model", ckpt)
    versions = list((kedro_project / "data/06_models/aspp_crossscan_vit/model.pt").iterdir())
    assert len(versions) == 1 and (versions[0] / "model.pt").is_file()  # versioned

    loaded = catalog.load("aspp_crossscan_vit.model")
    assert loaded["history"] == ckpt["history"] and loaded["model_options"] == ckpt["model_options"]
    rebuilt = model_from_checkpoint(loaded, expected_variant="aspp_crossscan_vit")
    assert not rebuilt.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_a_checkpoint_of_another_variant_is_refused_naming_both(trained) -> None:
    _, ckpt = trained
    with pytest.raises(
        ValueError, match="another variant: it holds 'aspp_crossscan_vit', expected 'resnet50'"
    ):
        model_from_checkpoint(ckpt, expected_variant="resnet50")
    mixed = {**ckpt, "model_options": resolve_options("resnet50", **SMALL)}
    with pytest.raises(
        ValueError,
        match="another variant: its weights \\(variant "
        "'aspp_crossscan_vit'\\) do not fit .*'resnet50'",
    ):
        model_from_checkpoint(mixed)


def test_what_is_not_a_facescan_checkpoint_is_refused(trained) -> None:
    model, _ = trained
    with pytest.raises(ValueError, match="not a facescan checkpoint"):
        model_from_checkpoint(model.state_dict())
    with pytest.raises(ValueError, match="not a facescan checkpoint: expected a dict"):
        model_from_checkpoint([1, 2])


def test_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": argparse.Namespace(a=1)}, path)
    with pytest.raises(DatasetError, match="not a loadable facescan checkpoint"):
        TorchCheckpointDataset(filepath=str(path)).load()


def test_saving_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = TorchCheckpointDataset(filepath=str(tmp_path / "m" / "model.pt"))
    dataset.save({"format": CHECKPOINT_FORMAT, "w": torch.ones(3)})
    assert dataset.exists()
    assert dataset._describe()["filepath"].name == "model.pt"

    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"w": torch.zeros(3)}, tmp_path / "m" / "model.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(dataset.load()["w"], torch.ones(3))  # the previous file is intact
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["model.pt"]  # no temp file left


def test_saved_files_follow_the_umask_and_dead_writers_temp_files_are_swept(
    tmp_path: Path,
) -> None:
    """Issue 13 item 9: mode 0666 - umask (not mkstemp's 0600); killed saves leave no litter."""
    import os
    import socket
    import subprocess
    import sys

    target = tmp_path / "m" / "model.pt"
    target.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    left = target.parent / f".model.pt.{host}.{int(dead.stdout)}.abc123.tmp"
    live = target.parent / f".model.pt.{host}.{os.getpid()}.def456.tmp"
    other_host = target.parent / ".model.pt.otherhost.1.ghi789.tmp"
    for f in (left, live, other_host):
        f.write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.ones(1)}, target)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
    assert not left.exists()  # its writer is dead
    assert live.exists() and other_host.exists()  # a live writer's, another host's (recent)
    os.utime(other_host, (0, 0))  # older than a day: swept whoever wrote it
    old = os.umask(0o077)
    try:
        atomic_torch_save({"w": torch.ones(1)}, target)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o600 and not other_host.exists()


SOURCE = "resnet50.model (data/06_models/resnet50/model.pt, latest version)"


def test_checkpoint_errors_are_one_sentence_naming_the_file_and_the_fix(trained) -> None:
    model, ckpt = trained
    with pytest.raises(ValueError) as err:
        model_from_checkpoint(ckpt, expected_variant="resnet50", source=SOURCE)
    message = str(err.value)
    assert message.startswith(
        f"{SOURCE}: a checkpoint from another variant: it holds 'aspp_crossscan_vit', "
        "expected 'resnet50'; "
    )
    assert "--namespaces aspp_crossscan_vit" in message
    assert "kedro run --pipelines training --namespaces resnet50" in message
    assert "\n" not in message

    with pytest.raises(ValueError) as err:  # a plain (torchvision-like) state dict
        model_from_checkpoint(model.state_dict(), source=SOURCE)
    message = str(err.value)
    assert message.startswith(f"{SOURCE}: not a facescan checkpoint but a bare state dict (")
    assert "kedro run --pipelines training" in message and "model.pretrained" in message
    assert "\n" not in message

    with pytest.raises(ValueError, match=r"^checkpoint: not a facescan checkpoint: its format"):
        model_from_checkpoint({"format": "other/2", "weights": [1]})
    with pytest.raises(ValueError, match=r"^checkpoint: an incomplete facescan checkpoint \(no "):
        model_from_checkpoint({"format": CHECKPOINT_FORMAT, "variant": "resnet50"})


def test_weights_that_do_not_fit_are_summarised_in_one_line(trained) -> None:
    _, ckpt = trained
    mixed = {**ckpt, "model_options": resolve_options("resnet50", **SMALL)}
    with pytest.raises(ValueError) as err:
        model_from_checkpoint(mixed, source=SOURCE)
    message = str(err.value)
    assert message.startswith(f"{SOURCE}: a checkpoint from another variant: its weights")
    assert "unexpected (e.g. " in message and "\n" not in message
    assert message.endswith(
        "retrain aspp_crossscan_vit (kedro run --pipelines training --namespaces "
        "aspp_crossscan_vit --params training.force=true)"
    )


@pytest.mark.parametrize("variant", ["aspp_vit", "aspp_crossscan_vit"])
def test_checkpoints_saved_before_the_stability_options_still_load(variant: str) -> None:
    # Trained before vit_init / head_norm / zero_init_head existed: no head LayerNorm in the
    # weights, and no such keys in the options. They rebuild the model they were trained as.
    legacy = {"vit_init": "torch", "head_norm": False, "zero_init_head": False}
    torch.manual_seed(0)
    model = create_model(variant, **SMALL, **legacy).eval()
    ckpt = checkpoint_of(variant, model)
    for key in legacy:
        ckpt["model_options"].pop(key)
    loaded = model_from_checkpoint(ckpt, source="old.pt")
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in loaded.global_pool.modules())
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_what_a_checkpoint_asks_for_is_bounded_before_a_model_is_built(trained) -> None:
    """Issue 13: options asking for a huge model, or absurd image sides, are refused up front."""
    _, ckpt = trained
    huge = {**ckpt, "model_options": {**ckpt["model_options"], "aspp_channels": 200_000}}
    # 2048 -> 200k channels with 3x3 kernels would be billions of parameters: only a meta-device
    # model is built, and the weights' shapes do not fit it.
    with pytest.raises(ValueError, match=r"do not fit the model its options build .*resized"):
        model_from_checkpoint(huge, source="x.pt")
    for key, value in (("input_size", 10**6), ("cache_size", "56"), ("input_size", True)):
        with pytest.raises(ValueError, match=rf"^x\.pt: its {key} is .*not an image side in 32"):
            model_from_checkpoint({**ckpt, key: value}, source="x.pt")
    without = {k: v for k, v in ckpt.items() if k != "cache_size"}
    with pytest.raises(ValueError, match=r"incomplete facescan checkpoint \(no cache_size\)"):
        model_from_checkpoint(without, source="x.pt")


def test_a_flip_tta_checkpoint_scores_with_the_mirror_image_and_a_bad_tta_is_refused(
    trained,
) -> None:
    from facescan.models import HorizontalFlipTTA, single_view

    model, ckpt = trained
    assert not isinstance(model_from_checkpoint(ckpt), HorizontalFlipTTA)  # no tta key: none
    rebuilt = model_from_checkpoint({**ckpt, "tta": "hflip"})
    assert isinstance(rebuilt, HorizontalFlipTTA) and not rebuilt.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2
        torch.testing.assert_close(torch.softmax(rebuilt(x), 1), expected)
        torch.testing.assert_close(single_view(rebuilt)(x), model(x))
    with pytest.raises(ValueError, match="^x.pt: its tta is 'both', not one of none, hflip"):
        model_from_checkpoint({**ckpt, "tta": "both"}, source="x.pt")
