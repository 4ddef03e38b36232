"""Hardening of the data layer: decoders allowed, image geometry, the synthetic stamp, file size."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import EpsImagePlugin, Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from facescan.data import preprocess
from facescan.data.imaging import (
    MAX_ASPECT_RATIO,
    ImageDecodeError,
    inspect_image,
    open_rgb,
)
from facescan.data.preprocess import fit_to_cache, load_for_cache, stream_images
from facescan.data.sources import Candidate
from facescan.data.synthetic import SyntheticSpec, generate_synthetic
from facescan.data.validate import check_candidates
from facescan.pipelines.ingestion.nodes import ingest_images

REPO = Path(__file__).resolve().parents[2]

_EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 40 40
%%EndComments
newpath 0 0 moveto 40 0 lineto 40 40 lineto closepath fill
showpage
%%EOF
"""


def _noise(path: Path, size: tuple[int, int] = (48, 48), seed: int = 0, **save) -> Path:
    """A random RGB image (unique content per seed) saved at ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, **save)
    return path


def _reasons(rejected) -> dict[str, str]:
    return {Path(p).name: r for p, r in zip(rejected["path"], rejected["reason"], strict=True)}


# ------------------------------------------------------------- 4: only four decoders are reachable


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "x.jpg"), ("TIFF", "x.png"), ("PPM", "x.bmp")])
def test_other_formats_are_refused_whatever_the_extension(
    tmp_path: Path, fmt: str, name: str
) -> None:
    path = _noise(tmp_path / name, format=fmt)
    for read in (open_rgb, inspect_image):
        with pytest.raises(ImageDecodeError) as err:
            read(path)
        assert err.value.reason == "unsupported format"
        assert fmt in str(err.value) and name in str(err.value)


def test_eps_never_reaches_its_decoder_or_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def spy_open(self) -> None:
        calls.append("EpsImageFile._open")
        raise SyntaxError("not expected to be called")

    def spy_gs(*args, **kwargs):
        calls.append("Ghostscript")
        raise OSError("not expected to be called")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy_gs)
    path = tmp_path / "face.jpg"
    path.write_bytes(_EPS)
    for read in (open_rgb, inspect_image):
        with pytest.raises(ImageDecodeError) as err:
            read(path)
        assert calls == []  # the EPS plugin never parsed the file
        assert err.value.reason == "unsupported format" and "EPS" in str(err.value)


def test_the_four_formats_decode_whatever_the_extension(tmp_path: Path) -> None:
    for fmt, name in [("PNG", "a.jpg"), ("JPEG", "b.png"), ("WEBP", "c.bmp"), ("BMP", "d.webp")]:
        info, img = inspect_image(_noise(tmp_path / name, format=fmt))
        assert info.format == fmt and img.size == (48, 48)


def test_ingestion_rejects_an_unsupported_format_with_its_reason(tmp_path: Path) -> None:
    good = [_noise(tmp_path / "real" / f"{i}.png", seed=i) for i in range(2)]
    gif = _noise(tmp_path / "real" / "anim.jpg", seed=9, format="GIF")
    cands = [Candidate(p, 0) for p in [*good, gif]]
    manifest, rejected = check_candidates(cands, "folder", 32, workers=1, progress=False)
    assert len(manifest) == 2
    assert _reasons(rejected) == {"anim.jpg": "unsupported format"}


# ------------------------------------------------------------------ 5: extreme aspect ratios


def test_extreme_aspect_ratio_is_rejected_at_ingestion(tmp_path: Path) -> None:
    thin = _noise(tmp_path / "real" / "thin.png", size=(34, 40000))
    wide = _noise(tmp_path / "real" / "wide.png", size=(4000, 34), seed=1)
    at_limit = _noise(tmp_path / "real" / "limit.png", size=(40, 40 * MAX_ASPECT_RATIO), seed=2)
    cands = [Candidate(p, 0) for p in (thin, wide, at_limit)]
    manifest, rejected = check_candidates(cands, "folder", 32, workers=1, progress=False)
    assert [Path(p).name for p in manifest["path"]] == ["limit.png"]
    assert _reasons(rejected) == {
        "thin.png": "extreme aspect ratio",
        "wide.png": "extreme aspect ratio",
    }


def test_aspect_ratio_limit_is_ten() -> None:
    assert MAX_ASPECT_RATIO == 10


@pytest.mark.parametrize(
    ("size", "cache_size", "max_size"),
    [((34, 40000), 56, 1024), ((40000, 34), 56, 1024), ((4, 40), 4, 5), ((1, 3000), 256, 1024)],
)
def test_fit_to_cache_never_computes_an_empty_side(
    size: tuple[int, int], cache_size: int, max_size: int
) -> None:
    out = fit_to_cache(Image.new("RGB", size, (10, 20, 30)), cache_size, max_size)
    assert out.shape == (3, cache_size, cache_size) and out.dtype == np.uint8


@pytest.mark.parametrize("size", [(48, 48), (60, 40), (40, 400), (3000, 500), (57, 56)])
def test_fit_to_cache_is_torchvision_resize_and_crop_for_usable_images(
    size: tuple[int, int],
) -> None:
    img = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    )
    expected = F.center_crop(
        F.resize(img, [48], interpolation=InterpolationMode.BILINEAR, max_size=500), [48, 48]
    )
    got = fit_to_cache(img, 48, 500)
    assert np.array_equal(got, np.asarray(expected).transpose(2, 0, 1))


def test_stream_images_errors_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _noise(tmp_path / "a.png")

    def broken(*args, **kwargs):
        raise RuntimeError("resize failed")

    monkeypatch.setattr(preprocess, "fit_to_cache", broken)
    with pytest.raises(ValueError) as err:
        list(stream_images([str(path)], 40, 1024, threads=1))
    assert str(path) in str(err.value) and "resize failed" in str(err.value)


def test_load_for_cache_can_refuse_extreme_aspect_ratios(tmp_path: Path) -> None:
    thin = _noise(tmp_path / "thin.png", size=(34, 4000))
    assert load_for_cache(thin, 40, 1024).shape == (3, 40, 40)  # preprocess: no check, no crash
    with pytest.raises(ImageDecodeError) as err:
        load_for_cache(thin, 40, 1024, max_aspect_ratio=MAX_ASPECT_RATIO)
    assert err.value.reason == "extreme aspect ratio" and "thin.png" in str(err.value)


# ------------------------------------------------------------------ 6: the synthetic stamp


def _spec(n: int) -> SyntheticSpec:
    return SyntheticSpec(n_images=n, seed=1, size=16, difficulty=0.5)


def _tamper(root: Path, files: list[str]) -> None:
    stamp_path = root / ".facescan_synthetic.json"
    stamp = json.loads(stamp_path.read_text())
    stamp["files"] = stamp["files"] + files
    stamp_path.write_text(json.dumps(stamp))


def test_stamp_names_outside_the_generated_pattern_are_never_removed(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    generate_synthetic(root, _spec(4), progress=False)
    outside = tmp_path / "victim.jpg"
    outside.write_bytes(b"keep me")
    mine = root / "real" / "mine.jpg"
    mine.write_bytes(b"keep me too")
    notes = root / "notes" / "00001.jpg"
    notes.parent.mkdir()
    notes.write_bytes(b"and me")
    (root / "real" / "sub").mkdir()
    nested = root / "real" / "sub" / "00001.jpg"
    nested.write_bytes(b"and me")
    short = root / "fake" / "007.jpg"
    short.write_bytes(b"and me")
    _tamper(
        root,
        [
            str(outside),  # an absolute path
            "real/mine.jpg",
            "notes/00001.jpg",
            "real/sub/00001.jpg",
            "fake/007.jpg",
            f"real/{outside}",  # absolute after the class folder
            "real//" + str(outside).lstrip("/"),
        ],
    )
    generate_synthetic(root, _spec(2), progress=False)  # a new spec: stale files are removed
    assert outside.read_bytes() == b"keep me" and mine.read_bytes() == b"keep me too"
    assert all(p.read_bytes() == b"and me" for p in (notes, nested, short))
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("0*.jpg")) == [
        "fake/00000.jpg",
        "fake/007.jpg",
        "notes/00001.jpg",
        "real/00000.jpg",
        "real/sub/00001.jpg",
    ]
    stamp = json.loads((root / ".facescan_synthetic.json").read_text())
    assert stamp["files"] == ["real/00000.jpg", "fake/00000.jpg"]


def test_stale_files_are_not_removed_through_a_symlinked_class_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "synthetic"
    generate_synthetic(root, _spec(6), progress=False)  # fake/00000..00002
    elsewhere = tmp_path / "elsewhere"
    (root / "fake").rename(elsewhere)
    (root / "fake").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="facescan.data.synthetic"):
        generate_synthetic(root, _spec(2), progress=False)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert "fake/00001.jpg" in caplog.text


def test_stale_generated_files_are_still_removed(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    generate_synthetic(root, _spec(6), progress=False)
    generate_synthetic(root, _spec(2), progress=False)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == [
        "fake/00000.jpg",
        "real/00000.jpg",
    ]


# ---------------------------------------------------- 8: streaming reads and data.max_file_bytes


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_a_file_above_the_default_cap_is_rejected_without_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [_noise(tmp_path / "real" / f"{i}.png", seed=i) for i in range(2)]
    big = _sparse(tmp_path / "real" / "huge.jpg", 50_000_001)
    reads: list[str] = []
    real_open = Path.open

    def spy_open(self, *args, **kwargs):
        if self.name == "huge.jpg":
            reads.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read whole: {self}"))
    cands = [Candidate(p, 0) for p in [*good, big]]
    manifest, rejected = check_candidates(cands, "folder", 32, workers=1, progress=False)
    assert len(manifest) == 2
    reason = _reasons(rejected)["huge.jpg"]
    assert reason.startswith("too large") and "50000001" in reason
    assert "data.max_file_bytes" in reason and "50000000" in reason
    assert reads == []


def test_max_file_bytes_is_a_keyword_and_null_means_no_cap(tmp_path: Path) -> None:
    path = _noise(tmp_path / "real" / "a.png")
    size = path.stat().st_size
    cands = [Candidate(path, 0)]
    _, rejected = check_candidates(
        cands, "folder", 32, workers=1, progress=False, max_file_bytes=size - 1
    )
    assert rejected["reason"].tolist() == [
        f"too large ({size} bytes > data.max_file_bytes = {size - 1})"
    ]
    manifest, _ = check_candidates(
        cands, "folder", 32, workers=1, progress=False, max_file_bytes=size
    )
    assert len(manifest) == 1
    big = _sparse(tmp_path / "real" / "zeros.jpg", 60_000_000)
    _, rejected = check_candidates(
        [Candidate(big, 0)], "folder", 32, workers=1, progress=False, max_file_bytes=None
    )
    assert rejected["reason"].tolist() == ["not an image"]  # read, and found not to be an image


@pytest.mark.parametrize("value", [0, -5, 1.5, "50MB", True])
def test_a_bad_max_file_bytes_names_the_parameter(tmp_path: Path, value: object) -> None:
    path = _noise(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"^data\.max_file_bytes .*null"):
        check_candidates([Candidate(path, 0)], "folder", 32, progress=False, max_file_bytes=value)


def test_hashing_and_decoding_stream_the_file(tmp_path: Path) -> None:
    """Peak Python memory while checking a 30 MB file stays far below its size."""
    big = _sparse(tmp_path / "zeros.jpg", 30_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError) as err:
            inspect_image(big)  # below the default cap of 50 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "not an image"
    assert peak < 8_000_000


def test_the_node_reads_data_max_file_bytes(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for i, label in enumerate(("real", "fake", "real", "fake")):
        _noise(root / label / f"{i}.png", seed=i)
    data = {
        "source": {"type": "folder", "path": str(root), "classes": {"real": 0, "fake": 1}},
        "max_file_bytes": 1000,  # every test image is larger
    }
    with pytest.raises(ValueError, match=r"too large.*data\.max_file_bytes"):
        ingest_images(data, {"threads": 1})
    manifest, rejected = ingest_images({**data, "max_file_bytes": None}, {"threads": 1})
    assert len(manifest) == 4 and rejected.empty


def test_the_default_cap_is_in_the_base_parameters() -> None:
    params = yaml.safe_load((REPO / "conf" / "base" / "parameters_ingestion.yml").read_text())
    assert params["data"]["max_file_bytes"] == 50_000_000
