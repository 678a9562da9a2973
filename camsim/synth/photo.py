"""What varies from one photo to the next within a camera model, and the JPEG file it writes.

Per photo (drawn by camera name, scene and namespace, from a stream of its own, so each trait
switches on without moving any other draw): the auto-exposure error and ISO (:class:`Photo`,
:func:`photo_conditions`), a reduced image size, and the JPEG quality — one of the model's presets
or, for adaptive models, chosen from its range by the photo's content
(:func:`photo_jpeg_quality`). Models of a quantisation-table family (``jpeg_tables`` > 0) write
their maker's own table shape scaled by quality (:func:`quant_tables`) instead of the IJG
standard tables; several makes may share one table family, as real ones do.
"""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from camsim.synth import isp
from camsim.synth.params import TAG_PRESETS, CameraParams

TAG_PHOTO = 0x50484F  # "PHO"
TAG_TABLES = 0x515442  # "QTB"

# ITU T.81 Annex K.1 / K.2: the IJG standard luminance and chrominance tables (natural order)
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64).reshape(8, 8)
_IJG_CHROMA = np.full((8, 8), 99.0)
_IJG_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
_PIL_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


@dataclass(frozen=True)
class Photo:
    """One photo's conditions (neutral defaults: the model's fixed settings)."""

    ev: float = 0.0  # auto-exposure error, EV
    iso_ev: float = 0.0  # ISO above (below) auto-ISO, stops
    scale: float = 1.0  # reduced image size (output / full size; 1 = full size)


def _photo_rng(tag: int, camera: CameraParams, seed: int, scene_index: int, namespace: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag, namespace, scene_index, zlib.crc32(camera.name.encode())])


def photo_conditions(camera: CameraParams, seed: int, scene_index: int, namespace: int = 0) -> Photo:
    """The conditions of ``camera``'s photo of scene ``scene_index``: AE error ~ N(0, ae_sigma),
    ISO offset ~ N(0, iso_sigma), the reduced size with probability ``downscale_share``."""
    if not (camera.ae_sigma or camera.iso_sigma or camera.downscale_share):
        return Photo()
    rng = _photo_rng(TAG_PHOTO, camera, seed, scene_index, namespace)
    z_ev, z_iso, u = float(rng.standard_normal()), float(rng.standard_normal()), float(rng.random())
    return Photo(ev=camera.ae_sigma * z_ev, iso_ev=camera.iso_sigma * z_iso,
                 scale=camera.downscale_scale if u < camera.downscale_share else 1.0)


def image_activity(img: np.ndarray) -> float:
    """Mean absolute 4-neighbour Laplacian of the 8-bit luma, / 255 (how busy a photo is)."""
    y = np.asarray(img, dtype=np.float32).mean(axis=2) if np.ndim(img) == 3 else np.asarray(img, np.float32)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.abs(lap).mean() / 255.0)


def adaptive_quality(img: np.ndarray, lo: int, hi: int) -> int:
    """A content-adaptive quality in [lo, hi]: busier photos get lower quality (the file-size
    control of cameras with per-image tables); t = a / (a + 0.03) of the activity a."""
    a = image_activity(img)
    return int(round(hi - (hi - lo) * a / (a + 0.03)))


def photo_jpeg_quality(camera: CameraParams, seed: int, scene_index: int, namespace: int = 0,
                       image: np.ndarray | None = None) -> int:
    """The JPEG quality ``camera`` saves photo ``scene_index`` at: chosen by content for adaptive
    models (needs ``image``), else its one setting, or one of its presets drawn per photo (by
    camera name, like the sensor noise)."""
    if camera.jpeg_adaptive:
        if image is None:
            raise ValueError(f"{camera.name}: an adaptive-quality camera needs the image to choose its quality")
        return adaptive_quality(image, *camera.jpeg_adaptive)
    if not camera.jpeg_presets:
        return camera.jpeg_quality
    choices = (camera.jpeg_quality, *camera.jpeg_presets)
    rng = _photo_rng(TAG_PRESETS, camera, seed, scene_index, namespace)
    return int(choices[int(rng.integers(len(choices)))])


@functools.lru_cache(maxsize=256)
def quant_tables(table_family: int, quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(luma, chroma) quantisation tables, 64 values each in natural order, of table family
    ``table_family`` at ``quality`` (IJG scaling: 5000/q below 50, 200 − 2q above). Family 0: the
    IJG standard tables; others: the standard tables times a smooth frequency tilt
    exp(α((u+v)/14 − ½) + β(u−v)/7) and a chroma factor γ drawn from the family's number."""
    luma, chroma = _IJG_LUMA, _IJG_CHROMA
    if table_family:
        rng = np.random.default_rng([TAG_TABLES, int(table_family)])
        alpha, beta, gamma = rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.25)
        u, v = np.meshgrid(np.arange(8), np.arange(8))
        tilt = np.exp(alpha * ((u + v) / 14 - 0.5) + beta * (u - v) / 7)
        luma, chroma = luma * tilt, chroma * tilt * gamma
    q = int(np.clip(quality, 1, 100))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    out = [tuple(int(x) for x in np.clip(np.floor((t * scale + 50) / 100), 1, 255).ravel()) for t in (luma, chroma)]
    return out[0], out[1]


def ijg_quality(luma_table) -> int:
    """The IJG-equivalent quality (1..100) of a luminance quantisation table (64 steps, natural
    order): the quality whose IJG standard table (:func:`quant_tables` family 0) is nearest in
    L1 distance — the usual way to put a camera's own table on the familiar scale (ties: the
    lower quality). Camera originals are mostly 90–100."""
    t = np.asarray(luma_table, dtype=np.float64).ravel()
    if t.size != 64:
        raise ValueError(f"a quantisation table has 64 steps, got {t.size}")
    return int(np.argmin(np.abs(_ijg_luma_tables() - t).sum(axis=1))) + 1


@functools.lru_cache(maxsize=1)
def _ijg_luma_tables() -> np.ndarray:
    """``[100, 64]``: the IJG standard luminance table at qualities 1..100."""
    return np.array([quant_tables(0, q)[0] for q in range(1, 101)], dtype=np.float64)


def encode_photo(img: np.ndarray, camera: CameraParams, quality: int) -> bytes:
    """The JPEG ``camera`` writes at ``quality``: libjpeg-turbo with the IJG tables
    (:func:`camsim.synth.isp.encode_jpeg`), or its table family's own tables (Pillow)."""
    if not camera.jpeg_tables:
        return isp.encode_jpeg(img, quality, camera.jpeg_subsampling)
    luma, chroma = quant_tables(camera.jpeg_tables, int(quality))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(
        buf, format="JPEG", qtables=[list(luma), list(chroma)], subsampling=_PIL_SUBSAMPLING[camera.jpeg_subsampling])
    return buf.getvalue()


__all__ = ["Photo", "photo_conditions", "photo_jpeg_quality", "adaptive_quality", "quant_tables", "ijg_quality",
           "encode_photo"]
