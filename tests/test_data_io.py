"""Image decoding (camsim.data.io): green channel, 16-bit scaling, bad files, JPEG fast path."""

from __future__ import annotations

import pickle
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from camsim.data.io import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    image_size,
    read_exif_make_model,
    read_green,
    read_jpeg_luma_table,
    read_rgb,
)

CAMERAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cameras"
if not CAMERAS.is_dir():  # the checkout may live elsewhere than /work/main
    CAMERAS = Path("/work/shared/data/cameras")
REAL = sorted(CAMERAS.glob("*/*.jpg"))
needs_real = pytest.mark.skipif(not REAL, reason=f"real photos not found under {CAMERAS}")
ONE_PER_MODEL = [sorted(d.glob("*.jpg"))[0] for d in sorted(CAMERAS.iterdir()) if d.is_dir()] if REAL else []


def pillow_green(path: Path) -> np.ndarray:
    """The reference: Pillow decode, converted to RGB, channel 1."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))[:, :, 1]


def scaled(v: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(v, dtype=np.float64) / 257.0).astype(np.uint8)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 97x131 RGB crop of a real photo (odd sizes exercise edge upsampling)."""
    if REAL:
        with Image.open(REAL[0]) as im:
            return np.asarray(im)[1000:1097, 1500:1631].copy()
    return np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)


def save(arr_or_im, path: Path, **kw) -> Path:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    im.save(path, **kw)
    return path


# ---- hand-written 16-bit files (Pillow cannot write 16-bit RGB) -------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png16(path: Path, arr: np.ndarray, filters=(0, 1, 2, 3, 4)) -> Path:
    """A 16-bit PNG of ``arr`` ([H, W, C], C = 1, 2, 3, 4), cycling the five row filters."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    rows = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    out, prev = [], np.zeros(w * bpp, np.int32)
    for y in range(h):
        x, f = rows[y], filters[y % len(filters)]
        a = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        b = prev
        cc = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if f == 0:
            pred = np.zeros_like(x)
        elif f == 1:
            pred = a
        elif f == 2:
            pred = b
        elif f == 3:
            pred = (a + b) // 2
        else:
            p = a + b - cc
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        out.append(bytes([f]) + ((x - pred) % 256).astype(np.uint8).tobytes())
        prev = x
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(out)))
                     + _chunk(b"IEND", b""))
    return path


def write_tiff(path: Path, arr: np.ndarray, order: str = "<", deflate: bool = False,
               size: tuple[int, int] | None = None) -> Path:
    """A baseline single-strip TIFF of uint8/uint16 ``arr`` ([H, W, C]); ``size`` (W, H)
    overrides the header's dimensions (for a decompression-bomb header)."""
    h, w, c = arr.shape
    bits = arr.dtype.itemsize * 8
    data = arr.astype(f"{order}u{arr.dtype.itemsize}").tobytes()
    if deflate:
        data = zlib.compress(data)
    w, h = size or (w, h)
    tags = [(256, 4, [w]), (257, 4, [h]), (258, 3, [bits] * c), (259, 3, [8 if deflate else 1]),
            (262, 3, [2 if c >= 3 else 1]), (273, 4, [0]), (277, 3, [c]), (278, 4, [h]),
            (279, 4, [len(data)]), (284, 3, [1])]
    if c in (2, 4):
        tags.append((338, 3, [2]))
    ifd_size = 2 + 12 * len(tags) + 4
    extra_at = 8 + ifd_size
    extra = b""
    entries = []
    data_at = extra_at + 64
    for tag, typ, vals in tags:
        if tag == 273:
            vals = [data_at]
        fmt = {3: "H", 4: "I"}[typ]
        packed = struct.pack(f"{order}{len(vals)}{fmt}", *vals)
        if len(packed) <= 4:
            field = packed.ljust(4, b"\0")
        else:
            field = struct.pack(f"{order}I", extra_at + len(extra))
            extra += packed
        entries.append(struct.pack(f"{order}HHI", tag, typ, len(vals)) + field)
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(f"{order}I", 8)
    ifd = struct.pack(f"{order}H", len(tags)) + b"".join(entries) + b"\0\0\0\0"
    path.write_bytes(head + ifd + extra.ljust(64, b"\0") + data)
    return path


# ---- JPEG fast path ≡ Pillow -----------------------------------------------------------


