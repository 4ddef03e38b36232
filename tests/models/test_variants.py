"""The variant registry and option resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from facescan.models import (
    DEFAULT_OPTIONS,
    OPTION_HELP,
    VARIANT_DESCRIPTIONS,
    VARIANTS,
    list_variants,
    resolve_options,
)

CONF = Path(__file__).resolve().parents[2] / "conf"

# DESIGN.md's table: se, dilated, aspp, vit, cross scan + fusion.
DESIGN_TABLE = {
    "resnet50": (False, False, False, None, False),
    "dilated": (True, True, False, None, False),
    "vit": (True, False, False, "mid", False),
    "aspp": (True, True, True, None, False),
    "dilated_vit": (True, True, False, "mid", False),
    "aspp_vit": (True, True, True, "tail", False),
    "vit_aspp": (True, True, True, "mid", False),
    "aspp_crossscan_vit": (True, True, True, "tail", True),
    "se_resnet50": (True, False, False, None, False),
}


def test_list_variants_is_the_report_order_then_the_control() -> None:
    assert list_variants() == list(DESIGN_TABLE)
    assert set(VARIANT_DESCRIPTIONS) == set(VARIANTS)
    assert set(OPTION_HELP) == set(DEFAULT_OPTIONS)


@pytest.mark.parametrize("name", list(DESIGN_TABLE))
def test_variants_match_the_design_table(name: str) -> None:
    o = resolve_options(name)
    assert (o["se"], o["dilated"], o["aspp"], o["vit"], o["cross_scan"]) == DESIGN_TABLE[name]


def test_resolved_options_are_complete_json_and_independent_copies() -> None:
    options = resolve_options("aspp_crossscan_vit")
    assert list(options) == list(DEFAULT_OPTIONS)
    assert json.loads(json.dumps(options)) == options
    assert (options["vit_dim"], options["vit_depth"], options["vit_heads"]) == (512, 4, 8)
    assert (options["aspp_rates"], options["aspp_channels"]) == ([3, 5, 7], 256)
    options["aspp_rates"].append(9)
    assert resolve_options("aspp_crossscan_vit")["aspp_rates"] == [3, 5, 7]
    assert DEFAULT_OPTIONS["aspp_rates"] == [3, 5, 7]


def test_overrides_apply_and_none_is_ignored() -> None:
    options = resolve_options("vit", vit_dim=32, num_classes=None)
    assert options["vit_dim"] == 32
    assert options["num_classes"] == 2 and "pretrained" not in options
    assert resolve_options("vit", vit_dropout=0, vit_mlp_ratio=2)["vit_mlp_ratio"] == 2.0


def test_option_dicts_and_custom_variants_may_start_from_a_base() -> None:
    custom = {
        "se_aspp": {"base": "se_resnet50", "aspp": True},
        "se_aspp_big": {"base": "se_aspp", "aspp_channels": 512},
    }
    options = resolve_options("se_aspp_big", custom_variants=custom)
    assert (options["se"], options["aspp"], options["aspp_channels"], options["dilated"]) == (
        True,
        True,
        512,
        False,
    )
    direct = resolve_options({"base": "aspp", "aspp_rates": [2, 4]})
    assert direct["dilated"] and direct["aspp_rates"] == [2, 4]
    assert resolve_options({"se": True}) == resolve_options("se_resnet50")
    # An option set to null in a dict is honoured (only **overrides skip None).
    assert resolve_options({"base": "vit", "vit": None})["vit"] is None


def test_conf_model_blocks_are_valid_overrides_for_every_variant() -> None:
    base = yaml.safe_load((CONF / "base" / "parameters_ablation.yml").read_text())
    test = yaml.safe_load((CONF / "test" / "parameters_ablation.yml").read_text())
    custom = base["ablation"].get("custom_variants") or {}
    for name in base["ablation"]["variants"]:
        options = resolve_options(name, custom, **{**base["model"], **test["model"]})
        assert options["vit_dim"] == test["model"]["vit_dim"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: resolve_options("resnet51"),
            r"unknown variant 'resnet51'; valid variants: resnet50, dilated",
        ),
        (
            lambda: resolve_options("mine", {"mine": {}}, vit_dim=0),
            r"vit_dim must be a positive integer",
        ),
        (
            lambda: resolve_options("vit", vit_dims=32),
            r"unknown option\(s\) 'vit_dims'; valid options: se,",
        ),
        (lambda: resolve_options({"base": "vit", "colour": 1}), r"unknown option\(s\) 'colour'"),
        (lambda: resolve_options({"base": "nope"}), r"unknown variant 'nope'"),
        (lambda: resolve_options({"base": 3}), r"'base' must be a variant key"),
        (lambda: resolve_options(3), r"variant key or an option dict"),
        (lambda: resolve_options("vit", se="yes"), r"se must be true or false, got 'yes'"),
        (lambda: resolve_options("vit", vit_depth=True), r"vit_depth must be a positive integer"),
        (
            lambda: resolve_options("vit", vit="head"),
            r"vit must be null, 'mid' or 'tail', got 'head'",
        ),
        (
            lambda: resolve_options("vit", vit_dropout=1.0),
            r"vit_dropout must be a number in \[0, 1\)",
        ),
        (
            lambda: resolve_options("aspp", aspp_rates=[3, "5"]),
            r"aspp_rates\[1\] must be a positive",
        ),
        (lambda: resolve_options("aspp", aspp_rates=[]), r"aspp_rates must be a non-empty list"),
        (
            lambda: resolve_options("vit", vit_dim=30, vit_heads=2),
            r"vit_dim must be a multiple of 4",
        ),
        (lambda: resolve_options("vit", vit_dim=32, vit_heads=3), r"and of vit_heads \(3\)"),
        (lambda: resolve_options("vit", cross_scan=True), r"cross_scan: true needs vit: tail"),
        (lambda: resolve_options("dilated", dilation_rates=[2]), r"dilation_rates must list 2"),
        (lambda: resolve_options("vit", se_reduction=512), r"se_reduction must be at most 256"),
        (lambda: resolve_options("vit", pretrained="w.pt"), r"unknown option\(s\) 'pretrained'"),
        (lambda: resolve_options("vit", vit_mlp_ratio=-1.0), r"vit_mlp_ratio must be a positive"),
    ],
)
def test_bad_names_and_options_are_value_errors_naming_them(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"vit": {"se": True}}, r"'vit' is a built-in variant"),
        ({"my variant": {}}, r"not a valid variant key"),
        ({"mine": [1]}, r"custom_variants.mine must be an option dict"),
        ({"a": {"base": "b"}, "b": {"base": "a"}}, r"'base' chain loops: a -> b -> a"),
    ],
)
def test_bad_custom_variants_are_value_errors(custom: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_options("a" if "a" in custom else "resnet50", custom)


def test_unknown_variant_lists_custom_variants_too() -> None:
    with pytest.raises(ValueError, match=r"se_resnet50, mine"):
        resolve_options("nope", {"mine": {"base": "vit"}})
