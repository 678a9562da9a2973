"""Where a patch is cut: the aligned patch grid, patch entropy, and per-image extraction.

Pure functions (plus :func:`extract_image_patches`, which reads one file). Patches are
green-channel uint8 arrays ``[N, P, P]`` — or, for a network with ``model.in_channels=3``,
RGB arrays ``[N, 3, P, P]`` cut at the same cells; the entropy filter reads the green
channel either way. Positions are top-left corners ``(y, x)``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from camsim.data.io import ImageReadError, read_green, read_rgb

#: the input channels a network can take: 1 (the green channel, the paper's) or 3 (RGB)
CHANNELS = (1, 3)


def patch_entropy(patches: np.ndarray) -> np.ndarray:
    """Entropy h = −Σ_k p_k ln p_k (nats) of each uint8 patch (docs/method.md, "Patch entropy").

    ``patches``: ``[N, P, P]`` (or ``[N, ...]``) uint8. A flat patch has h = 0; a patch whose
    pixels are spread uniformly over all 256 values has h = ln 256.
    """
    patches = np.asarray(patches)
    if patches.dtype != np.uint8:
        raise ValueError(f"patch_entropy needs uint8 patches, got {patches.dtype}")
    n = patches.shape[0]
    if n == 0:
        return np.zeros(0)
    flat = patches.reshape(n, -1)
    # one bincount over (patch index * 256 + value): no Python loop over patches
    counts = np.bincount((np.arange(n, dtype=np.int64)[:, None] * 256 + flat).ravel(),
                         minlength=n * 256).reshape(n, 256)
    p = counts / flat.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def grid_positions(height: int, width: int, size: int, align: int, rng: np.random.Generator) -> np.ndarray:
    """All cells of a non-overlapping ``size`` grid over an image, as ``[K, 2]`` (y, x).

    The grid origin is a random offset that is a multiple of ``align`` (8 keeps the JPEG
    8×8 luma block grid and the 2×2 CFA phase of every patch identical; the 16-px chroma blocks of
    4:2:0 / 4:2:2 files need 16, which changed no real-photo figure: docs/experiments.md, "Patches
    on the chroma grid"), so patch corners are multiples of ``align`` too when ``size`` is. Cells
    are returned in random order.
    """
    if size <= 0 or align <= 0:
        raise ValueError(f"size and align must be positive, got size={size}, align={align}")
    spare_y, spare_x = height - size, width - size
    if spare_y < 0 or spare_x < 0:
        return np.zeros((0, 2), dtype=np.int64)
    oy = align * int(rng.integers(0, (spare_y % size) // align + 1))
    ox = align * int(rng.integers(0, (spare_x % size) // align + 1))
    ys = np.arange(oy, height - size + 1, size)
    xs = np.arange(ox, width - size + 1, size)
    cells = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    return cells[rng.permutation(len(cells))].astype(np.int64)


def cut_patches(image: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Cut patches with top-left corners ``positions``: ``[N, size, size]`` from a 2-D image,
    ``[N, C, size, size]`` from an ``[H, W, C]`` one."""
    if image.ndim == 3:
        return np.stack([cut_patches(image[..., c], positions, size) for c in range(image.shape[2])], axis=1)
    if len(positions) == 0:
        return np.zeros((0, size, size), dtype=image.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    return np.ascontiguousarray(windows[positions[:, 0], positions[:, 1]])


def green_of(patches: np.ndarray) -> np.ndarray:
    """The green channel ``[N, P, P]`` of green (``[N, P, P]``) or RGB (``[N, 3, P, P]``) patches."""
    return patches if patches.ndim == 3 else patches[:, 1]


def recompress(patches: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Each uint8 patch encoded as a baseline JPEG at its IJG quality ``qualities[n]`` (Pillow /
    libjpeg) and decoded: a second, grid-aligned compression of patches cut on the image's 8×8
    JPEG grid (``patches.align`` a multiple of 8). Green patches ``[N, P, P]`` are saved as
    greyscale JPEGs, RGB patches ``[N, 3, P, P]`` as colour JPEGs (YCbCr, chroma not subsampled)."""
    patches, qualities = np.asarray(patches), np.asarray(qualities)
    rgb = patches.ndim == 4 and patches.shape[1] == 3
    if patches.dtype != np.uint8 or not (patches.ndim == 3 or rgb):
        raise ValueError(f"patches: uint8 [N, P, P] or [N, 3, P, P] expected, got {patches.dtype} {patches.shape}")
    if len(qualities) != len(patches) or (len(qualities) and not (qualities.min() >= 1 and qualities.max() <= 100)):
        raise ValueError(f"qualities: one IJG quality 1-100 per patch expected ({len(patches)} patches, "
                         f"{len(qualities)} qualities)")
    out = np.empty_like(patches)
    for n, (p, q) in enumerate(zip(patches, qualities)):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0)) if rgb else p).save(
            buf, format="JPEG", quality=int(q), subsampling=0)
        dec = np.asarray(Image.open(buf).convert("RGB" if rgb else "L"))
        out[n] = dec.transpose(2, 0, 1) if rgb else dec
    return out


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from strings/ints, the same in every process and Python version."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class ImagePatches:
    """What one image gave: kept patches, their corners and entropies, and what was dropped."""

    path: str
    patches: np.ndarray  # [n, P, P] uint8 (green) or [n, 3, P, P] (RGB)
    positions: np.ndarray  # [n, 2] int64 (y, x)
    entropy: np.ndarray  # [n] float64
    low_entropy: int  # cells dropped by the entropy filter
    error: str | None = None  # set when the file could not be used; patches is then empty


def extract_image_patches(path: str | Path, size: int, align: int, min_entropy: float, cap: int,
                          seed: int, max_pixels: int, channels: int = 1) -> ImagePatches:
    """Decode one image once, cut its grid cells in random order, keep up to ``cap`` with h > min_entropy
    (h of the green channel). ``channels``: 1 gives green patches ``[n, P, P]``, 3 RGB ``[n, 3, P, P]``
    at the same cells.

    A file that cannot be used (corrupt, truncated, too large, smaller than one patch)
    yields no patches and ``error`` naming the reason; it never raises.
    """
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    path = str(path)
    empty = np.zeros((0, size, size) if channels == 1 else (0, channels, size, size), np.uint8)
    try:
        image = (read_green if channels == 1 else read_rgb)(path, max_pixels=max_pixels)
    except ImageReadError as err:
        return ImagePatches(path, empty, np.zeros((0, 2), np.int64), np.zeros(0), 0, err.reason)
    if image.shape[0] < size or image.shape[1] < size:
        return ImagePatches(path, empty, np.zeros((0, 2), np.int64), np.zeros(0), 0,
                            f"image {image.shape[1]}x{image.shape[0]} is smaller than one {size}x{size} patch")
    rng = np.random.default_rng(seed)
    cells = grid_positions(image.shape[0], image.shape[1], size, align, rng)
    green = image if channels == 1 else np.ascontiguousarray(image[..., 1])
    patches = cut_patches(green, cells, size)
    h = patch_entropy(patches)
    keep = h > min_entropy
    kept = np.flatnonzero(keep)[:cap]
    patches = patches[kept] if channels == 1 else cut_patches(image, cells[kept], size)
    return ImagePatches(path, patches, cells[kept], h[kept], int((~keep).sum()))
