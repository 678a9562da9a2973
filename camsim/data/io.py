"""Image decoding: the green channel of camera photos, exact and guarded.

The method works on the green channel of the camera's output (``docs/method.md``,
patches are green-channel uint8). This module is the one place that turns an image file
into those pixels, for every source (folder, EXIF, simulated cameras).

Decisions a user relies on:

* **Green channel.** RGB / RGBA / RGBX: channel 1. Palette (P, PA): looked up through
  the palette first. Grayscale (1, L, LA, I;16, I, F): the single channel. CMYK (and
  YCbCr, LAB, HSV): converted to RGB by Pillow first; Pillow honours the Adobe APP14
  marker, so the inverted CMYK that Photoshop writes into JPEGs comes out right.
* **16 bits are rounded, not truncated:** ``v8 = round(v16 / 257)`` (no ties exist),
  which maps 0 -> 0 and 65535 -> 255 exactly. This holds for 16-bit grayscale and also
  for 16-bit RGB / RGBA PNG and TIFF, which Pillow by itself cuts to their high byte.
  ``I`` (32-bit integer) images must hold values in [0, 65535] and are scaled the same
  way; ``F`` (float) images must hold values in [0, 1] and are scaled by 255 and
  rounded. Anything outside those ranges is refused, never clipped or guessed.
* **No EXIF orientation.** Camera-model traces (CFA interpolation, sensor noise, JPEG
  grid) live on the sensor's pixel grid; rotating to the display orientation would move
  the 2x2 CFA phase and the 8x8 JPEG grid. Pixels are returned as stored in the file.
* **Decompression bombs:** width x height from the file header is checked against
  ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 100 MP: larger than any consumer
  camera's output, 12-50 MP typically, while 100 MP of uint8 RGB is 300 MB) before any
  pixel is decoded — the one limit for every format and decoder: where Pillow's own guard
  (``PIL.Image.MAX_IMAGE_PIXELS``, ~179 MP) refuses a file, camsim opens it again with the
  guard lifted (under a lock), so a ``max_pixels`` above it (the configs' 200 MP) holds for PNG,
  TIFF and the Pillow path too.
* **Bad files** (missing, empty, not an image, corrupt, truncated) raise
  :class:`ImageReadError` naming the file and the reason. Truncation is detected
  because ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (checked per call).
* **JPEG fast path.** 8-bit Huffman JPEGs (baseline, extended, progressive) in YCbCr
  or grayscale are decoded with simplejpeg (libjpeg-turbo through the TurboJPEG API)
  with ``fastdct=False, fastupsample=False``: the accurate integer IDCT and "fancy"
  chroma upsampling, i.e. Pillow's own settings, so the pixels are identical to
  Pillow's (tested on the real photos and on 4:4:4 / 4:2:2 / 4:2:0 files). The
  ``fastdct`` / ``fastupsample`` modes differ from Pillow by several grey levels and are
  never used. Anything else (CMYK / YCCK, 12-bit, lossless, arithmetic, or any file
  simplejpeg rejects, even for a mere libjpeg warning) goes to Pillow, the reference —
  except a warning that pixels were lost (data ending early, junk inside a scan): Pillow
  fills those blocks with grey and reports nothing, so the file is refused
  (``decoder="pillow"`` skips this check).
"""

from __future__ import annotations

import io
import mmap
import re
import struct
import sys
import threading
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
"""Default cap on width x height (100 megapixels), checked from the header before decoding."""

