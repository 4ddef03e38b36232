"""TrainConfig: every key validated, errors name training.<key>."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from facescan.training import TrainConfig
from facescan.training.config import RESULT_KEYS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env", ["base", "test", "paper"])
def test_shipped_configurations_validate(env: str) -> None:
    base = yaml.safe_load((REPO / "conf/base/parameters_training.yml").read_text())["training"]
    files = {
        "base": [],
        "test": ["conf/test/parameters_training.yml"],
        "paper": ["conf/paper/parameters.yml"],
    }[env]
    params = dict(base)
    for f in files:
        params.update(yaml.safe_load((REPO / f).read_text())["training"])
    config = TrainConfig.from_params(params)
    recipe = (
        config.lr,
        config.weight_decay,
        config.t_max,
        config.eta_min,
        config.patience,
        config.batch_size,
    )
    if env == "paper":  # the report's recipe
        assert recipe == (2e-4, 1e-4, 60, 1e-6, 20, 32)
        assert config.max_epochs == 100
    if env == "base":  # the CPU demo: the report's schedule, a larger rate for few steps
        assert recipe == (1e-3, 1e-4, 60, 1e-6, 20, 16)


def test_defaults_and_conversions() -> None:
    config = TrainConfig.from_params(
        {
            "lr": "3e-4",
            "amp": False,
            "class_weights": [1, "2.5"],
            "distributed": {"nproc_per_node": 2},
        }
    )
    assert config.lr == 3e-4  # YAML 1.1 reads 3e-4 as a string
    assert config.amp == "off"  # YAML reads a bare `off` as false
    assert config.class_weights == (1.0, 2.5)
    assert config.distributed.nproc_per_node == 2 and config.distributed.backend == "auto"
    assert set(config.result_affecting()) == set(RESULT_KEYS)
    assert config.to_dict()["class_weights"] == [1.0, 2.5]
    assert TrainConfig.from_params(None) == TrainConfig()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_epoch": 3}, "training.max_epoch: unknown option"),
        ({"batch_size": 0}, "training.batch_size: expected an integer >= 1, got 0"),
        ({"batch_size": 8.5}, "training.batch_size"),
        ({"max_epochs": True}, "training.max_epochs"),
        ({"lr": 0}, "training.lr: expected a finite number > 0"),
        ({"lr": "fast"}, "training.lr"),
        ({"weight_decay": -1}, "training.weight_decay"),
        ({"eta_min": 1.0}, "training.eta_min: 1.0 is above training.lr"),
        ({"patience": 0}, "training.patience"),
        ({"class_weights": "inverse"}, "training.class_weights"),
        ({"class_weights": [1.0, -1.0]}, "training.class_weights"),
        ({"amp": "fp8"}, "training.amp: expected one of"),
        ({"device": "tpu"}, "training.device"),
        ({"channels_last": "yes"}, "training.channels_last"),
        ({"compile": "true"}, "training.compile"),
        ({"num_workers": -1}, "training.num_workers"),
        ({"threads": 0}, "training.threads"),
        ({"checkpoint_every": 0}, "training.checkpoint_every"),
        ({"force": 1}, "training.force"),
        ({"resume_dir": ""}, "training.resume_dir"),
        ({"distributed": {"nproc_per_node": 0}}, "training.distributed.nproc_per_node"),
        ({"distributed": {"backend": "mpi"}}, "training.distributed.backend"),
        ({"distributed": {"timeout": 5}}, "training.distributed.timeout: unknown option"),
        ({"distributed": {"timeout_s": 0}}, "training.distributed.timeout_s"),
        ({"distributed": 2}, "training.distributed: expected a mapping"),
    ],
)
def test_bad_values_name_the_parameter(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_params(params)


def test_warns_when_max_epochs_exceed_t_max(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="facescan"):
        TrainConfig.from_params({"max_epochs": 100, "t_max": 60})
    assert "training.max_epochs (100) > training.t_max (60)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facescan"):
        TrainConfig.from_params({"max_epochs": 60, "t_max": 60})
    assert caplog.text == ""
