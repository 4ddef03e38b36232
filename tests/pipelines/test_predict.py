"""The predict pipeline through Kedro: a temp folder with good, corrupt and empty files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import load_catalog, run_kedro
from tests.evaluation.helpers import fake_checkpoint, write_images


def predict_params(**overrides: object) -> dict:
    """Runtime ``predict`` parameters (nested: merged key by key into the configuration).

    fp32 in one process: deterministic, and the fastest on a small CPU.
    """
    return {"predict": {"amp": "off", "num_workers": 0, **overrides}}


def run_predict(project: Path, **overrides: object) -> Path:
    """``kedro run --pipelines predict --namespaces resnet50`` with :func:`predict_params`;
    returns the run's output folder."""
    run_kedro(project, ["predict"], namespaces=["resnet50"], params=predict_params(**overrides))
    return project / "data" / "07_model_output" / "resnet50"


@pytest.fixture
def project_with_model(kedro_project: Path) -> Path:
    """The project copy with a resnet50 checkpoint in the catalog (no training run)."""
    load_catalog(kedro_project).save("resnet50.model", fake_checkpoint("resnet50"))
    return kedro_project


def _folder(root: Path) -> Path:
    folder = root / "new_faces"
    for i, path in zip((2, 10, 1), write_images(folder, 3, prefix="tmp"), strict=True):
        path.rename(folder / f"{i}.jpg")
    write_images(folder / "more", 1, prefix="3")  # nested: more/30.jpg
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return folder


