"""Parameter and FLOP counting."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet50

from facescan.models import ViT, count_forward_flops, count_parameters, create_model


def test_attention_is_counted_on_cpu_even_where_the_fast_path_would_hide_it() -> None:
    dim, ffn, patch = 16, 64, 2
    model = ViT(3, dim, patch_size=patch, depth=1, heads=2, mlp_ratio=ffn / dim).train()
    n = (8 // patch) * (12 // patch)
    expected = (
        2 * n * dim * 3 * patch * patch  # patch embedding
        + 2 * n * (4 * dim * dim + 2 * dim * ffn)  # q, k, v, out projections and the MLP
        + 2 * 2 * n * n * dim  # q k^T and attention @ v, all heads together
    )
    fast_path = torch.backends.mha.get_fastpath_enabled()
    assert count_forward_flops(model, (8, 12)) == expected
    assert count_forward_flops(model, (8, 12), batch_size=3) == 3 * expected
    assert model.training  # restored
    assert torch.backends.mha.get_fastpath_enabled() == fast_path


def test_baseline_flops_and_parameters_equal_torchvision_resnet50() -> None:
    with torch.device("meta"):
        ours = create_model("resnet50")
        reference = resnet50(num_classes=2)
    flops = count_forward_flops(ours, 224)
    assert flops == count_forward_flops(reference, 224)
    assert 8.1e9 < flops < 8.3e9  # the well-known 4.1 GMACs
    assert count_parameters(ours) == 23_512_130


def test_meta_and_cpu_counts_agree() -> None:
    small = {"vit_dim": 32, "vit_depth": 1, "vit_heads": 2, "aspp_channels": 32}
    with torch.device("meta"):
        on_meta = create_model("aspp_crossscan_vit", **small)
    on_cpu = create_model("aspp_crossscan_vit", **small)
    assert count_forward_flops(on_meta, (32, 48)) == count_forward_flops(on_cpu, (32, 48))


@pytest.mark.parametrize(
    ("size", "batch"), [(0, 1), ((32,), 1), ((32, 32.0), 1), (32, 0), (32, True)]
)
def test_bad_sizes_are_value_errors(size: object, batch: object) -> None:
    with pytest.raises(ValueError, match="input_size|batch_size"):
        count_forward_flops(ViT(3, 8, 1, 1, 2), size, batch)  # type: ignore[arg-type]
