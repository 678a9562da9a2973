"""The stages of a camera's image pipeline, each a pure numpy function (float32 in and out).

Colour images are *planar*: ``[3, H, W]`` float32 (R, G, B planes; linear light until the
tone curve), which keeps every per-channel filter on contiguous memory. Raw mosaics are
``[H, W]``.

Order used by :func:`camsim.synth.render.render_camera_image` (physically sensible):

1. optics blur (lens PSF + optical low-pass filter, Gaussian σ 0.35–0.9 sensor px);
2. sensor colour response (the inverse of the camera's colour matrix) and auto-exposure;
3. CFA sampling (:func:`mosaic`) — the raw values carry the channel imbalance of the
   sensor under daylight (raw = camera RGB / white-balance gains);
4. signal-dependent shot noise + read noise (:func:`sensor_noise`, Poisson–Gaussian,
   variance = g·x/FW + (g·σ_read/FW)², g = ISO / base ISO; full well FW 3 000–45 000 e⁻,
   read noise 1.5–6 e⁻, ISO 50–6400);
5. ADC quantisation to 10–14 bits with a black-level pedestal (:func:`adc_quantise`);
6. white balance on the raw mosaic (:func:`white_balance`). The issue lists white balance
   before noise; here the *channel imbalance* it corrects is in the raw values before the
   noise (step 3) and the gains are applied digitally after the ADC, as in real cameras —
   so R and B noise is amplified by their gains, a camera-specific trace;
7. demosaicing (:func:`demosaic`: bilinear, Malvar–He–Cutler, Hamilton–Adams, AHD, frequency-domain);
8. colour matrix camera RGB → linear sRGB (:func:`apply_colour_matrix`);
9. denoising (:func:`denoise`: edge-preserving 3×3 filter on luma scaled to the noise σ,
   Gaussian on chroma);
10. tone curve (:func:`tone_curve`: gamma with a linear toe, then an S-curve);
11. sharpening (:func:`sharpen`: unsharp mask on luma);
12. optional resampling (:func:`resample`);
13. 8-bit quantisation and JPEG (:func:`to_uint8`, :func:`encode_jpeg`).
"""

from __future__ import annotations

import functools

import numpy as np
import simplejpeg
from PIL import Image
from scipy import ndimage

from camsim.synth import demosaic as demosaic_more
from camsim.synth.params import ALL_DEMOSAIC_METHODS, CFA_PATTERNS, JPEG_SUBSAMPLINGS, RESAMPLE_KERNELS

_CH = {"R": 0, "G": 1, "B": 2}
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 (linear sRGB) luminance


# ---------------------------------------------------------------------- CFA

def _check_pattern(pattern: str) -> None:
    if pattern not in CFA_PATTERNS:
        raise ValueError(f"cfa: unknown pattern {pattern!r}; choose one of {list(CFA_PATTERNS)}")


def cfa_channel_map(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] int8 map of which colour (0 R, 1 G, 2 B) each site samples (read-only).
    ``pattern`` lists the 2×2 tile row by row: RGGB means R at (0, 0), G at (0, 1) and
    (1, 0), B at (1, 1)."""
    _check_pattern(pattern)
    return _cfa_map(pattern, int(shape[0]), int(shape[1]))


@functools.lru_cache(maxsize=64)
def _cfa_map(pattern: str, h: int, w: int) -> np.ndarray:
    tile = np.array([[_CH[pattern[0]], _CH[pattern[1]]], [_CH[pattern[2]], _CH[pattern[3]]]], dtype=np.int8)
    out = np.tile(tile, ((h + 1) // 2, (w + 1) // 2))[:h, :w].copy()
    out.flags.writeable = False
    return out


def _phases(pattern: str) -> list[tuple[int, int, int]]:
    """(row phase, column phase, channel) of the four sites of the 2×2 tile."""
    return [(i // 2, i % 2, _CH[pattern[i]]) for i in range(4)]


def cfa_masks(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """[3, H, W] bool masks of the R, G and B sites."""
    cmap = cfa_channel_map(pattern, shape)
    return np.stack([cmap == c for c in range(3)])


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample [3, H, W] through the colour filter array: [H, W], one colour per site."""
    _check_pattern(pattern)
    rgb = np.asarray(rgb, dtype=np.float32)
    out = np.empty(rgb.shape[1:], dtype=np.float32)
    for py, px, c in _phases(pattern):
        out[py::2, px::2] = rgb[c, py::2, px::2]
    return out


# ---------------------------------------------------------------------- optics and sensor

