"""The patch grid of a suspect image and its mapping back to pixels.

The splicing demonstration (docs/method.md, "Splicing demonstration") cuts the image into
``patch``-sized squares with 50 % overlap (``stride = patch // 2``). Everything in
``camsim.localize`` refers to a patch by its top-left corner ``(y, x)`` in pixels.

Grid layout (per axis, rows and columns alike):

* starts are ``0, s, 2s, ...`` with ``s = stride``; when ``stride`` is a multiple of
  ``align`` (8 by default: the JPEG block grid and any CFA phase) every regular start is a
  multiple of 8, so every patch sees the same JPEG / CFA phase as the training patches.
  When ``stride`` is not a multiple of ``align`` but at least ``align``, each start is
  rounded *down* to a multiple of ``align`` (duplicates dropped); below ``align`` no
  alignment is possible and the plain multiples of ``stride`` are used.
* if the regular starts leave pixels at the bottom / right uncovered, one more start is
  added at ``length - patch`` rounded *down* to a multiple of ``align`` (``cover_border=True``,
  the default) — whenever the regular starts are aligned. Every patch then keeps the JPEG /
  CFA phase of the training patches (issue 17: an off-grid border patch was called
  "different" 57–71 % of the time on authentic photos); the last
  ``(length - patch) mod align < align`` pixels stay uncovered (NaN in the heatmap,
  shown as undecided). ``cover_border=False`` drops that patch: the last ``< stride``
  pixels stay uncovered. Below ``align`` (``stride < align``) nothing is aligned and the
  border start is ``length - patch`` exactly, covering every pixel.

Positions are listed row-major (``y`` outer, ``x`` inner); ``grid_shape`` is
``(rows, cols)`` so ``values.reshape(grid_shape)`` lays per-patch values out as the grid.
Cutting and entropy are the data layer's (``camsim.data.patches.cut_patches`` /
``patch_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class LocalizationError(ValueError):
    """Bad input to the localisation engine; the message says which field and why.

    Batch callers write ``str(err)`` into the image's CSV row.
    """


class PhotoError(LocalizationError):
    """The photo itself cannot be analysed (smaller than one patch, too few decidable patches) —
    not a setting or a caller's mistake: a caller that knows the file names it in the message."""