Decoder = Literal["auto", "pillow", "simplejpeg"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOFn markers (frame headers); C4 (DHT), C8 (JPG), CC (DAC) are not frames.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Frames the simplejpeg path is verified to decode exactly like Pillow: Huffman
# baseline (C0), extended sequential (C1) and progressive (C2).
_FAST_SOF = frozenset({0xC0, 0xC1, 0xC2})
_FAST_COLORSPACES = frozenset({"YCbCr", "Gray"})
_NATIVE_16 = "L" if sys.byteorder == "little" else "B"
_RGB_LIKE = ("RGB", "RGBA", "RGBX")


class ImageReadError(ValueError):
    """An image file that cannot be used: ``str(err) == f"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keep path and reason when sent back from a worker process
        return (type(self), (self.path, self.reason))


def error_reason(err: Exception) -> str:
    """Why a file failed, without its name (for a row or a line that names the file already):
    an :class:`ImageReadError`'s reason, any other error's text."""
    return err.reason if isinstance(err, ImageReadError) else str(err)


# ----------------------------------------------------------------------------- public API


def read_green(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *,
               decoder: Decoder = "auto") -> np.ndarray:
    """The image's green channel as uint8 ``[H, W]`` (see the module docstring for the rules).

    ``decoder``: ``"auto"`` (simplejpeg for JPEGs it decodes exactly like Pillow, Pillow
    otherwise), ``"pillow"`` (always the reference decoder) or ``"simplejpeg"`` (the fast
    path only; a file it does not cover raises :class:`ImageReadError`). All three give
    identical pixels wherever they succeed.
    """
    return _read(Path(path), max_pixels, decoder, rgb=False)


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *,
             decoder: Decoder = "auto") -> np.ndarray:
    """The image as uint8 ``[H, W, 3]`` RGB for display (grayscale replicated, alpha dropped).

    Same conversions, 16-bit scaling, guards and errors as :func:`read_green`, whose
    result equals ``read_rgb(path)[..., 1]``.
    """
    return _read(Path(path), max_pixels, decoder, rgb=True)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the file header, without decoding pixels.

    No ``max_pixels`` cap applies (JPEG and PNG headers are parsed directly); other
    formats go through ``PIL.Image.open``, whose own guard refuses images over ~179 MP.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if Path(path).stat().st_size == 0:
                raise ImageReadError(path, "empty file (0 bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                size = _png_size(buf)
                if size is None:
                    frame = _jpeg_frame(buf)
                    if frame is not None and frame[2] > 0:
                        size = (frame[2], frame[3])
                if size is not None:
                    return size
                with _open_pillow(path, bytes(buf), max_pixels=None) as im:
                    return im.height, im.width
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from e


def read_exif_make_model(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str | None, str | None]:
    """EXIF Make (0x010F) and Model (0x0110) of IFD0 as written (None where absent).

    Only the header is read for JPEG and TIFF, so no pixel cap applies to them (a 108-MP phone
    photo is named like any other); PNG keeps EXIF in an ``eXIf`` chunk that Pillow may only
    reach by decoding, so ``max_pixels`` applies there.
    """
    path = Path(path)
    data = _read_bytes(path)
    header_only = data[:2] == b"\xff\xd8" or data[:4] in (b"II*\x00", b"MM\x00*")
    with _open_pillow(path, data, None if header_only else max_pixels) as im:
        try:
            exif = im.getexif()
        except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, reported
            raise ImageReadError(path, f"unreadable EXIF ({type(e).__name__}: {e})") from e
        return _exif_text(exif.get(0x010F)), _exif_text(exif.get(0x0110))


def read_jpeg_luma_table(path: str | Path) -> tuple[int, ...] | None:
    """The JPEG file's luminance quantisation table (64 steps, natural order; table 0, the
    one the Y component uses in camera files), or None when the file is not a JPEG (nor an
    MPO, the JPEG-based multi-picture file some cameras write).

    Only the header is parsed (no pixel decoding, so no pixel cap is needed)."""
    path = Path(path)
    data = _read_bytes(path)
    with _open_pillow(path, data, max_pixels=None) as im:
        tables = getattr(im, "quantization", None) if im.format in ("JPEG", "MPO") else None
        if not tables or 0 not in tables or len(tables[0]) != 64:
            return None
        return tuple(int(v) for v in tables[0])


# ----------------------------------------------------------------------------- internals


def _read(path: Path, max_pixels: int, decoder: Decoder, rgb: bool) -> np.ndarray:
    if decoder not in ("auto", "pillow", "simplejpeg"):
        raise ValueError(f"decoder: {decoder!r} is not one of 'auto', 'pillow', 'simplejpeg'")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would be "
                           "decoded silently; camsim needs it False")
    data = _read_bytes(path)
    size = _png_size(data)
    if size is not None:
        _check_pixels(path, *size, max_pixels)
    if decoder != "pillow":
        arr = _decode_simplejpeg(path, data, max_pixels, rgb, required=decoder == "simplejpeg")
        if arr is not None:
            return arr
    return _decode_pillow(path, data, max_pixels, rgb)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from e
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    return data


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"header gives an empty image ({width}x{height})")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageReadError(path, f"{width}x{height} = {height * width} pixels exceeds the cap of "
                                   f"{max_pixels} pixels (max_pixels; decompression-bomb guard), "
                                   "refused before decoding")


def _png_size(buf) -> tuple[int, int] | None:
    """(H, W) from a PNG's IHDR, or None if ``buf`` is not a PNG."""
    if len(buf) >= 24 and buf[:8] == _PNG_SIGNATURE and buf[12:16] == b"IHDR":
        width, height = struct.unpack(">II", buf[16:24])
        return height, width
    return None


