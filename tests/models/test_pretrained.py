"""ImageNet initialisation from a torchvision resnet50 state dict: a file, or ``imagenet`` by
name through torch.hub's cache (tested offline: a generated state dict stands in for it)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.models import ResNet50_Weights, resnet18, resnet50

from facescan.models import create_model, load_resnet50_weights
from facescan.models.pretrained import (
    pretrained_cache_file,
    pretrained_identity,
    resolve_pretrained,
)

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


# -- model.pretrained: imagenet (torchvision's weights by name, through torch.hub's cache) --------


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub's folder under a temporary TORCH_HOME; any download fails loudly (offline)."""
    monkeypatch.setattr(
        torch.hub, "_hub_dir", None
    )  # a set_dir elsewhere would win over TORCH_HOME
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub"


def _cached_imagenet(hub_dir: Path, weights: Path) -> Path:
    """Put a resnet50 state dict where torchvision's cache looks for IMAGENET1K_V2."""
    file = hub_dir / "checkpoints" / "resnet50-11ad3fa6.pth"
    file.parent.mkdir(parents=True)
    shutil.copyfile(weights, file)
    return file


def test_the_imagenet_file_is_torch_hubs_cached_copy(hub_dir: Path) -> None:
    assert ResNet50_Weights.IMAGENET1K_V2.url.endswith("/resnet50-11ad3fa6.pth")
    assert pretrained_cache_file() == hub_dir / "checkpoints" / "resnet50-11ad3fa6.pth"


def test_imagenet_by_name_loads_the_cached_file_into_the_trunk_only(
    hub_dir: Path, weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline: the file is found in the cache, nothing is downloaded. The trunk's tensors come
    from it; fc (2 classes, not 1000), SE, ASPP, the ViT and FeatureFusion keep their own init."""
    file = _cached_imagenet(hub_dir, weights)
    assert resolve_pretrained("imagenet") == file
    assert resolve_pretrained("ImageNet") == file
    torch.manual_seed(0)
    plain = create_model("aspp_crossscan_vit", **SMALL).state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="facescan.models.pretrained"):
        model = create_model("aspp_crossscan_vit", pretrained="imagenet", **SMALL)
    assert model.pretrained == "imagenet" and "pretrained" not in model.options
    assert str(file) in caplog.text
    report = load_resnet50_weights(create_model("aspp_crossscan_vit", **SMALL), "imagenet")
    assert report.path == file
    state, ours = torch.load(file, weights_only=True), model.state_dict()
    assert "conv1.weight" in report.loaded and "layer4.2.conv3.weight" in report.loaded
    for key in report.loaded:
        torch.testing.assert_close(ours[key], state[key], rtol=0, atol=0)
    assert {"fc.weight", "fc.bias"} <= set(report.shape_mismatch)
    own = set(report.not_initialised)
    # ASPP, the Cross Scan ViT, FeatureFusion (global_pool.1), the head's norm, SE and fc.
    for prefix in ("aspp.", "tail_vit.", "global_pool.1.", "global_pool.2.", "fc."):
        module = {k for k in ours if k.startswith(prefix)}
        assert module and module <= own, prefix
    assert any(".se." in k for k in own)
    assert not any(k.startswith(("conv1.", "bn1.", "layer1.0.conv1.")) for k in own)
    for key in own:  # exactly the initialisation the model has without ImageNet weights
        torch.testing.assert_close(ours[key], plain[key], rtol=0, atol=0)


def test_offline_without_the_file_names_the_file_to_place(hub_dir: Path) -> None:
    file = hub_dir / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(FileNotFoundError) as caught:
        create_model("resnet50", pretrained="imagenet")
    message = str(caught.value)
    assert message.startswith("model.pretrained: imagenet: ResNet50_Weights.IMAGENET1K_V2 is not")
    assert "could not be downloaded (URLError: <urlopen error [Errno -3]" in message
    assert f"download {ResNet50_Weights.IMAGENET1K_V2.url} and place it at {file} " in message
    assert "torch.hub.get_dir()/checkpoints" in message and "TORCH_HOME" in message
    assert message.count(". ") == 0  # one sentence
    assert isinstance(caught.value.__cause__, URLError)
    assert not file.exists() and list(file.parent.iterdir()) == []  # nothing half-written


def test_a_missing_file_is_downloaded_once_with_its_hash_checked(
    hub_dir: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, str | None]] = []

    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        shutil.copyfile(weights, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    file = resolve_pretrained("imagenet", progress=False)
    assert calls == [(ResNet50_Weights.IMAGENET1K_V2.url, str(file), "11ad3fa6")]
    assert resolve_pretrained("imagenet") == file and len(calls) == 1  # cached from now on
    create_model("resnet50", pretrained="imagenet")
    assert len(calls) == 1


def test_a_download_with_the_wrong_hash_is_refused(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "00ff")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", corrupt)
    with pytest.raises(ValueError, match=r"does not match the sha256 prefix in its name"):
        resolve_pretrained("imagenet")


def test_pretrained_identity_hashes_the_weights_not_the_path(
    hub_dir: Path, weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert pretrained_identity(None) is None
    assert pretrained_identity(weights) == f"sha256:{digest}"
    moved = tmp_path / "elsewhere.pth"
    shutil.copyfile(weights, moved)
    assert pretrained_identity(str(moved)) == pretrained_identity(str(weights))
    other = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in torch.load(weights, weights_only=True).items()}, other)
    assert pretrained_identity(other) != pretrained_identity(weights)
    with pytest.raises(FileNotFoundError, match="model.pretrained: .*missing.pth does not exist"):
        pretrained_identity(tmp_path / "missing.pth")

    _cached_imagenet(hub_dir, weights)
    with caplog.at_level(logging.WARNING, logger="facescan.models.pretrained"):
        identity = pretrained_identity("imagenet")
    assert identity == f"ResNet50_Weights.IMAGENET1K_V2 sha256:{digest}"
    # A stand-in for the published file: said so, and its own hash is in the identity.
    assert f"sha256 starts with {digest[:8]}, not 11ad3fa6" in caplog.text