def _axis_starts(length: int, patch: int, stride: int, align: int, cover_border: bool) -> np.ndarray:
    """Patch starts along one axis of ``length`` pixels (see module docstring)."""
    last = length - patch
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    aligned = align > 1 and stride >= align
    if aligned:
        starts = np.unique((starts // align) * align)
    border = (last // align) * align if aligned else last
    if cover_border and starts[-1] < border:
        starts = np.append(starts, border)
    return starts


def patch_grid(height: int, width: int, patch: int, stride: int, align: int = 8,
               cover_border: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners of the analysis patches of a ``height`` × ``width`` image.

    Returns ``positions`` (int64 ``[N, 2]`` of ``(y, x)``, row-major) and
    ``grid_shape = (rows, cols)`` with ``rows * cols == N``. See the module docstring for
    the 8-pixel alignment and the border rule. Raises :class:`LocalizationError` when the
    image is smaller than one patch or a size is not positive.
    """
    for name, v in (("patch", patch), ("stride", stride), ("align", align)):
        if int(v) != v or v < 1:
            raise LocalizationError(f"{name} must be a positive integer; got {v!r}")
    if height < patch or width < patch:
        raise PhotoError(
            f"image is smaller than one patch: image {height}x{width} (HxW), patch {patch}x{patch}")
    ys = _axis_starts(int(height), int(patch), int(stride), int(align), cover_border)
    xs = _axis_starts(int(width), int(patch), int(stride), int(align), cover_border)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], axis=1)
    return positions, (len(ys), len(xs))


@dataclass(frozen=True)
class CellMap:
    """A pixel map stored on its cells: the rectangles between consecutive patch edges, inside
    which every pixel is covered by the same patches and so has one value.

    ``values`` float64 ``[len(ys) - 1, len(xs) - 1]`` (NaN: no finite patch value); ``ys`` /
    ``xs`` the cell edges, ``0 … H`` and ``0 … W``. A 12-MP photo with 64-px patches at
    stride 32 has ~4·10⁴ cells against 1.2·10⁷ pixels, so maps are kept like this and expanded
    only when asked (:meth:`pixels`, :meth:`sample`).
    """

    values: np.ndarray
    ys: np.ndarray
    xs: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return int(self.ys[-1]), int(self.xs[-1])

    def pixels(self) -> np.ndarray:
        """The full map ``[H, W]`` (each cell's value repeated over its pixels)."""
        return np.repeat(np.repeat(self.values, np.diff(self.ys), axis=0), np.diff(self.xs), axis=1)

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The map at the pixels ``rows`` × ``cols`` (int arrays): ``[len(rows), len(cols)]``,
        equal to ``pixels()[np.ix_(rows, cols)]`` without building the full map."""
        iy = np.searchsorted(self.ys, np.asarray(rows), side="right") - 1
        ix = np.searchsorted(self.xs, np.asarray(cols), side="right") - 1
        return self.values[np.ix_(iy, ix)]

    def area_mean(self, fn: Any = None) -> float:
        """Mean over the image's pixels of ``fn(values)`` (default the values; NaN cells count
        as NaN), weighted by cell area: ``pixels().mean()`` without building the map."""
        v = self.values if fn is None else fn(self.values)
        area = np.outer(np.diff(self.ys), np.diff(self.xs))
        return float((v * area).sum() / area.sum())


def patch_cell_map(values: np.ndarray, positions: np.ndarray, patch: int, shape: tuple[int, int]) -> CellMap:
    """Per-patch ``values`` ``[N]`` spread over the pixels each patch covers, as a :class:`CellMap`:
    the average of the finite values of all patches covering a pixel (a NaN value marks an
    undecidable patch and is skipped); NaN where no patch with a finite value does.

    2-D difference arrays (+v at the corner, −v one past each side, cumsum twice) on the
    compressed grid of patch edges: cost O(N + cells), independent of the pixel count.
    """
    values, pos = _checked(values, positions)
    h, w = int(shape[0]), int(shape[1])
    ok = np.isfinite(values)
    v, pos = values[ok], pos[ok]
    y0, x0 = pos[:, 0], pos[:, 1]
    y1, x1 = np.minimum(y0 + patch, h), np.minimum(x0 + patch, w)
    by = np.unique(np.concatenate([[0, h], y0, y1]))
    bx = np.unique(np.concatenate([[0, w], x0, x1]))
    iy0, iy1 = np.searchsorted(by, y0), np.searchsorted(by, y1)
    ix0, ix1 = np.searchsorted(bx, x0), np.searchsorted(bx, x1)
    acc = np.zeros((len(by), len(bx)), dtype=np.float64)
    cnt = np.zeros((len(by), len(bx)), dtype=np.int64)
    for arr, val in ((acc, v), (cnt, np.ones_like(y0))):
        np.add.at(arr, (iy0, ix0), val)
        np.add.at(arr, (iy0, ix1), -val)
        np.add.at(arr, (iy1, ix0), -val)
        np.add.at(arr, (iy1, ix1), val)
    total = acc.cumsum(0).cumsum(1)[:-1, :-1]
    count = cnt.cumsum(0).cumsum(1)[:-1, :-1]
    cells = np.full(total.shape, np.nan)
    np.divide(total, count, out=cells, where=count > 0)
    return CellMap(cells, by.astype(np.int64), bx.astype(np.int64))


def _checked(values: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64).ravel()
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    if values.shape[0] != positions.shape[0]:
        raise LocalizationError(
            f"values has {values.shape[0]} entries but positions has {positions.shape[0]} patches")
    return values, positions


def patch_map_to_pixels(values: np.ndarray, positions: np.ndarray, patch: int,
                        shape: tuple[int, int], reduce: str = "mean") -> np.ndarray:
    """Spread per-patch ``values`` ``[N]`` over the pixels each patch covers → float64 ``[H, W]``.

    ``reduce="mean"``: the average of the finite values of all patches covering a pixel
    (a NaN value marks an undecidable patch and is skipped; :func:`patch_cell_map` expanded);
    ``"max"`` / ``"min"``: the extreme instead. Pixels covered by no patch with a finite
    value are NaN.
    """
    if reduce == "mean":
        return patch_cell_map(values, positions, patch, shape).pixels()
    values, positions = _checked(values, positions)
    h, w = int(shape[0]), int(shape[1])
    ok = np.isfinite(values)
    v, pos = values[ok], positions[ok]
    if reduce in ("max", "min"):
        fill, op = (-np.inf, np.maximum) if reduce == "max" else (np.inf, np.minimum)
        out = np.full((h, w), fill)
        for (y, x), val in zip(pos, v):
            view = out[y:y + patch, x:x + patch]
            op(view, val, out=view)
        out[np.isinf(out)] = np.nan
        return out
    raise LocalizationError(f"reduce must be 'mean', 'max' or 'min'; got {reduce!r}")


__all__ = ["LocalizationError", "PhotoError", "CellMap", "patch_grid", "patch_cell_map", "patch_map_to_pixels"]