def _jpeg_frame(buf) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, precision, H, W, components) of a JPEG's first frame header, or None."""
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or scan data before any frame header
            return None
        seglen = (buf[i + 2] << 8) | buf[i + 3]
        if marker in _SOF_MARKERS:
            if seglen < 8 or i + 10 > n:
                return None
            height = (buf[i + 5] << 8) | buf[i + 6]
            width = (buf[i + 7] << 8) | buf[i + 8]
            return marker, buf[i + 4], height, width, buf[i + 9]
        i += 2 + seglen
    return None


def _decode_simplejpeg(path: Path, data: bytes, max_pixels: int, rgb: bool, required: bool) -> np.ndarray | None:
    """Decode with simplejpeg where that is bit-identical to Pillow; else None (or raise)."""

    def unsupported(why: str) -> None:
        if required:
            raise ImageReadError(path, f"not decodable by the simplejpeg fast path: {why}")
        return None

    frame = _jpeg_frame(data)
    if frame is None:
        return unsupported("no JPEG frame header found")
    marker, precision, height, width, _ = frame
    if height > 0:  # height 0 means "given later by a DNL marker": Pillow decides
        _check_pixels(path, height, width, max_pixels)
    if marker not in _FAST_SOF or precision != 8 or height == 0:
        return unsupported(f"frame SOF{marker - 0xC0} with {precision}-bit samples")
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError as e:
        return unsupported(str(e))
    if colorspace not in _FAST_COLORSPACES:
        return unsupported(f"colour space {colorspace}")
    gray = colorspace == "Gray"
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB",
                                     fastdct=False, fastupsample=False, strict=True)
    except ValueError as e:  # includes libjpeg warnings (strict): Pillow, the reference, decides ...
        if _lost_pixels(str(e)):  # ... unless the warning says pixels were lost: Pillow fills them in
            raise ImageReadError(path, f"corrupt or truncated JPEG data ({e}); the decoder would fill the "
                                       "missing part with grey or garbage, which carries no camera trace") from e
        return unsupported(str(e))
    if gray:
        return np.repeat(arr, 3, axis=2) if rgb else arr[:, :, 0]
    return arr if rgb else np.ascontiguousarray(arr[:, :, 1])


#: markers that start or end entropy-coded data (RSTn, EOI, SOS): junk before one is damaged image data
_SCAN_MARKERS = re.compile(r"extraneous bytes before marker 0x(d[0-7]|d9|da)\b", re.IGNORECASE)


def _lost_pixels(warning: str) -> bool:
    """Whether a libjpeg warning (simplejpeg, strict) means pixels were lost: the data ends early
    (a truncated file, with or without an end marker) or holds junk inside a scan. Pillow decodes
    such files "successfully", filling the lost blocks with grey (or decoding garbage); junk before
    a header marker (e.g. a quantisation table, seen in real camera files) loses nothing."""
    return "premature end" in warning.lower() or bool(_SCAN_MARKERS.search(warning))


#: held while Pillow's own decompression-bomb limit is lifted for one ``Image.open``
_PILLOW_GUARD_LOCK = threading.Lock()


