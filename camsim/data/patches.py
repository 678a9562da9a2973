"""Where a patch is cut: the aligned patch grid, patch entropy, and per-image extraction.

Pure functions (plus :func:`extract_image_patches`, which reads one file). Patches are
green-channel uint8 arrays ``[N, P, P]``; positions are top-left corners ``(y, x)``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from camsim.data.io import ImageReadError, read_green


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
    8×8 block grid and the 2×2 CFA phase of every patch identical), so patch corners are
    multiples of ``align`` too when ``size`` is. Cells are returned in random order.
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
    """Cut ``[N, size, size]`` patches with top-left corners ``positions`` from a 2-D image."""
    if len(positions) == 0:
        return np.zeros((0, size, size), dtype=image.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    return np.ascontiguousarray(windows[positions[:, 0], positions[:, 1]])


def recompress(patches: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Each uint8 patch ``[N, P, P]`` encoded as a greyscale baseline JPEG at its IJG quality
    ``qualities[n]`` (Pillow / libjpeg) and decoded: a second, grid-aligned compression of patches
    cut on the image's 8×8 JPEG grid (``patches.align`` a multiple of 8)."""
    patches, qualities = np.asarray(patches), np.asarray(qualities)
    if patches.dtype != np.uint8 or patches.ndim != 3:
        raise ValueError(f"patches: uint8 [N, P, P] expected, got {patches.dtype} {patches.shape}")
    if len(qualities) != len(patches) or (len(qualities) and not (qualities.min() >= 1 and qualities.max() <= 100)):
        raise ValueError(f"qualities: one IJG quality 1-100 per patch expected ({len(patches)} patches, "
                         f"{len(qualities)} qualities)")
    out = np.empty_like(patches)
    for n, (p, q) in enumerate(zip(patches, qualities)):
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="JPEG", quality=int(q), subsampling=0)
        out[n] = np.asarray(Image.open(buf).convert("L"))
    return out


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from strings/ints, the same in every process and Python version."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class ImagePatches:
    """What one image gave: kept patches, their corners and entropies, and what was dropped."""

    path: str
    patches: np.ndarray  # [n, P, P] uint8
    positions: np.ndarray  # [n, 2] int64 (y, x)
    entropy: np.ndarray  # [n] float64
    low_entropy: int  # cells dropped by the entropy filter
    error: str | None = None  # set when the file could not be used; patches is then empty


def extract_image_patches(path: str | Path, size: int, align: int, min_entropy: float, cap: int,
                          seed: int, max_pixels: int) -> ImagePatches:
    """Decode one image once, cut its grid cells in random order, keep up to ``cap`` with h > min_entropy.

    A file that cannot be used (corrupt, truncated, too large, smaller than one patch)
    yields no patches and ``error`` naming the reason; it never raises.
    """
    path = str(path)
    empty = np.zeros((0, size, size), np.uint8)
    try:
        green = read_green(path, max_pixels=max_pixels)
    except ImageReadError as err:
        return ImagePatches(path, empty, np.zeros((0, 2), np.int64), np.zeros(0), 0, err.reason)
    if green.shape[0] < size or green.shape[1] < size:
        return ImagePatches(path, empty, np.zeros((0, 2), np.int64), np.zeros(0), 0,
                            f"image {green.shape[1]}x{green.shape[0]} is smaller than one {size}x{size} patch")
    rng = np.random.default_rng(seed)
    cells = grid_positions(green.shape[0], green.shape[1], size, align, rng)
    patches = cut_patches(green, cells, size)
    h = patch_entropy(patches)
    keep = h > min_entropy
    kept = np.flatnonzero(keep)[:cap]
    return ImagePatches(path, patches[kept], cells[kept], h[kept], int((~keep).sum()))