@needs_real
@pytest.mark.parametrize("path", ONE_PER_MODEL, ids=lambda p: p.parent.name)
def test_simplejpeg_identical_to_pillow_on_real_photos(path):
    fast = read_green(path, decoder="simplejpeg")  # raises if the fast path does not apply
    assert fast.dtype == np.uint8 and fast.shape == image_size(path)
    np.testing.assert_array_equal(fast, pillow_green(path))
    np.testing.assert_array_equal(read_rgb(path, decoder="simplejpeg"), np.asarray(Image.open(path).convert("RGB")))


@needs_real
@pytest.mark.slow
def test_simplejpeg_identical_to_pillow_on_every_real_photo():
    for path in REAL:
        np.testing.assert_array_equal(read_green(path, decoder="simplejpeg"), pillow_green(path), err_msg=str(path))


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("shape", [(97, 131), (96, 128), (1, 1), (9, 17)])
def test_simplejpeg_identical_to_pillow_on_written_jpegs(tmp_path, crop, subsampling, progressive, shape):
    path = save(np.ascontiguousarray(crop[: shape[0], : shape[1]]), tmp_path / "x.jpg", quality=90,
                subsampling=subsampling, progressive=progressive)
    fast = read_green(path, decoder="simplejpeg")
    np.testing.assert_array_equal(fast, pillow_green(path))
    np.testing.assert_array_equal(fast, read_green(path, decoder="pillow"))
    assert fast.shape == shape


def test_grayscale_jpeg_fast_path_and_pillow_agree(tmp_path, crop):
    path = save(Image.fromarray(crop).convert("L"), tmp_path / "g.jpg", quality=90)
    ref = np.asarray(Image.open(path))
    np.testing.assert_array_equal(read_green(path, decoder="simplejpeg"), ref)
    np.testing.assert_array_equal(read_green(path, decoder="pillow"), ref)
    np.testing.assert_array_equal(read_rgb(path), np.stack([ref] * 3, axis=2))


def test_cmyk_jpeg_goes_to_pillow_and_is_not_inverted(tmp_path, crop):
    path = save(Image.fromarray(crop).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    with pytest.raises(ImageReadError, match="colour space CMYK"):
        read_green(path, decoder="simplejpeg")
    g = read_green(path)
    np.testing.assert_array_equal(g, pillow_green(path))
    # Adobe-inverted CMYK handled: close to the original green, not its negative
    assert np.abs(g.astype(int) - crop[:, :, 1]).mean() < 6


def test_exif_orientation_is_not_applied(tmp_path, crop):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(crop, tmp_path / "rot.jpg", quality=90, exif=exif)
    assert read_green(path).shape == crop.shape[:2] == image_size(path)


# ---- formats and channels ----------------------------------------------------------------


def test_one_pixel_images(tmp_path):
    np.testing.assert_array_equal(read_green(save(np.array([[[10, 200, 30]]], np.uint8), tmp_path / "a.png")), [[200]])
    assert read_green(save(np.array([[[10, 200, 30]]], np.uint8), tmp_path / "a.jpg", quality=95)).shape == (1, 1)


def test_rgba_png_gives_green_ignoring_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    path = save(rgba, tmp_path / "a.png")
    np.testing.assert_array_equal(read_green(path), rgba[:, :, 1])
    np.testing.assert_array_equal(read_rgb(path), rgba[:, :, :3])


def test_palette_png_is_looked_up(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, mode="L").convert("P")
    im.putpalette([1, 11, 21, 2, 77, 22, 3, 250, 23])
    path = save(im, tmp_path / "p.png")
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_green(path), np.array([11, 77, 250], np.uint8)[idx])


def test_grey_alpha_png(tmp_path):
    la = np.random.default_rng(2).integers(0, 256, (4, 6, 2), dtype=np.uint8)
    path = save(Image.fromarray(la, mode="LA"), tmp_path / "la.png")
    np.testing.assert_array_equal(read_green(path), la[:, :, 0])