class _open_pillow:
    """Context manager: ``Image.open`` on in-memory bytes with errors as ImageReadError
    and the pixel cap checked on the header (before any decoding)."""

    def __init__(self, path: Path, data: bytes, max_pixels: int | None) -> None:
        self.path, self.data, self.max_pixels = path, data, max_pixels
        self.im: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        path = self.path
        try:
            try:
                with warnings.catch_warnings():  # below its error level Pillow only warns; our cap decides
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    self.im = Image.open(io.BytesIO(self.data))
            except Image.DecompressionBombError:
                # our own cap (max_pixels, checked below on the header's size before any pixel is
                # decoded) is the policy, not Pillow's (~179 MP): one limit for every format and path
                # — a 200-MP JPEG must not read on the fast path yet fail here (its quantisation
                # table, a PNG of the same size); a header-only read (max_pixels None) decodes
                # nothing. Pillow's limit is a global: lifted for this one open, under a lock
                with _PILLOW_GUARD_LOCK:
                    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                    try:
                        self.im = Image.open(io.BytesIO(self.data))
                    finally:
                        Image.MAX_IMAGE_PIXELS = limit
        except UnidentifiedImageError as e:
            raise ImageReadError(path, _unsupported(self.data) or "not a recognised image format, or its "
                                 "header is corrupt (Pillow cannot identify it)") from e
        except Exception as e:  # noqa: BLE001 - any parser failure is a bad file, reported
            raise ImageReadError(path, f"corrupt image header ({type(e).__name__}: {e})") from e
        _check_pixels(path, self.im.height, self.im.width, self.max_pixels)
        return self.im

    def __exit__(self, *exc) -> None:
        if self.im is not None:
            self.im.close()


#: ISO-BMFF brands (bytes 8-12 after 'ftyp') of formats Pillow has no decoder for
_BMFF_BRANDS = {b"heic": "HEIF/HEIC", b"heix": "HEIF/HEIC", b"hevc": "HEIF/HEIC", b"heim": "HEIF/HEIC",
                b"heis": "HEIF/HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"crx ": "Canon CR3 raw"}
#: first bytes of the other formats Pillow has no decoder for
_PREFIXES = ((b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))


def _unsupported(data: bytes) -> str | None:
    """Why a file Pillow cannot identify is not read, where its first bytes name a known format."""
    kind = _BMFF_BRANDS.get(data[8:12]) if data[4:8] == b"ftyp" else \
        next((k for prefix, k in _PREFIXES if data.startswith(prefix)), None)
    if kind is None:
        return None
    if "raw" in kind:
        fix = "develop it to JPEG, PNG or TIFF first"
    elif kind == "JPEG XL":
        fix = "if it was transcoded from a JPEG, get that JPEG back (djxl restores it, tables included); else convert it to PNG or TIFF"
    else:
        fix = "convert it to PNG or TIFF first (the pixels are kept; the JPEG branch then sees no JPEG table)"
    return f"a {kind} file, which this build cannot decode (Pillow has no decoder for it): {fix}"


def _swap_16bit_rawmode(rawmode: str) -> str | None:
    """The rawmode that unpacks the low byte of each 16-bit sample where ``rawmode``
    unpacks the high byte (same bits per pixel, so PNG unfiltering is unchanged)."""
    if rawmode == "LA;16B":  # grey+alpha: 4 bytes/pixel, "RGBA" puts the low grey byte in G
        return "RGBA"
    if not rawmode.endswith((";16B", ";16L", ";16N")):
        return None
    order = rawmode[-1]
    if order == "N":
        order = _NATIVE_16
    return rawmode[:-1] + ("L" if order == "B" else "B")


def _tile_rawmode(tile) -> str | None:
    args = tile.args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile, rawmode: str):
    args = tile.args
    return tile._replace(args=rawmode if isinstance(args, str) else (rawmode, *args[1:]))


def _load(path: Path, im: Image.Image) -> None:
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - truncated / corrupt data, reported with the cause
        raise ImageReadError(path, f"cannot decode image data ({type(e).__name__}: {e})") from e


def _scale16(v: np.ndarray) -> np.ndarray:
    """round(v / 257) for 0 <= v <= 65535, exact in integers (v / 257 is never a tie)."""
    return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _as_output(gray_or_rgb: np.ndarray, rgb: bool) -> np.ndarray:
    if gray_or_rgb.ndim == 2:
        return np.repeat(gray_or_rgb[:, :, None], 3, axis=2) if rgb else np.ascontiguousarray(gray_or_rgb)
    return np.ascontiguousarray(gray_or_rgb[:, :, :3]) if rgb else np.ascontiguousarray(gray_or_rgb[:, :, 1])


