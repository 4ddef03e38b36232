"""Shared sizes for the model tests."""

from __future__ import annotations

from typing import Any

import pytest
import torch

#: The overrides conf/test gives every variant (kept small so a ResNet-50 step takes well under 1 s).
SMALL: dict[str, Any] = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "aspp_channels": 32}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