def test_16bit_grey_png_is_rounded_not_truncated_or_clipped(tmp_path):
    v = np.array([[0, 1, 128, 129, 385, 386, 300, 32767, 32896, 65406, 65407, 65535]], np.uint16)
    want = np.array([[0, 0, 0, 1, 1, 2, 1, 127, 128, 254, 255, 255]], np.uint8)  # round(v / 257) by hand
    path = save(v, tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I;16")
    np.testing.assert_array_equal(read_green(path), want)
    full = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = read_green(save(full, tmp_path / "all.png"))
    np.testing.assert_array_equal(got, scaled(full))
    assert (got != (full >> 8)).any()  # a truncating reader would fail


@pytest.mark.parametrize("compression", [None, "tiff_deflate"])
def test_16bit_grey_tiff(tmp_path, compression):
    full = np.arange(65536, dtype=np.uint16).reshape(256, 256)[::3, ::5]
    path = save(full, tmp_path / "g16.tif", compression=compression)
    np.testing.assert_array_equal(read_green(path), scaled(full))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png_is_rounded_not_truncated(tmp_path, channels):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65536, (11, 13, channels), dtype=np.uint16)
    arr[0, :4, 1] = [200, 65535, 383, 384]  # truncation would give 0, 255, 1, 1; rounding 1, 255, 1, 1
    path = write_png16(tmp_path / "rgb16.png", arr)
    g = read_green(path)
    np.testing.assert_array_equal(g, scaled(arr[:, :, 1]))
    assert list(g[0, :4]) == [1, 255, 1, 1]
    np.testing.assert_array_equal(read_rgb(path), scaled(arr[:, :, :3]))


def test_16bit_grey_alpha_png(tmp_path):
    arr = np.random.default_rng(4).integers(0, 65536, (6, 9, 2), dtype=np.uint16)
    path = write_png16(tmp_path / "la16.png", arr)
    np.testing.assert_array_equal(read_green(path), scaled(arr[:, :, 0]))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_tiff_is_rounded(tmp_path, order, deflate, channels):
    arr = np.random.default_rng(5).integers(0, 65536, (7, 10, channels), dtype=np.uint16)
    path = write_tiff(tmp_path / "rgb16.tif", arr, order=order, deflate=deflate)
    np.testing.assert_array_equal(read_green(path), scaled(arr[:, :, 1]))
    np.testing.assert_array_equal(read_rgb(path), scaled(arr[:, :, :3]))


