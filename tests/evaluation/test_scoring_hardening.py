"""Predict's inputs: names from the path as given, and unusable files skipped with a warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facescan.evaluation.scoring import list_image_files, load_model, score_files
from facescan.pipelines.predict.nodes import make_submission
from tests.evaluation.helpers import fake_checkpoint, write_images


def _annexed(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A folder of links into a content-addressed store, as git-annex or DVC checkouts are."""
    store = tmp_path / "annex" / "objects"
    blobs = write_images(store, 2, prefix="SHA256E-s1234--")
    folder = tmp_path / "to_score"
    folder.mkdir()
    links = []
    for name, blob in (("1001.jpg", blobs[0]), ("1002.jpg", blobs[0]), ("1003.jpg", blobs[1])):
        link = folder / name
        link.symlink_to(os.path.relpath(blob, folder))
        links.append(link)
    return folder, links


def test_symlinked_inputs_keep_their_own_names_from_a_folder(tmp_path: Path) -> None:
    folder, links = _annexed(tmp_path)
    files = list_image_files(folder)
    assert files == [os.path.abspath(p) for p in links]
    ids = make_submission(pd.DataFrame({"path": files, "label": [0, 1, 0]}))["ImageID"]
    assert ids.tolist() == ["1001", "1002", "1003"]


def test_symlinked_inputs_keep_their_own_names_from_a_list_file(tmp_path: Path) -> None:
    folder, links = _annexed(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("to_score/1003.jpg\nto_score/1001.jpg\nto_score/1002.jpg\n")
    assert list_image_files(listing) == [os.path.abspath(links[i]) for i in (2, 0, 1)]


def test_a_symlinked_input_folder_is_named_as_given(tmp_path: Path) -> None:
    real = tmp_path / "store"
    write_images(real, 2)
    link = tmp_path / "inputs"
    link.symlink_to(real, target_is_directory=True)
    assert list_image_files(link) == [(link / f"{i}.jpg").as_posix() for i in range(2)]


def _score(paths: list[Path]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    model = load_model(fake_checkpoint(), expected_variant="resnet50", device=torch.device("cpu"))
    return score_files(
        model,
        [str(p) for p in paths],
        cache_size=40,
        max_size=1024,
        input_size=32,
        batch_size=4,
        device=torch.device("cpu"),
    )


def test_unusable_files_are_skipped_with_a_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_images(tmp_path, 3)
    rng = np.random.default_rng(1)
    thin = tmp_path / "thin.png"
    Image.fromarray(rng.integers(0, 255, (40000, 34, 3), dtype=np.uint8)).save(thin)
    gif = tmp_path / "gif_inside.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(gif, format="GIF")
    eps = tmp_path / "eps_inside.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n%%EOF\n")
    with caplog.at_level(logging.WARNING, logger="facescan.evaluation.scoring"):
        scored, logits, rejected = _score([good[0], thin, good[1], gif, eps, good[2]])
    assert scored == [str(p) for p in good] and logits.shape == (3, 2)
    assert {Path(p).name: r for p, r in rejected} == {
        "thin.png": "extreme aspect ratio",
        "gif_inside.jpg": "unsupported format",
        "eps_inside.jpg": "unsupported format",
    }
    for path in (thin, gif, eps):
        assert str(path) in caplog.text


def test_an_unexpected_error_while_fitting_skips_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facescan.evaluation import scoring

    good = write_images(tmp_path, 2)

    def broken(path, *args, **kwargs):
        if Path(path).name == "1.jpg":
            raise RuntimeError("resize failed")
        return real(path, *args, **kwargs)

    real = scoring.load_for_cache
    monkeypatch.setattr(scoring, "load_for_cache", broken)
    scored, _, rejected = _score(good)
    assert scored == [str(good[0])]
    assert rejected == [(str(good[1]), "unusable image (RuntimeError: resize failed)")]
