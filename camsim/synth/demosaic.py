"""Demosaicing algorithms beyond the linear ones in :mod:`camsim.synth.isp` (which dispatches
here): the directional green estimates shared by Hamilton–Adams and AHD, AHD itself, and a
frequency-domain method.

* ``ahd`` — adaptive homogeneity-directed demosaicing (Hirakawa & Parks, IEEE TIP 2005): a full
  horizontal and a full vertical interpolation, then, per pixel, the one whose neighbourhood is
  more *homogeneous* (more 4-neighbours within the luminance and chrominance tolerances, in a
  luma / colour-difference space instead of CIELab), counted over 3×3.
* ``frequency`` — Alleysson, Süsstrunk & Hérault (IEEE TIP 2005), "Linear demosaicing inspired
  by the human visual system": in the Fourier domain a Bayer mosaic is luminance at baseband
  plus chrominance modulated to (π, π), (π, 0) and (0, π); a 5×5 low-pass filter that rejects
  those carriers estimates luminance, and the remainder, demultiplexed by the CFA masks and
  interpolated, is each channel's chrominance.

All take a mosaic [H, W] float32 and bool CFA masks; mirror borders keep the CFA phase.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Alleysson et al. 2005, luminance estimation filter (/64): unit DC gain, zero gain at the
# chrominance carriers (π, π), (π, 0), (0, π)
_K_LUMA = np.array([[-2, 3, -6, 3, -2], [3, 4, 2, 4, 3], [-6, 2, 48, 2, -6], [3, 4, 2, 4, 3],
                    [-2, 3, -6, 3, -2]], dtype=np.float32) / 64
K_G_BIL = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4


def sep121(x: np.ndarray) -> np.ndarray:
    """Separable [1 2 1]/2 ⊗ [1 2 1]/2 (the bilinear R/B kernel) with mirror borders."""
    k = np.array([0.5, 1.0, 0.5], dtype=np.float32)
    return ndimage.correlate1d(ndimage.correlate1d(x, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")


def _shifter(x: np.ndarray, pad: int):
    p = np.pad(x, pad, mode="reflect")  # numpy 'reflect' == scipy 'mirror' (keeps CFA phase)
    h, w = x.shape

    def sh(dy: int, dx: int) -> np.ndarray:
        return p[pad + dy:pad + dy + h, pad + dx:pad + dx + w]

    return sh


def directional_green(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hamilton–Adams green estimates at every site: horizontal and vertical (neighbour mean plus
    a Laplacian correction of the site's own colour), and the two directions' gradients."""
    sh = _shifter(raw, 2)
    c = raw
    lap_h = 2 * c - sh(0, -2) - sh(0, 2)
    lap_v = 2 * c - sh(-2, 0) - sh(2, 0)
    g_h = 0.5 * (sh(0, -1) + sh(0, 1)) + 0.25 * lap_h
    g_v = 0.5 * (sh(-1, 0) + sh(1, 0)) + 0.25 * lap_v
    d_h = np.abs(sh(0, -1) - sh(0, 1)) + np.abs(lap_h)
    d_v = np.abs(sh(-1, 0) - sh(1, 0)) + np.abs(lap_v)
    return g_h, g_v, d_h, d_v


def _from_green(raw: np.ndarray, g: np.ndarray, is_r: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """R and B as bilinear colour differences to a full green plane: [3, H, W]."""
    r = g + sep121((raw - g) * is_r)
    b = g + sep121((raw - g) * is_b)
    return np.stack([r, g, b]).astype(np.float32, copy=False)


def hamilton_adams(raw: np.ndarray, is_r: np.ndarray, is_g: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """Edge-directed: green along the direction of the smaller gradient (both averaged on a tie)."""
    g_h, g_v, d_h, d_v = directional_green(raw)
    g_est = np.where(d_h < d_v, g_h, np.where(d_v < d_h, g_v, 0.5 * (g_h + g_v)))
    g = np.where(is_g, raw, g_est).astype(np.float32)
    return _from_green(raw, g, is_r, is_b)


def ahd(raw: np.ndarray, is_r: np.ndarray, is_g: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """Adaptive homogeneity-directed demosaicing (Hirakawa & Parks 2005; see module docstring)."""
    g_h, g_v, _, _ = directional_green(raw)
    cand = [_from_green(raw, np.where(is_g, raw, g).astype(np.float32), is_r, is_b) for g in (g_h, g_v)]
    lum, chroma = [], []
    for rgb in cand:
        y = 0.25 * rgb[0] + 0.5 * rgb[1] + 0.25 * rgb[2]
        lum.append(y)
        chroma.append((rgb[0] - y, rgb[2] - y))
    # tolerances: the smaller of the two directions' largest step along their own direction
    steps = []
    for d, (dy, dx) in enumerate(((0, 1), (1, 0))):
        sh = _shifter(lum[d], 1)
        steps.append(np.maximum(np.abs(lum[d] - sh(dy, dx)), np.abs(lum[d] - sh(-dy, -dx))))
    eps_l = np.minimum(*steps)
    steps = []
    for d, (dy, dx) in enumerate(((0, 1), (1, 0))):
        a, b = chroma[d]
        sa, sb = _shifter(a, 1), _shifter(b, 1)
        steps.append(np.maximum((a - sa(dy, dx)) ** 2 + (b - sb(dy, dx)) ** 2,
                                (a - sa(-dy, -dx)) ** 2 + (b - sb(-dy, -dx)) ** 2))
    eps_c = np.minimum(*steps)
    homog = []
    for d in range(2):
        sl, (a, b) = _shifter(lum[d], 1), chroma[d]
        sa, sb = _shifter(a, 1), _shifter(b, 1)
        count = np.zeros(raw.shape, dtype=np.float32)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            ok = (np.abs(lum[d] - sl(dy, dx)) <= eps_l) & ((a - sa(dy, dx)) ** 2 + (b - sb(dy, dx)) ** 2 <= eps_c)
            count += ok
        homog.append(ndimage.uniform_filter(count, 3, mode="mirror"))
    h_h, h_v = homog
    out = np.where(h_h > h_v, cand[0], np.where(h_v > h_h, cand[1], 0.5 * (cand[0] + cand[1])))
    return out.astype(np.float32, copy=False)


def frequency(raw: np.ndarray, is_r: np.ndarray, is_g: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """Frequency-domain demosaicing (Alleysson et al. 2005; see module docstring)."""
    lum = ndimage.correlate(raw, _K_LUMA, mode="mirror")
    chroma = raw - lum
    r = lum + sep121(chroma * is_r)
    g = lum + ndimage.correlate(chroma * is_g, K_G_BIL, mode="mirror")
    b = lum + sep121(chroma * is_b)
    return np.stack([r, g, b]).astype(np.float32, copy=False)


METHODS = {"ahd": ahd, "frequency": frequency}
"""The algorithms :func:`camsim.synth.isp.demosaic` finds here (beyond its own linear ones)."""