def optics_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian point-spread function (lens + optical low-pass filter), σ in sensor pixels."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if sigma <= 0:
        return rgb.copy()
    return np.stack([_gauss(p, sigma) for p in rgb])


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma, mode="mirror", truncate=3.0)


def iso_gain(darkness: float, iso_min: int, iso_max: int) -> float:
    """Analogue gain g = ISO / base ISO chosen by auto-ISO: base ISO in bright scenes
    (darkness 0), up to the camera's maximum in the darkest (darkness 1)."""
    return float((iso_max / iso_min) ** float(np.clip(darkness, 0.0, 1.0)))


def noise_variance(x: np.ndarray | float, full_well: float, read_noise: float, gain: float) -> np.ndarray:
    """Poisson–Gaussian variance of a raw value ``x`` (fraction of white level):
    shot noise g·x/FW plus read noise (g·σ_read/FW)²."""
    scale = gain / full_well
    return np.maximum(np.asarray(x, dtype=np.float32), 0.0) * scale + (read_noise * scale) ** 2


def sensor_noise(raw: np.ndarray, full_well: float, read_noise: float, gain: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Add shot + read noise (Gaussian approximation of the Poisson–Gaussian model)."""
    var = noise_variance(raw, full_well, read_noise, gain)
    return (raw + np.sqrt(var) * rng.standard_normal(raw.shape, dtype=np.float32)).astype(np.float32)


def adc_quantise(raw: np.ndarray, bits: int) -> np.ndarray:
    """Analogue-to-digital conversion with a black-level pedestal of 1/16 of full scale:
    values are rounded to ``bits`` bits, clipped at 0 and the white level, and returned as
    fractions of the white level above black (slightly negative values survive)."""
    full = float(2 ** int(bits) - 1)
    black = float(2 ** int(bits) // 16)
    dn = np.clip(np.rint(black + raw * (full - black)), 0.0, full)
    return ((dn - black) / (full - black)).astype(np.float32)


def white_balance(raw: np.ndarray, pattern: str, gains: tuple[float, float, float]) -> np.ndarray:
    """Multiply each CFA site by the gain of its colour (digital gains on the raw mosaic)."""
    _check_pattern(pattern)
    out = np.array(raw, dtype=np.float32)
    for py, px, c in _phases(pattern):
        out[py::2, px::2] *= np.float32(gains[c])
    return out


# ---------------------------------------------------------------------- demosaicing

_K_G_BIL = demosaic_more.K_G_BIL
_K_RB_BIL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4  # = _sep121
# Malvar, He & Cutler (ICASSP 2004) gradient-corrected linear interpolation, gains /8.
# Reference kernels: _malvar_filters computes the same from shared neighbour sums (tested).
_K_MHC_G = np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
                    dtype=np.float32) / 8
_K_MHC_ROW = np.array([[0, 0, .5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, .5, 0, 0]],
                      dtype=np.float32) / 8  # colour of the horizontal neighbours at a G site
_K_MHC_COL = _K_MHC_ROW.T.copy()  # colour of the vertical neighbours at a G site
_K_MHC_DIAG = np.array([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0],
                        [0, 0, -1.5, 0, 0]], dtype=np.float32) / 8  # R at B and B at R


def _corr(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    # 'mirror' (d c b | a b c d | c b a) keeps the 2-periodic CFA phase across the border
    return ndimage.correlate(x, k, mode="mirror")


_sep121 = demosaic_more.sep121  # the bilinear R/B kernel, mirror borders


def _malvar_filters(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four Malvar–He–Cutler 5×5 filters applied to the whole mosaic, computed from
    shared neighbour sums (same result as correlating with ``_K_MHC_*``, mirror borders)."""
    p = np.pad(raw, 2, mode="reflect")
    h, w = raw.shape

    def sh(dy: int, dx: int) -> np.ndarray:
        return p[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]

    c = raw
    h1 = sh(0, -1) + sh(0, 1)
    v1 = sh(-1, 0) + sh(1, 0)
    h2 = sh(0, -2) + sh(0, 2)
    v2 = sh(-2, 0) + sh(2, 0)
    d = sh(-1, -1) + sh(-1, 1) + sh(1, -1) + sh(1, 1)
    k_g = (4 * c + 2 * (h1 + v1) - (h2 + v2)) * np.float32(1 / 8)
    k_row = (5 * c + 4 * h1 - h2 - d + 0.5 * v2) * np.float32(1 / 8)
    k_col = (5 * c + 4 * v1 - v2 - d + 0.5 * h2) * np.float32(1 / 8)
    k_diag = (6 * c + 2 * d - 1.5 * (h2 + v2)) * np.float32(1 / 8)
    return k_g, k_row, k_col, k_diag


def demosaic(raw: np.ndarray, pattern: str, method: str) -> np.ndarray:
    """Reconstruct [3, H, W] from a Bayer mosaic [H, W] (H, W even).

    ``bilinear``: each colour averaged from its nearest samples. ``malvar``: Malvar–He–Cutler
    gradient-corrected linear filters (5×5). ``hamilton_adams``: edge-directed — green
    interpolated along the direction (horizontal or vertical) of the smaller gradient with a
    Laplacian correction, red and blue as bilinear colour differences to green. ``ahd``
    (adaptive homogeneity-directed) and ``frequency`` (Alleysson's luminance / chrominance
    demultiplexing): :mod:`camsim.synth.demosaic`.
    """
    _check_pattern(pattern)
    if method not in ALL_DEMOSAIC_METHODS:
        raise ValueError(f"demosaic: unknown method {method!r}; choose one of {list(ALL_DEMOSAIC_METHODS)}")
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
        raise ValueError(f"raw: must be a 2-D mosaic with even sides, got shape {raw.shape}")
    cmap = cfa_channel_map(pattern, raw.shape)
    is_r, is_g, is_b = cmap == 0, cmap == 1, cmap == 2
    if method == "bilinear":
        return np.stack([_sep121(raw * is_r), _corr(raw * is_g, _K_G_BIL), _sep121(raw * is_b)])
    if method == "malvar":
        r_rows = np.zeros_like(is_g)
        r_rows[:] = is_r.any(axis=1, keepdims=True)  # rows that hold R sites
        g_in_r_row, g_in_b_row = is_g & r_rows, is_g & ~r_rows
        k_g, k_row, k_col, k_diag = _malvar_filters(raw)
        g = np.where(is_g, raw, k_g)
        r = np.select([is_r, g_in_r_row, g_in_b_row], [raw, k_row, k_col], k_diag)
        b = np.select([is_b, g_in_b_row, g_in_r_row], [raw, k_row, k_col], k_diag)
        return np.stack([r, g, b]).astype(np.float32, copy=False)
    if method == "hamilton_adams":
        return demosaic_more.hamilton_adams(raw, is_r, is_g, is_b)
    return demosaic_more.METHODS[method](raw, is_r, is_g, is_b)


# ---------------------------------------------------------------------- colour and tone

def apply_colour_matrix(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """out[i] = Σ_j matrix[i, j] · rgb[j] for planar [3, H, W] (plain numpy, no BLAS threads)."""
    m = np.asarray(matrix, dtype=np.float32)
    out = np.empty(rgb.shape, dtype=np.float32)
    for i in range(3):
        np.multiply(rgb[0], m[i, 0], out=out[i])
        out[i] += m[i, 1] * rgb[1]
        out[i] += m[i, 2] * rgb[2]
    return out


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 weighted sum of the planes, [H, W]."""
    return LUMA[0] * rgb[0] + LUMA[1] * rgb[1] + LUMA[2] * rgb[2]


def denoise(rgb: np.ndarray, luma_strength: float, chroma_sigma: float, luma_sigma: np.ndarray | float) -> np.ndarray:
    """Edge-preserving luma denoising and chroma smoothing, keeping luminance where only
    chroma is smoothed.

    Luma: one pass of a 3×3 bilateral-type filter (spatial weight exp(−|o|²/2), range weight
    1 / (1 + d²/h²), a Cauchy kernel) whose range scale h is ``luma_strength`` × the local
    noise σ of luma (``luma_sigma``, scalar or [H, W]), the correction added to all three
    channels. Chroma: the colour differences R−Y and B−Y are
    Gaussian-blurred with σ ``chroma_sigma`` px and G is solved so that Y is unchanged.
    """
    rgb = np.array(rgb, dtype=np.float32)
    y = luma(rgb)
    if luma_strength > 0:
        h_r = np.maximum(np.float32(luma_strength) * np.asarray(luma_sigma, dtype=np.float32), np.float32(1e-6))
        inv = np.float32(1.0) / (h_r * h_r)
        p = np.pad(y, 1, mode="reflect")
        hh, ww = y.shape
        num = np.zeros_like(y)  # centre: weight 1, difference 0
        den = np.ones_like(y)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                d = p[1 + dy:1 + dy + hh, 1 + dx:1 + dx + ww] - y
                wgt = d * d
                wgt *= inv
                wgt += np.float32(1.0)
                np.divide(np.float32(np.exp(-0.5 * (dy * dy + dx * dx))), wgt, out=wgt)
                den += wgt
                wgt *= d
                num += wgt
        corr = num / den
        rgb += corr[None]
        y = y + corr
    if chroma_sigma > 0:
        r = y + _gauss(rgb[0] - y, chroma_sigma)
        b = y + _gauss(rgb[2] - y, chroma_sigma)
        g = (y - LUMA[0] * r - LUMA[2] * b) / LUMA[1]
        rgb = np.stack([r, g, b])
    return rgb


TONE_LUT_SIZE = 65536


@functools.lru_cache(maxsize=128)
def tone_lut(gamma: float, contrast: float, n: int = TONE_LUT_SIZE) -> np.ndarray:
    """Tone curve sampled on ``n`` evenly spaced points of [0, 1]: y = x^(1/gamma) above a
    toe at x = 0.004 (linear below it, as in sRGB), then the S-curve
    y − contrast·sin(2πy)/(2π) (slope 1 + contrast at mid-grey, monotone for contrast < 1)."""
    x = np.linspace(0.0, 1.0, n)
    toe = 0.004
    y = np.where(x < toe, x * toe ** (1.0 / gamma - 1.0), np.maximum(x, toe) ** (1.0 / gamma))
    y = y - contrast * np.sin(2 * np.pi * y) / (2 * np.pi)
    y = y.astype(np.float32)
    y.flags.writeable = False
    return y


def tone_curve(rgb: np.ndarray, gamma: float, contrast: float) -> np.ndarray:
    """Apply :func:`tone_lut` to every value (linear input clipped to [0, 1]; 16-bit LUT)."""
    lut = tone_lut(gamma, contrast)
    idx = (np.clip(rgb, 0.0, 1.0) * np.float32(TONE_LUT_SIZE - 1) + np.float32(0.5)).astype(np.int32)
    return np.take(lut, idx)


def sharpen(rgb: np.ndarray, radius: float, amount: float) -> np.ndarray:
    """Unsharp mask on luma: Y + amount·(Y − G_radius * Y), the correction added to R, G, B."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if amount <= 0:
        return rgb.copy()
    y = luma(rgb)
    detail = y - _gauss(y, radius)
    return rgb + np.float32(amount) * detail[None]


_PIL_KERNELS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                "lanczos": Image.Resampling.LANCZOS}


def resample(rgb: np.ndarray, shape: tuple[int, int], kernel: str) -> np.ndarray:
    """Resize planar [3, H, W] to ``shape`` (H, W) with ``kernel`` (PIL, float; the kernel is
    widened when shrinking, i.e. antialiased)."""
    if kernel not in RESAMPLE_KERNELS:
        raise ValueError(f"resample_kernel: unknown kernel {kernel!r}; choose one of {list(RESAMPLE_KERNELS)}")
    rgb = np.asarray(rgb, dtype=np.float32)
    if tuple(rgb.shape[1:]) == tuple(shape):
        return rgb.copy()
    h, w = int(shape[0]), int(shape[1])
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p), mode="F").resize((w, h), _PIL_KERNELS[kernel]))
                     for p in rgb]).astype(np.float32, copy=False)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Planar [3, H, W] floats in [0, 1] to an interleaved [H, W, 3] uint8 image (rounded,
    clipped)."""
    return np.ascontiguousarray((np.clip(rgb, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
                                .transpose(1, 2, 0))


def encode_jpeg(img: np.ndarray, quality: int, subsampling: str) -> bytes:
    """Baseline JPEG (libjpeg-turbo, IJG quantisation tables scaled to ``quality``).

    Its forward DCT is TurboJPEG's default: the fast integer one below quality 96, the accurate one
    from 96 — simplejpeg 1.9's ``fastdct=False`` changes no byte. The makers' own tables go through
    Pillow's libjpeg, accurate at every quality (:func:`camsim.synth.photo.encode_photo`): the two
    paths differ in DCT rounding as well as in tables. Left so, for now: every rendered byte, and
    every figure, depends on it."""
    if not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ValueError(f"jpeg_quality: must be an integer in 1..100, got {quality!r}")
    if subsampling not in JPEG_SUBSAMPLINGS:
        raise ValueError(f"jpeg_subsampling: unknown value {subsampling!r}; choose one of {list(JPEG_SUBSAMPLINGS)}")
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return simplejpeg.encode_jpeg(img, quality=int(quality), colorspace="RGB", colorsubsampling=subsampling,
                                  fastdct=False)
