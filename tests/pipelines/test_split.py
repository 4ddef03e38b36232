"""The split node: ratios, stratification, determinism, no leakage, clear errors."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from facescan.pipelines.split.nodes import split_images

PARAMS = {"test_size": 0.2, "val_size": 0.1, "seed": 42}


def _manifest(n_real: int, n_fake: int) -> pd.DataFrame:
    rows = []
    for label, n in ((0, n_real), (1, n_fake)):
        for i in range(n):
            name = f"{'real' if label == 0 else 'fake'}/{i:04d}.jpg"
            rows.append(
                {
                    "path": f"/data/{name}",
                    "label": label,
                    "source": "folder",
                    "width": 64,
                    "height": 64,
                    "sha256": hashlib.sha256(name.encode()).hexdigest(),
                }
            )
    return pd.DataFrame(rows)


def _counts(split: pd.DataFrame) -> dict[tuple[str, int], int]:
    return split.groupby(["split", "label"]).size().to_dict()


def test_split_ratios_and_stratification() -> None:
    out = split_images(_manifest(600, 200), PARAMS)
    # 800 -> test 160 (8:2), then 640 -> val 64 (9:1); each part keeps the 3:1 class ratio.
    assert _counts(out) == {
        ("test", 0): 120,
        ("test", 1): 40,
        ("val", 0): 48,
        ("val", 1): 16,
        ("train", 0): 432,
        ("train", 1): 144,
    }
    assert list(out.columns[:4]) == ["path", "label", "split", "sha256"]
    assert {"source", "width", "height"} <= set(out.columns)
    assert out["label"].dtype == "int64"
    assert out["split"].tolist() == sorted(out["split"], key=["train", "val", "test"].index)


def test_split_is_independent_of_row_order_and_follows_the_seed() -> None:
    manifest = _manifest(90, 30)
    a = split_images(manifest, PARAMS)
    shuffled = manifest.sample(frac=1.0, random_state=7).reset_index(drop=True)
    b = split_images(shuffled, PARAMS)
    pd.testing.assert_frame_equal(a, b)
    c = split_images(manifest, {**PARAMS, "seed": 43})
    assert not a["split"].equals(c.set_index("path").loc[a["path"], "split"].reset_index(drop=True))


def test_identical_content_never_spans_two_splits() -> None:
    manifest = _manifest(60, 20)
    # Three extra files with the content of existing ones (a hand-made manifest could have them).
    copies = manifest.iloc[[0, 5, 70]].assign(
        path=lambda d: d["path"].str.replace(".jpg", "_copy.jpg")
    )
    out = split_images(pd.concat([manifest, copies], ignore_index=True), PARAMS)
    assert len(out) == 83
    assert (out.groupby("sha256")["split"].nunique() == 1).all()


def test_same_content_under_two_labels_is_an_error() -> None:
    manifest = _manifest(20, 20)
    manifest.loc[0, "sha256"] = manifest.loc[30, "sha256"]
    with pytest.raises(ValueError, match=r"same content under two labels.*real/0000\.jpg"):
        split_images(manifest, PARAMS)


@pytest.mark.parametrize(
    ("n_real", "n_fake", "param"),
    [
        (100, 1, "split.test_size"),  # sklearn cannot stratify a class of one
        (100, 2, "split.test_size"),  # two fakes cannot fill train, val and test
    ],
)
def test_a_class_too_small_to_stratify_is_a_clear_error(
    n_real: int, n_fake: int, param: str
) -> None:
    with pytest.raises(ValueError, match=rf"{param}.*\{{0: {n_real}, 1: {n_fake}\}}"):
        split_images(_manifest(n_real, n_fake), PARAMS)


def test_a_small_validation_class_names_val_size() -> None:
    # 100/4: test takes one fake; three remain for train+val, and val_size=0.01 of 84 images
    # is one image, which cannot hold both classes.
    with pytest.raises(ValueError, match=r"split\.val_size=0\.01"):
        split_images(_manifest(100, 4), {**PARAMS, "val_size": 0.01})


@pytest.mark.parametrize(
    ("manifest", "params", "message"),
    [
        (_manifest(10, 10).drop(columns="sha256"), PARAMS, r"lacks column\(s\) \['sha256'\]"),
        (_manifest(0, 0).reindex(columns=["path", "label", "sha256"]), PARAMS, "no images"),
        (_manifest(20, 0), PARAMS, "one class only"),
        (_manifest(10, 10).assign(label="fake"), PARAMS, "image_manifest.label"),
        (_manifest(10, 10).assign(label=2), PARAMS, r"label must be 0 \(real\) or 1 .*real/0000"),
        (_manifest(10, 10).assign(sha256=None), PARAMS, "image_manifest.sha256 is empty"),
        (_manifest(10, 10), {**PARAMS, "test_size": 1.5}, "split.test_size"),
        (_manifest(10, 10), {**PARAMS, "val_size": None}, "split.val_size"),
        (_manifest(10, 10), {**PARAMS, "seed": "x"}, "split.seed"),
    ],
)
def test_bad_input_is_named(manifest: pd.DataFrame, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_images(manifest, params)
