"""Decoding any supported image file to an 8-bit RGB :class:`PIL.Image.Image`.

One function, :func:`open_rgb`, is the only way facescan reads pixels from a user's file, so
ingestion (which checks every file) and preprocessing (which caches them) agree on what an image is:
EXIF orientation applied, every mode converted to RGB the same way, and every failure reported as an
:class:`ImageDecodeError` with a short reason instead of a traceback from inside Pillow.

Only Pillow's JPEG, PNG, WebP and BMP decoders are ever reached (:data:`DECODED_FORMATS`), whatever
the file's extension says: any other content (GIF, TIFF, EPS, which would run Ghostscript, ...) is
refused as ``unsupported format`` before its plugin parses it. Files are read from their handle,
never whole into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DECODED_FORMATS",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_ASPECT_RATIO",
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

#: The only Pillow decoders :func:`open_rgb` and :func:`inspect_image` let ``Image.open`` try, in
#: this order. The content decides, not the extension: a PNG named ``.jpg`` is read as a PNG.
DECODED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP")
# What Image.open may report for them: Pillow's JPEG opener turns a multi-picture JPEG (phones,
# stereo cameras) into an "MPO" whose first frame is read by the same JPEG decoder.
_RESULT_FORMATS = frozenset({*DECODED_FORMATS, "MPO"})
_FORMAT_NAMES = "JPEG, PNG, WebP and BMP"

#: Largest accepted ratio of the longer to the shorter side (after EXIF orientation, the same either
#: way). Beyond it an image is a strip, not a face picture, and resizing its shorter side to the
#: cache size under ``preprocess.max_size`` would leave almost nothing (34x40000 gives 0 px).
#: Ingestion rejects such files as ``extreme aspect ratio``; ``predict`` skips them.
MAX_ASPECT_RATIO = 10

#: Default of ``data.max_file_bytes``: larger files are rejected by ingestion before being read.
DEFAULT_MAX_FILE_BYTES = 50_000_000

# Hashing buffer: the file is hashed in pieces of this size (never held whole in memory).
_CHUNK_BYTES = 1 << 20

# Modes whose samples are wider than 8 bits; Pillow's convert() clips them to 0..255 instead of
# scaling, which would turn a 16-bit grayscale photo almost white.
_WIDE_INT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image.

    Attributes:
        path: the file.
        reason: a short, stable description such as ``"truncated file"``, ``"not an image"``,
            ``"unsupported format"``, ``"decompression bomb"``, ``"extreme aspect ratio"``,
            ``"too large"``, ``"zero bytes"`` or ``"unsupported mode"``; ingestion reports it in
            ``rejected_images`` and counts files per reason.
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
    max_aspect_ratio: float | None = None,
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
        max_aspect_ratio: when given, an image whose longer side is more than this many times its
            shorter side is refused (``extreme aspect ratio``) before its pixels are decoded; e.g.
            :data:`MAX_ASPECT_RATIO`. None accepts any shape.

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
            rgb, _, _ = _decode(fp, path, background, draft_size, max_aspect_ratio)
    except PermissionError as err:
        raise ImageDecodeError(path, "unreadable file", str(err)) from err
    return rgb


def inspect_image(
    path: str | Path,
    background: tuple[int, int, int] = (255, 255, 255),
    *,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> tuple[ImageInfo, Image.Image]:
    """Check a file: hash its bytes and decode it fully, as :func:`open_rgb` would.

    The file is hashed in chunks and decoded from its handle: memory does not grow with its size,
    and a file above ``max_file_bytes`` is refused from its size alone, before any byte is read.

    Args:
        path: the image file; it is only read.
        background: RGB colour under transparent pixels.
        max_file_bytes: largest accepted file size in bytes (``data.max_file_bytes``); None = no
            cap. A larger file raises ``too large``.
        max_aspect_ratio: see :func:`open_rgb` (default :data:`MAX_ASPECT_RATIO`).

    Returns:
        The file's :class:`ImageInfo` and its decoded RGB image.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file is not a usable image; ``.reason`` says why.
    """
    path = Path(path)
    background = check_background(background)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        _check_size(path, path.stat().st_size, max_file_bytes)  # before opening it
        with path.open("rb") as fp:
            digest, size = _hash(fp, max_file_bytes)
            _check_size(path, size, max_file_bytes)
            fp.seek(0)
            rgb, fmt, mode = _decode(fp, path, background, None, max_aspect_ratio)
    except (ImageDecodeError, FileNotFoundError):
        raise
    except OSError as err:  # open, stat, read or seek failed: permissions, I/O error
        raise ImageDecodeError(path, "unreadable file", str(err)) from err
    info = ImageInfo(
        width=rgb.width,
        height=rgb.height,
        format=fmt,
        mode=mode,
        bytes=size,
        sha256=digest,
    )
    return info, rgb


def _check_size(path: Path, size: int, max_file_bytes: int | None) -> None:
    if size == 0:
        raise ImageDecodeError(path, "zero bytes")
    if max_file_bytes is not None and size > max_file_bytes:
        raise ImageDecodeError(
            path, "too large", f"{size} bytes > data.max_file_bytes = {max_file_bytes}"
        )


def _hash(fp: BinaryIO, max_file_bytes: int | None) -> tuple[str, int]:
    """SHA-256 hex digest and size of an open file, read in chunks (stops past the cap)."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    while n := fp.readinto(buffer):
        digest.update(view[:n])
        size += n
        if max_file_bytes is not None and size > max_file_bytes:  # grew while being read
            break
    return digest.hexdigest(), size


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
    max_aspect_ratio: float | None = None,
) -> tuple[Image.Image, str, str]:
    """Decode an open file to RGB; return (image, format, original mode)."""
    try:
        with _bomb_warning_as_error():
            img = Image.open(fp, formats=DECODED_FORMATS)
        fmt = img.format or "unknown"
        if fmt not in _RESULT_FORMATS:  # defensive: Image.open was only given the four
            raise ImageDecodeError(path, "unsupported format", _unsupported(fmt))
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and img.width * img.height > limit:
            raise ImageDecodeError(
                path, "decompression bomb", f"{img.width}x{img.height} > {limit} pixels"
            )
        short, long = sorted(img.size)
        if max_aspect_ratio is not None and (short < 1 or long > max_aspect_ratio * short):
            raise ImageDecodeError(
                path,
                "extreme aspect ratio",
                f"{img.width}x{img.height}, longer side > {max_aspect_ratio:g} x shorter side",
            )
        mode = img.mode
        if draft_size is not None and fmt == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(path, "decompression bomb", str(err)) from err
    except UnidentifiedImageError as err:
        other = _other_format(fp)
        if other is not None:
            raise ImageDecodeError(path, "unsupported format", _unsupported(other)) from err
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


def _unsupported(fmt: str) -> str:
    return f"{fmt} content; only {_FORMAT_NAMES} files are decoded, convert it to one of them"


def _other_format(fp: BinaryIO) -> str | None:
    """The format another Pillow plugin claims from the file's first bytes, without opening it.

    Only the plugins' signature checks (``accept``, a comparison of a few bytes) run: no other
    decoder parses the file. None when nothing claims it (then it is not an image at all).
    """
    try:
        fp.seek(0)
        prefix = fp.read(16)
    except (OSError, ValueError):
        return None
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        if fmt in _RESULT_FORMATS or accept is None:
            continue
        with contextlib.suppress(Exception):
            if accept(prefix):
                return fmt
    return None


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
