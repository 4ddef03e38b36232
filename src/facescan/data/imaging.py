"""Decoding any supported image file to an 8-bit RGB :class:`PIL.Image.Image`.

One function, :func:`open_rgb`, is the only way facescan reads pixels from a user's file, so
ingestion (which checks every file) and preprocessing (which caches them) agree on what an image is:
EXIF orientation applied, every mode converted to RGB the same way, and every failure reported as an
:class:`ImageDecodeError` with a short reason instead of a traceback from inside Pillow.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageDecodeError",
    "ImageInfo",
    "check_background",
    "inspect_image",
    "is_supported",
    "open_rgb",
]

#: File extensions facescan reads (compare with ``Path(p).suffix.lower()``).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

# Modes whose samples are wider than 8 bits; Pillow's convert() clips them to 0..255 instead of
# scaling, which would turn a 16-bit grayscale photo almost white.
_WIDE_INT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image.

    Attributes:
        path: the file.
        reason: a short, stable description such as ``"truncated file"``, ``"not an image"``,
            ``"decompression bomb"``, ``"zero bytes"`` or ``"unsupported mode"``; ingestion reports
            it in ``rejected_images`` and counts files per reason.
        detail: what Pillow said, when it said something useful.
    """

    def __init__(self, path: str | Path, reason: str, detail: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self):  # keeps the exception picklable across process pools
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class ImageInfo:
    """What ingestion records about one decoded file.

    Attributes:
        width: width after EXIF orientation.
        height: height after EXIF orientation.
        format: Pillow's format name (``"JPEG"``, ``"PNG"``, ...).
        mode: the file's original Pillow mode (``"L"``, ``"P"``, ``"RGBA"``, ``"I;16"``, ...).
        bytes: file size.
        sha256: hex digest of the file's bytes.
    """

    width: int
    height: int
    format: str
    mode: str
    bytes: int
    sha256: str


def is_supported(path: str | Path) -> bool:
    """True when the file's extension (any case) is one of :data:`SUPPORTED_EXTENSIONS`."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def check_background(background: Sequence[int], name: str = "background") -> tuple[int, int, int]:
    """Validate an RGB colour given as three integers in 0..255.

    Args:
        background: the colour.
        name: the parameter name used in the error message.

    Returns:
        The colour as a tuple.

    Raises:
        ValueError: naming ``name`` when the colour is not three integers in 0..255.
    """
    try:
        values = tuple(background)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= v <= 255
        for v in values
    ):
        raise ValueError(
            f"{name} must be three integers in 0..255 (an RGB colour), got {background!r}"
        )
    return (int(values[0]), int(values[1]), int(values[2]))


def open_rgb(
    path: str | Path,
    background: tuple[int, int, int] = (255, 255, 255),
    draft_size: int | None = None,
) -> Image.Image:
    """Open an image file as a fully decoded 8-bit RGB image.

    EXIF orientation is applied; grayscale, palette (transparency included), RGBA/LA (composited
    on ``background``), CMYK and 16-bit modes are converted to RGB. Pillow's decompression-bomb
    limit (``Image.MAX_IMAGE_PIXELS``) is kept, and its warning level is treated as an error too.

    Args:
        path: the image file; it is only read.
        background: RGB colour under transparent pixels.
        draft_size: when given, a JPEG is decoded at the largest reduced scale (1/2, 1/4, 1/8) whose
            shorter side is still at least ``draft_size`` pixels, which is several times faster on
            large photos that will be downscaled anyway. Other formats ignore it.

    Returns:
        The decoded RGB image (loaded; the file is closed).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file is not a usable image; ``.reason`` says why.
        ValueError: ``background`` or ``draft_size`` is invalid.
    """
    path = Path(path)
    background = check_background(background)
    if draft_size is not None and (
        isinstance(draft_size, bool) or not isinstance(draft_size, int) or draft_size < 1
    ):
        raise ValueError(f"draft_size must be a positive integer or None, got {draft_size!r}")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageDecodeError(path, "unreadable file", str(err)) from err
    if size == 0:
        raise ImageDecodeError(path, "zero bytes")
    try:
        with path.open("rb") as fp:
            rgb, _, _ = _decode(fp, path, background, draft_size)
    except PermissionError as err:
        raise ImageDecodeError(path, "unreadable file", str(err)) from err
    return rgb


def inspect_image(
    path: str | Path, background: tuple[int, int, int] = (255, 255, 255)
) -> tuple[ImageInfo, Image.Image]:
    """Read a file once: hash its bytes and decode it fully, as :func:`open_rgb` would.

    Args:
        path: the image file; it is only read.
        background: RGB colour under transparent pixels.

    Returns:
        The file's :class:`ImageInfo` and its decoded RGB image.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file is not a usable image; ``.reason`` says why.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageDecodeError(path, "unreadable file", str(err)) from err
    if not data:
        raise ImageDecodeError(path, "zero bytes")
    rgb, fmt, mode = _decode(io.BytesIO(data), path, check_background(background), None)
    info = ImageInfo(
        width=rgb.width,
        height=rgb.height,
        format=fmt,
        mode=mode,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return info, rgb


@contextlib.contextmanager
def _bomb_warning_as_error() -> Iterator[None]:
    """Turn Pillow's DecompressionBombWarning into an exception (main thread only).

    Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises above; both are bombs here.
    The warnings filter list is process-wide and ``catch_warnings`` is not thread-safe, so worker
    threads leave it alone (their caller may set it once for all of them) and rely on the explicit
    pixel check in :func:`_decode`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _decode(
    fp: BinaryIO,
    path: Path,
    background: tuple[int, int, int],
    draft_size: int | None,
) -> tuple[Image.Image, str, str]:
    """Decode an open file to RGB; return (image, format, original mode)."""
    try:
        with _bomb_warning_as_error():
            img = Image.open(fp)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and img.width * img.height > limit:
            raise ImageDecodeError(
                path, "decompression bomb", f"{img.width}x{img.height} > {limit} pixels"
            )
        fmt = img.format or "unknown"
        mode = img.mode
        if draft_size is not None and fmt == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(path, "decompression bomb", str(err)) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(path, "not an image") from err
    except OSError as err:
        text = str(err)
        reason = (
            "truncated file" if "truncated" in text or "not enough data" in text else "corrupt file"
        )
        raise ImageDecodeError(path, reason, text) from err
    except Exception as err:  # Pillow plugins raise SyntaxError, struct.error, EOFError, ...
        raise ImageDecodeError(path, "corrupt file", f"{type(err).__name__}: {err}") from err
    # A malformed EXIF block must not cost the pixels: keep them unrotated (consistently, since
    # every reader goes through this function).
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img, path, background), fmt, mode


def _to_rgb(img: Image.Image, path: Path, background: tuple[int, int, int]) -> Image.Image:
    """Convert any decoded mode to RGB (alpha composited on ``background``)."""
    try:
        if img.mode in _WIDE_INT_MODES:
            # Scale 0..65535 to 0..255 (x / 257, rounded) instead of clipping like convert("L").
            wide = np.asarray(img).astype(np.float64)
            grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
            return Image.fromarray(grey).convert("RGB")
        has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
        if has_alpha:
            rgba = img.convert("RGBA")
            out = Image.new("RGB", rgba.size, background)
            out.paste(rgba, mask=rgba.getchannel("A"))
            return out
        return img if img.mode == "RGB" else img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageDecodeError(path, "unsupported mode", f"{img.mode}: {err}") from err