@pytest.mark.parametrize("order", ["<", ">"])
def test_8bit_rgb_tiff(tmp_path, order):
    arr = np.random.default_rng(6).integers(0, 256, (7, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_green(write_tiff(tmp_path / "rgb8.tif", arr, order=order)), arr[:, :, 1])
    np.testing.assert_array_equal(read_green(save(arr, tmp_path / "pil.tif")), arr[:, :, 1])


def test_int_and_float_images_scaled_or_refused(tmp_path):
    i = np.array([[0, 200, 65535]], np.int32)
    np.testing.assert_array_equal(read_green(save(i, tmp_path / "i.tif")), [[0, 1, 255]])
    with pytest.raises(ImageReadError, match=r"outside the 16-bit range") as e:
        read_green(save(np.array([[0, 70000]], np.int32), tmp_path / "big.tif"))
    assert e.value.path == tmp_path / "big.tif"
    f = np.array([[0.0, 0.5, 1.0, 0.1]], np.float32)
    np.testing.assert_array_equal(read_green(save(f, tmp_path / "f.tif")), [[0, 128, 255, 26]])
    with pytest.raises(ImageReadError, match=r"float image with values in \[0, 255\]"):
        read_green(save(np.array([[0.0, 255.0]], np.float32), tmp_path / "f255.tif"))


# ---- bad files ------------------------------------------------------------------------


@needs_real
@pytest.mark.parametrize("keep", [0.5, 0.999, 2000])
def test_truncated_real_jpeg_is_refused(tmp_path, keep):
    data = REAL[0].read_bytes()
    n = int(len(data) * keep) if keep < 1 else keep
    path = tmp_path / "trunc.jpg"
    path.write_bytes(data[:n])
    for decoder in ("auto", "pillow"):
        with pytest.raises(ImageReadError, match="(?i)truncated") as e:
            read_green(path, decoder=decoder)
        assert e.value.path == path and str(e.value).startswith(str(path))


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not an image at all" * 10, "not a recognised image"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "(?i)corrupt|cannot decode|truncat"),
    (b"\xff\xd8\xff\xdb\x00\x43\x00" + bytes(64) + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03"
     + bytes(9) + b"\xff\xda" + bytes(50), "(?i)corrupt|cannot decode|truncat"),  # headers, no tables
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "(?i)corrupt|not a recognised|cannot decode"),
])
def test_garbage_and_empty_files_are_refused(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        read_green(path)
    assert e.value.path == path and str(path) in str(e.value)


@pytest.mark.parametrize("head, kind, fix", [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF/HEIC", "convert it to PNG or TIFF"),
    (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "Canon CR3 raw", "develop it"),
    (b"FUJIFILMCCD-RAW 0201FF383501", "Fujifilm RAF raw", "develop it"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl ", "JPEG XL", "djxl restores it"),
    (b"\xff\x0a\xfa\x7f\x01\x90\x08", "JPEG XL", "convert it to PNG or TIFF"),
])
def test_a_phone_or_raw_format_is_named_with_what_to_do(tmp_path, head, kind, fix):
    """An iPhone's HEIC saved as .jpg (or a raw file in a photo folder) is not 'corrupt': the
    reason names the format and the way to make it readable, for the header read and the decode."""
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(head + bytes(2000))
    for read in (read_green, image_size):
        with pytest.raises(ImageReadError, match=f"a {re.escape(kind)} file.*{fix}") as e:
            read(path)
        assert e.value.path == path


def test_an_unknown_iso_media_file_keeps_the_plain_reason(tmp_path):
    """A video (ISO-BMFF 'isom') in a photo folder is not called a HEIF: the plain reason stands."""
    path = tmp_path / "clip.jpg"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(2000))
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        read_green(path)


def _noise_jpeg(progressive: bool) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)).save(
        buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("damage", ["cut with an end marker", "zeroed in the middle"])
def test_jpeg_whose_pixels_were_lost_is_refused(tmp_path, progressive, damage):
    """Pillow decodes these "successfully" — the missing blocks grey (or a progressive file without
    its last scans) — so their pixels carry no camera trace: refused, naming the file."""
    data = _noise_jpeg(progressive)
    half = len(data) // 2
    bad = data[: int(len(data) * 0.6)] + b"\xff\xd9" if damage.startswith("cut") else \
        data[:half] + bytes(2000) + data[half + 2000:]
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bad)
    with Image.open(path) as im:
        im.load()  # the reference decoder takes it
    with pytest.raises(ImageReadError, match="corrupt or truncated JPEG data") as e:
        read_green(path)
    assert e.value.path == path