def test_predict_scores_a_folder_and_lists_unreadable_files(project_with_model: Path) -> None:
    folder = _folder(project_with_model)
    out = run_predict(project_with_model, input_path=str(folder))

    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == ["path", "p_fake", "label"]
    assert sorted(Path(p).name for p in predictions["path"]) == [
        "1.jpg",
        "10.jpg",
        "2.jpg",
        "30.jpg",
    ]
    assert predictions["p_fake"].between(0, 1).all()
    assert (predictions["label"] == (predictions["p_fake"] > 0.5).astype(int)).all()

    rejected = pd.read_csv(out / "predict_rejected.csv")
    assert sorted(Path(p).name for p in rejected["path"]) == ["broken.jpg", "empty.png"]
    assert (
        dict(zip(rejected["path"].map(lambda p: Path(p).name), rejected["reason"], strict=True))[
            "empty.png"
        ]
        == "zero bytes"
    )

    lines = (out / "submission.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["1", "2", "10", "30"]  # no header, by ID
    labels = dict(
        zip(predictions["path"].map(lambda p: Path(p).stem), predictions["label"], strict=True)
    )
    assert all(
        line == f"{i},{labels[i]}" for i, line in zip(("1", "2", "10", "30"), lines, strict=True)
    )


def test_predict_reads_a_list_file(project_with_model: Path) -> None:
    folder = _folder(project_with_model)
    listing = project_with_model / "to_score.txt"
    listing.write_text("new_faces/10.jpg\nnew_faces/broken.jpg\n")
    out = run_predict(project_with_model, input_path=str(listing))
    assert pd.read_csv(out / "predictions.csv")["path"].tolist() == [str(folder / "10.jpg")]
    assert len(pd.read_csv(out / "predict_rejected.csv")) == 1


def test_predict_without_input_path_names_the_parameter(project_with_model: Path) -> None:
    with pytest.raises(ValueError, match="predict.input_path is not set"):
        run_predict(project_with_model)
    with pytest.raises(FileNotFoundError, match="predict.input_path: .*does not exist"):
        run_predict(project_with_model, input_path="/no/such/folder")


def test_a_checkpoint_that_does_not_fit_names_the_dataset_and_the_fix(kedro_project: Path) -> None:
    """A checkpoint of another variant, or a bare state dict, saved as resnet50.model."""
    load_catalog(kedro_project).save(
        "resnet50.model", fake_checkpoint("se_resnet50", namespace="resnet50")
    )
    folder = _folder(kedro_project)
    with pytest.raises(ValueError) as err:
        run_predict(kedro_project, input_path=str(folder))
    assert str(err.value).startswith(
        "resnet50.model (data/06_models/resnet50/model.pt, latest version): a checkpoint from "
        "another variant: it holds 'se_resnet50', expected 'resnet50'; to score with it, save it "
        "as the se_resnet50 run's checkpoint and run with --namespaces se_resnet50"
    )
    bare = fake_checkpoint("resnet50")["state_dict"]  # a newer version: a plain state dict
    load_catalog(kedro_project).save("resnet50.model", bare)
    with pytest.raises(ValueError, match=r"^resnet50.model \(.*\): not a facescan checkpoint but"):
        run_predict(kedro_project, input_path=str(folder))


def test_predict_decodes_as_the_training_images_were(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13: the checkpoint records max_size and background; predict reuses them."""
    import logging

    from facescan.pipelines.predict.nodes import _decoding

    ckpt = {"preprocess": {"max_size": 512, "background": [0, 0, 0]}}
    with caplog.at_level(logging.WARNING, logger="facescan"):
        assert _decoding(ckpt, {"max_size": 1024}, [255, 255, 255], "vit") == (512, (0, 0, 0))
    assert "preprocess.max_size is 1024 but vit was trained on images decoded with 512" in (
        caplog.text
    )
    assert "data.background is [255, 255, 255]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facescan"):  # an older checkpoint: today's
        assert _decoding({}, {"max_size": 1024}, [1, 2, 3], "vit") == (1024, (1, 2, 3))
    assert caplog.text == ""


def test_predict_decides_with_the_threshold_stored_in_the_checkpoint(
    kedro_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: predict.threshold: val (the default) reads the checkpoint's tuned threshold."""
    import logging

    from facescan.evaluation.scoring import checkpoint_threshold

    folder = _folder(kedro_project)

    def save(checkpoint: dict) -> None:  # a new catalog, a new version
        load_catalog(kedro_project).save("resnet50.model", checkpoint)

    save({**fake_checkpoint("resnet50"), "val_threshold": 0.0})
    labels = pd.read_csv(run_predict(kedro_project, input_path=str(folder)) / "predictions.csv")
    assert (labels["label"] == 1).all()  # every p_fake > 0.0: all called fake
    save({**fake_checkpoint("resnet50"), "val_threshold": 1.0})
    labels = pd.read_csv(run_predict(kedro_project, input_path=str(folder)) / "predictions.csv")
    assert (labels["label"] == 0).all()
    # A number still overrides; a checkpoint without a threshold decides at 0.5, with a warning.
    out = run_predict(kedro_project, input_path=str(folder), threshold=1e-9)
    assert (pd.read_csv(out / "predictions.csv")["label"] == 1).all()
    save(fake_checkpoint("resnet50"))
    labels = pd.read_csv(run_predict(kedro_project, input_path=str(folder)) / "predictions.csv")
    assert (labels["label"] == (labels["p_fake"] > 0.5)).all()
    logger = logging.getLogger("facescan")  # after a Kedro session: it may not propagate
    logger.addHandler(caplog.handler)
    try:
        assert checkpoint_threshold(fake_checkpoint("resnet50"), "resnet50.model") == 0.5
    finally:
        logger.removeHandler(caplog.handler)
    assert "resnet50.model holds no validation-tuned threshold" in caplog.text


def test_predict_explain_writes_one_map_per_image_and_nothing_when_off(
    project_with_model: Path,
) -> None:
    """Issue 15: predict.explain writes heat-map PNGs next to predictions.csv, bounded."""
    folder = _folder(project_with_model)
    out = run_predict(project_with_model, input_path=str(folder))
    assert not (out / "explanations").exists() or not any((out / "explanations").iterdir())
    out = run_predict(project_with_model, input_path=str(folder), explain=True, explain_max=3)
    pngs = sorted((out / "explanations").glob("*.png"))
    scored = pd.read_csv(out / "predictions.csv").sort_values("path")
    assert [p.stem for p in pngs] == sorted(Path(p).stem for p in scored["path"].head(3))
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