def _decode_pillow(path: Path, data: bytes, max_pixels: int, rgb: bool) -> np.ndarray:
    with _open_pillow(path, data, max_pixels) as im:
        rawmodes = [_tile_rawmode(t) for t in im.tile]
        wide = [r for r in rawmodes if r is not None and (";16" in r) and not r.startswith("I;16")]
        if im.mode in (*_RGB_LIKE, "CMYK") and wide:
            return _decode_wide(path, data, im, max_pixels, rgb)
        _load(path, im)
        return _pillow_to_array(path, im, rgb)


def _decode_wide(path: Path, data: bytes, im: Image.Image, max_pixels: int, rgb: bool) -> np.ndarray:
    """16-bit-per-sample RGB(A) / grey+alpha that Pillow would cut to 8 bits: decode the
    low bytes with a swapped rawmode and rebuild the 16-bit values."""
    mode = im.mode
    rawmodes = [_tile_rawmode(t) for t in im.tile]
    swapped = [_swap_16bit_rawmode(r) if r is not None else None for r in rawmodes]
    if mode == "CMYK" or any(s is None for s in swapped) or any(r.startswith("RGBa") for r in rawmodes):
        raise ImageReadError(path, f"unsupported 16-bit layout (mode {mode}, rawmodes {rawmodes}); "
                                   "refusing rather than truncating to 8 bits")
    grey_alpha = rawmodes[0] == "LA;16B"
    with _open_pillow(path, data, max_pixels) as low:
        low.tile = [_with_rawmode(t, s) for t, s in zip(low.tile, swapped)]
        _load(path, low)
        lo = np.asarray(low)
    if grey_alpha:  # one decode: R = high byte, G = low byte of the grey sample
        v16 = (lo[:, :, 0].astype(np.uint16) << 8) | lo[:, :, 1]
    else:
        _load(path, im)
        hi = np.asarray(im)[:, :, :3]
        v16 = (hi.astype(np.uint16) << 8) | lo[:, :, :3]
    return _as_output(_scale16(v16), rgb)


def _pillow_to_array(path: Path, im: Image.Image, rgb: bool) -> np.ndarray:
    mode = im.mode
    try:
        if mode == "L":
            return _as_output(np.asarray(im), rgb)
        if mode in _RGB_LIKE:
            return _as_output(np.asarray(im), rgb)
        if mode == "LA":
            return _as_output(np.asarray(im)[:, :, 0], rgb)
        if mode.startswith("I;16"):
            return _as_output(_scale16(np.asarray(im)), rgb)
        if mode == "I":
            arr = np.asarray(im)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 65535:
                raise ImageReadError(path, f"32-bit integer image with values in [{lo}, {hi}], outside "
                                           "the 16-bit range [0, 65535]; refusing to guess a scale")
            return _as_output(_scale16(arr), rgb)
        if mode == "F":
            arr = np.asarray(im)
            if not np.isfinite(arr).all():
                raise ImageReadError(path, "float image with NaN or infinite values")
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0.0 or hi > 1.0:
                raise ImageReadError(path, f"float image with values in [{lo:g}, {hi:g}]; camsim reads float "
                                           "images as intensities in [0, 1] and refuses to guess another "
                                           "scale")
            return _as_output(np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8), rgb)
        if mode in ("1", "La"):
            return _pillow_to_array(path, im.convert("L" if mode == "1" else "LA"), rgb)
        if mode in ("P", "PA", "RGBa"):
            return _as_output(np.asarray(im.convert("RGBA")), rgb)
        # CMYK (Adobe inversion handled by Pillow's JPEG reader), YCbCr, LAB, HSV, ...
        return _as_output(np.asarray(im.convert("RGB")), rgb)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - an unconvertible mode is a bad file, reported
        raise ImageReadError(path, f"cannot convert image mode {mode} ({type(e).__name__}: {e})") from e


def _exif_text(value) -> str | None:
    """An EXIF ASCII value as text: cut at the first interior NUL, whitespace stripped."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif not isinstance(value, str):
        value = str(value)
    value = value.strip("\x00 \t\r\n").split("\x00", 1)[0].strip()
    return value or None


__all__ = ["DEFAULT_MAX_PIXELS", "ImageReadError", "error_reason", "read_green", "read_rgb", "image_size",
           "read_exif_make_model", "read_jpeg_luma_table"]
