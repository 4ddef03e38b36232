"""`python -m facescan.training`: the standalone entry point (run in-process here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facescan.runs import VariantRun
from facescan.training.__main__ import _select_run, main, parse_params
from tests.conftest import load_catalog

from .conftest import make_cache


def test_params_parse_like_kedro_run() -> None:
    assert parse_params(
        [
            "training.max_epochs=3,training.lr=1e-3",
            "ablation.variants=[a, b]",
            "training.resume_dir=",
        ]
    ) == {
        "training": {"max_epochs": 3, "lr": 1e-3, "resume_dir": None},
        "ablation": {"variants": ["a", "b"]},
    }
    with pytest.raises(ValueError, match="--params: expected key=value"):
        parse_params(["training.max_epochs"])


def test_the_run_is_the_one_kedro_run_would_make() -> None:
    assert _select_run({"seeds": [42]}, "vit", None) == VariantRun("vit", "vit", 42)
    assert _select_run({"seeds": [1, 2]}, "vit", 2) == VariantRun("vit_seed2", "vit", 2)
    assert _select_run({"seeds": [42]}, "vit", 7) == VariantRun("vit_seed7", "vit", 7)
    with pytest.raises(ValueError, match=r"--seed: ablation.seeds lists \[1, 2\]"):
        _select_run({"seeds": [1, 2]}, "vit", None)


def test_trains_and_saves_to_the_catalog(kedro_project: Path, tiny_model) -> None:
    make_cache(kedro_project / "data/05_model_input/train", 16, seed=0)
    make_cache(kedro_project / "data/05_model_input/val", 8, seed=1)
    assert (
        main(
            [
                "--variant",
                "resnet50",
                "--env",
                "test",
                "--params",
                "training.max_epochs=1,training.threads=1",
            ]
        )
        == 0
    )
    ckpt = load_catalog(kedro_project).load("resnet50.model")
    assert (ckpt["namespace"], ckpt["seed"], len(ckpt["history"])) == ("resnet50", 0, 1)
    assert (kedro_project / "data/07_model_output/resnet50/history.csv").is_file()


def test_refuses_while_a_run_of_the_same_namespace_holds_its_lock(
    kedro_project: Path, tiny_model
) -> None:
    """The torchrun entry point takes the locks `kedro run --namespaces <ns>` would."""
    from facescan.locks import LockBusyError, RunLocks, plan_locks

    make_cache(kedro_project / "data/05_model_input/train", 16, seed=0)
    make_cache(kedro_project / "data/05_model_input/val", 8, seed=1)
    with (
        RunLocks(kedro_project, plan_locks(["resnet50"])),
        pytest.raises(LockBusyError, match=r"ns-resnet50\.lock is held by pid \d+"),
    ):
        main(["--variant", "resnet50", "--env", "test", "--params", "training.max_epochs=1"])
