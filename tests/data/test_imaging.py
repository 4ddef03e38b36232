"""open_rgb / inspect_image: every mode to RGB, EXIF orientation, draft decoding, clear failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facescan.data.imaging import (
    SUPPORTED_EXTENSIONS,
    ImageDecodeError,
    check_background,
    inspect_image,
    is_supported,
    open_rgb,
)


def _jpeg(path: Path, size: tuple[int, int] = (60, 40), colour=(200, 30, 30), **save) -> Path:
    Image.new("RGB", size, colour).save(path, "JPEG", **save)
    return path


def test_supported_extensions_compare_lower_case() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp"} == SUPPORTED_EXTENSIONS
    assert is_supported("A/B.JPG") and is_supported("x.WebP") and not is_supported("x.gif")


def test_rgb_jpeg_roundtrip(tmp_path: Path) -> None:
    img = open_rgb(_jpeg(tmp_path / "a.jpg"))
    assert img.mode == "RGB" and img.size == (60, 40)
    assert np.allclose(np.asarray(img)[20, 30], (200, 30, 30), atol=3)


def test_grayscale_and_palette_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (40, 40), 77).save(tmp_path / "g.png")
    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert np.asarray(open_rgb(tmp_path / "g.png"))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(open_rgb(tmp_path / "p.png"))[0, 0].tolist() == [10, 200, 30]


def test_palette_transparency_and_rgba_composited_on_background(tmp_path: Path) -> None:
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([9, 9, 9] + [0] * 765)
    pal.save(tmp_path / "p.png", transparency=0)
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba.putpixel((2, 2), (255, 0, 0, 128))
    rgba.save(tmp_path / "a.png")
    Image.new("LA", (40, 40), (100, 0)).save(tmp_path / "la.png")

    blue = (0, 0, 255)
    assert open_rgb(tmp_path / "p.png", background=blue).getpixel((0, 0)) == blue
    out = open_rgb(tmp_path / "a.png", background=blue)
    assert out.getpixel((0, 0)) == blue  # fully transparent: the background
    assert out.getpixel((1, 1)) == (255, 0, 0)  # opaque: the pixel
    r, g, b = out.getpixel((2, 2))  # half transparent: a blend
    assert 120 <= r <= 135 and g == 0 and 120 <= b <= 135
    assert open_rgb(tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    info, img = inspect_image(tmp_path / "c.jpg")
    assert info.mode == "CMYK" and img.mode == "RGB"
    r, g, b = img.getpixel((20, 20))
    assert r > 200 and g < 50 and b < 50  # full magenta + yellow = red


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    wide = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(wide).save(tmp_path / "w.png")
    info, img = inspect_image(tmp_path / "w.png")
    assert info.mode.startswith("I")
    assert np.asarray(img)[0, :, 0].tolist() == [0, 100, 255, 128]


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 30), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 30))  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = open_rgb(tmp_path / "r.jpg")
    assert out.size == (30, 60)  # width and height swapped
    top = np.asarray(out)[:10].mean()
    assert top > 200  # the left band is now at the top


def test_draft_decodes_large_jpeg_at_reduced_scale_not_below_request(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "big.jpg", size=(800, 600))
    assert open_rgb(path, draft_size=140).size == (200, 150)  # 1/4: the shorter side 150 >= 140
    assert open_rgb(path, draft_size=160).size == (400, 300)
    assert open_rgb(path).size == (800, 600)


def test_inspect_reports_original_mode_format_bytes_and_hash(tmp_path: Path) -> None:
    Image.new("L", (33, 44), 5).save(tmp_path / "g.png")
    info, img = inspect_image(tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    assert (info.width, info.height, info.format, info.mode) == (33, 44, "PNG", "L")
    assert info.bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert img.mode == "RGB"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("zero.jpg", b"", "zero bytes"),
        ("text.jpg", b"this is not an image at all", "not an image"),
    ],
)
def test_bad_bytes_raise_decode_error_with_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    for read in (open_rgb, inspect_image):
        with pytest.raises(ImageDecodeError) as err:
            read(tmp_path / name)
        assert err.value.reason == reason and name in str(err.value)
        assert isinstance(err.value, ValueError)


def test_truncated_jpeg_and_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # incompressible, so cuts hit data
    for ext in ("jpg", "png"):
        full = tmp_path / f"full.{ext}"
        Image.fromarray(noise).save(full)
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(ImageDecodeError) as err:
            open_rgb(cut)
        assert err.value.reason == "truncated file"


def test_decompression_bomb_both_levels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _jpeg(tmp_path / "b.jpg", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: Pillow's warning level
    with pytest.raises(ImageDecodeError) as err:
        open_rgb(path)
    assert err.value.reason == "decompression bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # above twice the limit: Pillow's error
    with pytest.raises(ImageDecodeError) as err:
        inspect_image(path)
    assert err.value.reason == "decompression bomb"


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        open_rgb(tmp_path / "nope.jpg")
    path = _jpeg(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="background"):
        open_rgb(path, background=(0, 0))
    with pytest.raises(ValueError, match="draft_size"):
        open_rgb(path, draft_size=0)
    with pytest.raises(ValueError, match="data.background"):
        check_background([0, 0, 300], "data.background")


def test_user_file_is_not_modified(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "a.jpg")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    open_rgb(path, draft_size=8)
    inspect_image(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
