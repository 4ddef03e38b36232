"""Shared sizes for the model tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch

#: The overrides conf/test gives every variant (kept small so a ResNet-50 step takes well under 1 s),
#: and a random classifier (zero_init_head off): these tests compare outputs, which a zero head
#: would make all 0 (test_classifier.py tests the zero head itself).
SMALL: dict[str, Any] = {
    "vit_dim": 32,
    "vit_depth": 1,
    "vit_heads": 2,
    "aspp_channels": 32,
    "zero_init_head": False,
}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
