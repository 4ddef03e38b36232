"""scripts/model_card.py keeps the prose and rewrites only its section."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from facescan.models import list_variants

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def card() -> ModuleType:
    spec = importlib.util.spec_from_file_location("model_card", REPO / "scripts" / "model_card.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_update_replaces_only_the_marked_section(card: ModuleType) -> None:
    text = f"# Title\nprose before\n\n{card.START}\nold table\n{card.END}\nprose after\n"
    new = card.update(text, f"{card.START}\nnew table\n{card.END}")
    assert new == f"# Title\nprose before\n\n{card.START}\nnew table\n{card.END}\nprose after\n"
    assert card.update(new, f"{card.START}\nnew table\n{card.END}") == new
    appended = card.update("# Only prose\n", f"{card.START}\nx\n{card.END}")
    assert appended == f"# Only prose\n\n{card.START}\nx\n{card.END}\n"


def test_tables_cover_every_variant_and_option(card: ModuleType) -> None:
    variants = card.variants_table()
    for name in list_variants():
        assert f"| `{name}` |" in variants
    assert (
        "| 8 | `aspp_crossscan_vit` | ResNet50 + ASPPCrossScanViT | yes | yes | yes | tail | yes |"
        in variants
    )
    assert "| `vit_dim` | `512` |" in card.options_table()
    base = yaml.safe_load((REPO / "conf" / "base" / "parameters_preprocess.yml").read_text())
    assert card.demo_input_size() == base["preprocess"]["input_size"]


def test_committed_model_card_has_the_generated_section(card: ModuleType) -> None:
    text = (REPO / "docs" / "model.md").read_text(encoding="utf-8")
    assert text.count(card.START) == 1 and text.count(card.END) == 1
    section = text.split(card.START, 1)[1].split(card.END, 1)[0]
    assert card.variants_table() in section and card.options_table() in section
    # GFLOPs at 224 and at the base environment's 48 px demo input
    assert "| `resnet50` | 23,512,130 | 8.17 | 0.43 | 1.00x |" in section
