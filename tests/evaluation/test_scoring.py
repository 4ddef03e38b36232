"""Scoring image files: listing inputs, skipping unreadable files, same pixels as the caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facescan.data.cache import ImageStream, write_cache
from facescan.data.preprocess import stream_images
from facescan.evaluation.scoring import list_image_files, load_model, score_cache, score_files
from tests.evaluation.helpers import fake_checkpoint, write_images


def test_list_image_files_from_a_folder_recursively(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "a" / "deeper", 1, prefix="x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._0.jpg").write_bytes(b"macOS resource fork")
    (tmp_path / "UPPER.JPG").write_bytes(b"")
    files = list_image_files(tmp_path)
    names = [Path(f).relative_to(tmp_path).as_posix() for f in files]
    assert names == ["UPPER.JPG", "a/0.jpg", "a/1.jpg", "a/deeper/x0.jpg"]


def test_list_image_files_from_a_list_file(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 2)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\nimgs/1.jpg\n\n{tmp_path / 'imgs' / '0.jpg'}\nimgs/1.jpg\n")
    files = list_image_files(listing)
    assert files == [(tmp_path / "imgs" / "1.jpg").as_posix(), (tmp_path / "imgs/0.jpg").as_posix()]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (None, ValueError, "predict.input_path is not set"),
        (
            "/no/such/folder",
            FileNotFoundError,
            "predict.input_path: /no/such/folder does not exist",
        ),
    ],
)
def test_missing_input_path_names_the_parameter(value, error, message) -> None:
    with pytest.raises(error, match=message):
        list_image_files(value)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_image_files(tmp_path)


def test_files_are_scored_like_their_cached_copies_and_bad_files_skipped(tmp_path: Path) -> None:
    good = write_images(tmp_path, 5)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good[0].read_bytes()[:200])  # a truncated JPEG
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    model = load_model(fake_checkpoint(), expected_variant="resnet50", device=torch.device("cpu"))
    paths = [str(p) for p in [good[0], corrupt, *good[1:3], empty, *good[3:]]]
    scored, logits, rejected = score_files(
        model,
        paths,
        cache_size=40,
        max_size=1024,
        input_size=32,
        batch_size=3,
        device=torch.device("cpu"),
    )
    assert scored == [str(p) for p in good]
    assert logits.shape == (5, 2) and np.isfinite(logits).all()
    assert [Path(p).name for p, _ in rejected] == ["corrupt.jpg", "empty.png"]
    assert rejected[0][1] in ("truncated file", "corrupt file") and rejected[1][1] == "zero bytes"
    # The same files through the cache (as evaluation sees them) give the same logits.
    cache = write_cache(
        tmp_path / "cache",
        ImageStream(
            40,
            [0] * 5,
            [str(p) for p in good],
            lambda: stream_images([str(p) for p in good], 40, 1024),
        ),
    )
    cached = score_cache(model, cache, input_size=32, batch_size=2, device=torch.device("cpu"))
    np.testing.assert_allclose(cached.logits, logits, rtol=1e-4, atol=1e-5)
    assert cached.images_per_s > 0


def test_a_checkpoint_of_another_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="another variant"):
        load_model(fake_checkpoint("resnet50"), expected_variant="vit", device=torch.device("cpu"))


def test_a_flip_tta_checkpoint_is_evaluated_with_the_mirror_image(tmp_path: Path) -> None:
    from facescan.data.transforms import eval_transform
    from facescan.pipelines.evaluation.nodes import evaluate_model

    good = write_images(tmp_path, 12)
    cache = write_cache(
        tmp_path / "cache",
        ImageStream(
            40,
            [0, 1] * 6,
            [str(p) for p in good],
            lambda: stream_images([str(p) for p in good], 40, 1024),
        ),
    )
    evaluation = {"device": "cpu", "amp": "off", "num_workers": 0, "batch_size": 4}
    plain = fake_checkpoint()
    runs = {
        tta: evaluate_model({**plain, "tta": tta}, cache, cache, evaluation, variant="resnet50")
        for tta in ("none", "hflip")
    }
    (p_none, m_none), (p_flip, m_flip) = runs["none"], runs["hflip"]
    assert (m_none["tta"], m_flip["tta"]) == ("none", "hflip")
    assert m_flip["gflops"] == m_none["gflops"]  # one forward pass, the model's cost
    model = load_model(plain, expected_variant="resnet50", device=torch.device("cpu"))
    x = torch.stack(
        [eval_transform(32)(torch.from_numpy(np.array(cache[i][0]))) for i in range(len(good))]
    )
    with torch.no_grad():
        mirrored = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1))[:, 1] / 2
    np.testing.assert_allclose(p_flip["p_fake"].to_numpy(), mirrored.numpy(), atol=1e-5)
    assert not np.allclose(p_none["p_fake"].to_numpy(), p_flip["p_fake"].to_numpy())