def test_junk_before_a_header_marker_loses_no_pixel(tmp_path):
    """Two stray bytes before a quantisation table (seen in a real camera file) are a libjpeg
    warning, not damage: the file reads, as Pillow reads it."""
    data = _noise_jpeg(False)
    i = data.index(b"\xff\xdb")
    path = tmp_path / "junk.jpg"
    path.write_bytes(data[:i] + b"\x00\x00" + data[i:])
    np.testing.assert_array_equal(read_green(path), pillow_green(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read file"):
        read_green(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="cannot read file"):
        read_green(tmp_path)
    with pytest.raises(ImageReadError, match="cannot read file"):
        image_size(tmp_path / "nope.png")


def test_png_header_claiming_huge_size_is_refused_before_decoding(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + _chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match=r"100000x100000 = 10000000000 pixels exceeds the cap") as e:
        read_green(path)
    assert e.value.path == path
    assert image_size(path) == (100_000, 100_000)  # the header alone is fine


def test_tiff_and_jpeg_headers_over_the_cap(tmp_path, crop):
    path = write_tiff(tmp_path / "bomb.tif", np.zeros((2, 2, 3), np.uint8), size=(5_000, 5_000))
    with pytest.raises(ImageReadError, match="exceeds the cap of 1000000"):
        read_green(path, max_pixels=1_000_000)
    jpg = save(crop, tmp_path / "small.jpg")
    for decoder in ("auto", "pillow", "simplejpeg"):
        with pytest.raises(ImageReadError, match=r"131x97 = 12707 pixels exceeds the cap of 12706"):
            read_green(jpg, max_pixels=12_706, decoder=decoder)
    assert read_green(jpg, max_pixels=12_707).shape == (97, 131)
    assert DEFAULT_MAX_PIXELS >= 50_000_000


def _claiming(data: bytes, height: int, width: int) -> bytes:
    """A JPEG whose frame header claims ``height`` x ``width``."""
    i = data.index(b"\xff\xc0") + 5
    return data[:i] + struct.pack(">HH", height, width) + data[i + 4:]


def test_one_pixel_cap_above_pillows_own_limit(tmp_path, crop):
    """The configs allow 200 MP (a Samsung 200-MP mode photo is 16320 x 12240); Pillow's own guard
    stops at ~179 MP. Its quantisation table (the JPEG-quality rows) and its EXIF (data=exif) must
    read like a 12-MP photo's, not fail on one path while the pixels read on another."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "samsung", "SM-S918B"
    path = tmp_path / "big.jpg"
    path.write_bytes(_claiming(save(crop, tmp_path / "small.jpg", quality=90, exif=exif).read_bytes(), 12240, 16320))
    assert image_size(path) == (12240, 16320)
    assert read_jpeg_luma_table(path) == read_jpeg_luma_table(tmp_path / "small.jpg")
    assert read_exif_make_model(path) == ("samsung", "SM-S918B")  # header only: no pixel cap
    with pytest.raises(ImageReadError, match="exceeds the cap of 150000000"):
        read_green(path, max_pixels=150_000_000, decoder="pillow")


def test_load_truncated_images_must_stay_false(tmp_path, crop, monkeypatch):
    path = save(crop, tmp_path / "a.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        read_green(path)


def test_image_read_error_survives_pickling(tmp_path):
    err = ImageReadError(tmp_path / "x.jpg", "truncated")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and back.path == err.path and back.reason == "truncated"
    assert str(back) == f"{tmp_path / 'x.jpg'}: truncated"


def test_unknown_decoder_name(tmp_path, crop):
    with pytest.raises(ValueError, match="decoder"):
        read_green(save(crop, tmp_path / "a.png"), decoder="fast")


# ---- header-only helpers -------------------------------------------------------------------


def test_image_size_from_headers(tmp_path, crop):
    for name in ("a.jpg", "a.png", "a.tif", "a.bmp"):
        assert image_size(save(crop, tmp_path / name)) == (97, 131)
    if REAL:
        with Image.open(REAL[0]) as im:
            assert image_size(REAL[0]) == (im.height, im.width)
    (tmp_path / "junk.jpg").write_bytes(b"junk" * 100)
    with pytest.raises(ImageReadError, match="not a recognised image"):
        image_size(tmp_path / "junk.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        image_size(tmp_path / "empty.png")


def test_exif_make_model(tmp_path, crop):
    exif = Image.Exif()
    exif[0x010F] = "NIKON CORPORATION\x00\x00"
    exif[0x0110] = "  NIKON D70 "
    assert read_exif_make_model(save(crop, tmp_path / "e.jpg", exif=exif)) == ("NIKON CORPORATION", "NIKON D70")
    assert read_exif_make_model(save(crop, tmp_path / "none.jpg")) == (None, None)
    if REAL:
        local = shutil.copy(REAL[0], tmp_path / "real.jpg")
        make, model = read_exif_make_model(local)
        assert make and model


@pytest.mark.parametrize("quality", [40, 75, 90, 95, 97, 99, 100])
def test_jpeg_quality_read_back_from_the_luma_table(tmp_path, crop, quality):
    """A photo's IJG-equivalent quality (the transfer evaluation's JPEG bands) is the quality it
    was written at, read from the header alone; a PNG has none; a corrupt header is an error."""
    from camsim.synth.photo import ijg_quality

    path = tmp_path / "q.jpg"
    Image.fromarray(crop).save(path, quality=quality)
    table = read_jpeg_luma_table(path)
    assert len(table) == 64 and ijg_quality(table) == quality
    assert read_jpeg_luma_table(save(crop, tmp_path / "p.png")) is None
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_jpeg_luma_table(tmp_path / "bad.jpg")


def test_ijg_quality_of_makers_tables_and_bad_tables():
    from camsim.synth.photo import ijg_quality, quant_tables

    for family in (1, 2, 3):  # a maker's own table shape lands near the quality it was scaled to
        for q in (70, 85, 95, 98):
            assert abs(ijg_quality(quant_tables(family, q)[0]) - q) <= 3
    assert ijg_quality([1] * 64) == 100
    with pytest.raises(ValueError, match="64 steps"):
        ijg_quality([1] * 63)
