"""Pipeline stages of the realism traits (``data.synth``), pure numpy like :mod:`camsim.synth.isp`;
:func:`camsim.synth.render.render_camera_image` applies each one only when its camera field is set.

* lens: :func:`vignette` (radial illumination fall-off) and :func:`lateral_ca` (lateral chromatic
  aberration: the R and B images magnified slightly differently from G);
* sensor fixed patterns of one device (:func:`sensor_patterns`): PRNU, a per-pixel gain
  ``1 + σ·K`` on the signal before shot noise, and row / column offsets in the read-out chain
  (scaled like read noise, so they show in shadows and at high ISO);
* auto white balance (:func:`auto_wb_gains`): per photo, the gains move from the daylight preset
  towards the photo's grey-world estimate, as real AWB does (and fails on colourful scenes).
"""

from __future__ import annotations

import functools

import numpy as np

TAG_PATTERN = 0x46504E  # "FPN"


@functools.lru_cache(maxsize=16)
def radius2(shape: tuple[int, int]) -> np.ndarray:
    """[H, W] squared distance from the frame centre over that of the corner (0 centre, 1 corner)."""
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / np.float32((h - 1) / 2 or 1)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / np.float32((w - 1) / 2 or 1)
    ar = np.float32(w / max(h, 1))
    out = ((y[:, None] ** 2) + (x[None, :] * ar) ** 2) / (1 + ar * ar)
    out.flags.writeable = False
    return out


def vignette(rgb: np.ndarray, strength: float) -> np.ndarray:
    """Relative illumination (1 − strength)^(r²) of normalised radius r: 1 at the centre,
    1 − ``strength`` at the corners (smooth radial fall-off of real lenses)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if strength <= 0:
        return rgb
    gain = np.exp(np.float32(np.log1p(-strength)) * radius2(rgb.shape[1:]))
    return rgb * gain[None]


def lateral_ca(rgb: np.ndarray, shift_r: float, shift_b: float) -> np.ndarray:
    """Lateral chromatic aberration: R and B planes magnified about the centre so that a corner
    point moves ``shift_r`` / ``shift_b`` sensor px radially against G (bilinear; a position
    outside the frame takes the nearest edge pixel)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if shift_r == 0 and shift_b == 0:
        return rgb
    h, w = rgb.shape[1:]
    corner = float(np.hypot((h - 1) / 2, (w - 1) / 2)) or 1.0
    out = rgb.copy()
    for c, shift in ((0, shift_r), (2, shift_b)):
        if shift:
            s = 1.0 / (1.0 + shift / corner)  # output p samples the input at centre + s·(p − centre)
            i0, wy = _taps(h, s)
            j0, wx = _taps(w, s)
            rows = rgb[c][i0] * (1 - wy)[:, None] + rgb[c][i0 + 1] * wy[:, None]  # separable bilinear
            out[c] = rows[:, j0] * (1 - wx)[None, :] + rows[:, j0 + 1] * wx[None, :]
    return out


def _taps(n: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and weight of the samples (n−1)/2 + s·(i − (n−1)/2), clamped inside."""
    pos = np.clip((n - 1) / 2 + s * (np.arange(n) - (n - 1) / 2), 0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    return i0, (pos - i0).astype(np.float32)


@functools.lru_cache(maxsize=128)
def sensor_patterns(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One device's fixed patterns for a sensor of ``shape``: unit-σ row offsets [H], column
    offsets [W] and PRNU [H, W] (read-only; the same for every photo of that device)."""
    rng = np.random.default_rng([int(seed), TAG_PATTERN, int(shape[0]), int(shape[1])])
    out = (rng.standard_normal(shape[0], dtype=np.float32), rng.standard_normal(shape[1], dtype=np.float32),
           rng.standard_normal(shape, dtype=np.float32))
    for a in out:
        a.flags.writeable = False
    return out


def prnu(raw: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Photo-response non-uniformity: the signal times the device's gain pattern 1 + σ·K."""
    if sigma <= 0:
        return raw
    k = sensor_patterns(seed, raw.shape)[2]
    return raw * (np.float32(1.0) + np.float32(sigma) * k)


def fixed_pattern(raw: np.ndarray, row_sigma: float, column_sigma: float, seed: int, full_well: float,
                  gain: float) -> np.ndarray:
    """Row and column offsets of the read-out chain (σ in e⁻, amplified by the analogue gain
    like read noise), in fractions of the white level."""
    if row_sigma <= 0 and column_sigma <= 0:
        return raw
    rows, cols, _ = sensor_patterns(seed, raw.shape)
    scale = np.float32(gain / full_well)
    return raw + scale * (np.float32(row_sigma) * rows[:, None] + np.float32(column_sigma) * cols[None, :])


def auto_wb_gains(raw: np.ndarray, cmap: np.ndarray, preset: tuple[float, float, float],
                  strength: float) -> tuple[float, float, float]:
    """White-balance gains of one photo: ``preset`` moved towards the grey-world gains (channel
    means equal after balance) by ``strength`` in log space, within ×/÷ 1.5 of the preset."""
    p = np.asarray(preset, dtype=np.float64)
    if strength <= 0:
        return tuple(float(v) for v in p)  # type: ignore[return-value]
    pos = np.maximum(raw, 0.0)
    means = np.array([float(pos[cmap == c].mean()) for c in range(3)]) * p
    means = np.maximum(means, 1e-6)
    corr = np.clip((means[1] / means) ** strength, 1 / 1.5, 1.5)
    corr[1] = 1.0
    return tuple(float(v) for v in p * corr)  # type: ignore[return-value]


__all__ = ["vignette", "lateral_ca", "sensor_patterns", "prnu", "fixed_pattern", "auto_wb_gains"]
