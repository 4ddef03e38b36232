"""ImageNet initialisation from a local torchvision resnet50 state dict."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet50

from facescan.models import create_model, load_resnet50_weights

from .conftest import SMALL


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision resnet50 state dict (random init stands in for ImageNet weights)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(resnet50().state_dict(), path)
    return path


def test_matching_backbone_tensors_are_loaded_and_the_rest_is_logged(
    weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = torch.load(weights, weights_only=True)
    with caplog.at_level(logging.INFO, logger="facescan.models.pretrained"):
        model = create_model("se_resnet50", pretrained=str(weights), **SMALL)
    ours = model.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.2.bn3.running_var"):
        torch.testing.assert_close(ours[key], state[key], rtol=0, atol=0)
    assert model.pretrained == str(weights) and "pretrained" not in model.options
    message = caplog.text
    assert str(weights) in message
    assert "left at random init: fc, layer*.*.se.fc1, layer*.*.se.fc2" in message
    assert "not used from the file: fc" in message


def test_report_lists_what_was_left_out_of_a_mid_vit_model(weights: Path) -> None:
    model = create_model("vit", **SMALL)
    report = load_resnet50_weights(model, weights)
    # layer4 takes the ViT's 32 channels: its first convolution and projection keep random init.
    assert report.shape_mismatch == (
        "fc.bias",
        "fc.weight",
        "layer4.0.conv1.weight",
        "layer4.0.downsample.0.weight",
    )
    assert "layer4.1.conv1.weight" in report.loaded
    assert "mid_vit.patch_embed.proj.weight" in report.not_initialised
    assert report.unused == ()
    torch.testing.assert_close(
        model.state_dict()["layer3.5.conv3.weight"],
        torch.load(weights, weights_only=True)["layer3.5.conv3.weight"],
    )


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(
        FileNotFoundError, match=r"model.pretrained: .*nowhere/resnet50.pth does not exist"
    ):
        create_model("resnet50", pretrained=str(missing))


def test_a_file_that_is_not_a_state_dict_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(
        ValueError, match=r"model.pretrained: cannot read .*notes.txt as a torch state dict"
    ):
        create_model("resnet50", pretrained=str(text))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"tensor.pt holds a Tensor, not a state dict"):
        create_model("resnet50", pretrained=str(tensor))


def test_another_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet18.pth is not a torchvision resnet50 state dict"):
        create_model("resnet50", pretrained=str(path))
