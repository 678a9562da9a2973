"""Pairs of the transfer evaluation, drawn per stratum so no model or photo swamps the figures.

Patches are rows of a table ordered by photo (``photo_start[p] : photo_start[p] + photo_count[p]``
are photo p's rows); photos belong to camera models (``model_of_photo``). Categories:

patch level (one pair = two patches):
  ``same_photo``   two patches of one photo                 — ``per_photo`` pairs per photo
  ``other_photo``  patches of two photos of one model        — ``per_photo_pair`` per photo pair,
                   at most ``photo_pairs_per_model`` photo pairs per model (drawn)
  ``diff_model``   patches of two models                     — ``per_model_pair`` per model pair,
                   each side a photo of its model drawn uniformly, then a patch of that photo

image level (one decision per pair of photos, from ``patch_pairs`` patch pairs):
  ``halves``       the top and bottom halves of one photo
  ``other_photo``  two photos of one model (the photo pairs as above)
  ``diff_model``   two photos of two models, ``photo_pairs_per_model_pair`` per model pair

Every draw takes the generator passed in (seeded by the caller). Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from camsim.eval.bootstrap import DIFF_MODEL, SAME_MODEL, SAME_PHOTO

PATCH_CATEGORIES = ("same_photo", "other_photo", "diff_model")
IMAGE_CATEGORIES = ("halves", "other_photo", "diff_model")
LINK = {"same_photo": SAME_PHOTO, "halves": SAME_PHOTO, "other_photo": SAME_MODEL, "diff_model": DIFF_MODEL}


@dataclass
class PhotoLayout:
    """Where each photo's patches are, and which model each photo belongs to."""

    photo_start: np.ndarray  # [n_photos]
    photo_count: np.ndarray  # [n_photos]
    model_of_photo: np.ndarray  # [n_photos] model index

    @classmethod
    def from_patches(cls, photo_of_patch: np.ndarray, model_of_photo: np.ndarray) -> PhotoLayout:
        """From the photo id of each patch row (rows must be grouped by photo, ids ascending)."""
        pop = np.asarray(photo_of_patch, dtype=np.int64)
        if len(pop) and np.any(np.diff(pop) < 0):
            raise ValueError("photo_of_patch: patch rows must be ordered by photo")
        n = len(model_of_photo)
        count = np.bincount(pop, minlength=n)
        start = np.r_[0, np.cumsum(count)[:-1]].astype(np.int64)
        return cls(start, count, np.asarray(model_of_photo, dtype=np.int64))

    def photos_of(self, model: int) -> np.ndarray:
        """Photos of ``model`` that have at least one patch."""
        return np.flatnonzero((self.model_of_photo == model) & (self.photo_count > 0))

    def draw(self, photos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn patch row of each given photo."""
        photos = np.asarray(photos, dtype=np.int64)
        return self.photo_start[photos] + (rng.random(len(photos)) * self.photo_count[photos]).astype(np.int64)


@dataclass
class Pairs:
    """Pairs of patch rows with their category (an index into ``categories``)."""

    i: np.ndarray
    j: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]

    @classmethod
    def build(cls, parts: dict[str, list[tuple[np.ndarray, np.ndarray]]], categories: tuple[str, ...]) -> Pairs:
        i, j, c = [], [], []
        for k, name in enumerate(categories):
            for a, b in parts.get(name, []):
                i.append(a)
                j.append(b)
                c.append(np.full(len(a), k, np.int64))
        cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
        return cls(cat(i), cat(j), cat(c), categories)


def model_photo_pairs(layout: PhotoLayout, model: int, cap: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pairs of distinct photos of one model (with patches): all of them, or ``cap`` drawn — by
    their index in ``combinations(photos, 2)``'s order, decoded without listing the pairs (a model
    of 5,000 photos has 12.5 million)."""
    photos = layout.photos_of(model)
    n = len(photos)
    total = n * (n - 1) // 2
    if total <= cap:
        return list(combinations(photos.tolist(), 2))
    keep = np.sort(rng.choice(total, size=cap, replace=False))
    first = np.arange(n, dtype=np.int64)
    start = first * n - first * (first + 1) // 2      # index of the first pair (i, i + 1)
    i = np.searchsorted(start, keep, side="right") - 1
    j = keep - start[i] + i + 1
    return list(zip(photos[i].tolist(), photos[j].tolist()))


def sample_patch_pairs(layout: PhotoLayout, n_models: int, per_photo: int, per_photo_pair: int,
                       photo_pairs_per_model: int, per_model_pair: int, rng: np.random.Generator) -> Pairs:
    """Patch-level pairs of the three categories (module docstring)."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for p in np.flatnonzero(layout.photo_count >= 2):
        n, s = int(layout.photo_count[p]), int(layout.photo_start[p])
        a = rng.integers(0, n, per_photo)
        b = (a + rng.integers(1, n, per_photo)) % n  # another patch of the same photo
        parts.setdefault("same_photo", []).append((s + a, s + b))
    for m in range(n_models):
        for p, q in model_photo_pairs(layout, m, photo_pairs_per_model, rng):
            parts.setdefault("other_photo", []).append(
                (layout.draw(np.full(per_photo_pair, p), rng), layout.draw(np.full(per_photo_pair, q), rng)))
    photos = [layout.photos_of(m) for m in range(n_models)]
    for m1, m2 in combinations(range(n_models), 2):
        if len(photos[m1]) and len(photos[m2]):
            p = photos[m1][rng.integers(0, len(photos[m1]), per_model_pair)]
            q = photos[m2][rng.integers(0, len(photos[m2]), per_model_pair)]
            parts.setdefault("diff_model", []).append((layout.draw(p, rng), layout.draw(q, rng)))
    return Pairs.build(parts, PATCH_CATEGORIES)


@dataclass
class ImagePairs:
    """Image-level pairs (two photos, or the two halves of one) and the patch pairs behind each."""

    photo_1: np.ndarray
    photo_2: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]
    #: patch pairs: rows i, j and the image pair (group) each belongs to, grouped (ascending)
    i: np.ndarray
    j: np.ndarray
    group: np.ndarray

    def aggregate(self, patch_scores: np.ndarray, how: str = "mean") -> np.ndarray:
        """One score per image pair from its patch-pair scores: their mean or median."""
        if how not in ("mean", "median"):
            raise ValueError(f"transfer.image.aggregate: {how!r} is not 'mean' or 'median'")
        s = np.asarray(patch_scores, dtype=np.float64)
        n = len(self.photo_1)
        if n == 0:
            return np.zeros(0)
        bounds = np.searchsorted(self.group, np.arange(n + 1))
        if how == "mean":
            sums = np.add.reduceat(s, bounds[:-1]) if len(s) else np.zeros(n)
            return sums / np.diff(bounds)
        return np.array([np.median(s[bounds[k]:bounds[k + 1]]) for k in range(n)])


def sample_image_pairs(layout: PhotoLayout, n_models: int, half_of_patch: np.ndarray, patch_pairs: int,
                       photo_pairs_per_model: int, photo_pairs_per_model_pair: int,
                       rng: np.random.Generator) -> ImagePairs:
    """Image-level pairs of the three categories (module docstring). ``half_of_patch``: 0 for a
    patch in the top half of its photo, 1 in the bottom half, -1 neither (straddles the middle)."""
    half = np.asarray(half_of_patch)
    p1, p2, cats, ii, jj = [], [], [], [], []

    def add(cat: int, a: int, b: int, rows_1: np.ndarray, rows_2: np.ndarray) -> None:
        p1.append(a)
        p2.append(b)
        cats.append(cat)
        ii.append(rows_1)
        jj.append(rows_2)

    for p in np.flatnonzero(layout.photo_count > 0):
        rows = np.arange(layout.photo_start[p], layout.photo_start[p] + layout.photo_count[p])
        top, bottom = rows[half[rows] == 0], rows[half[rows] == 1]
        if len(top) and len(bottom):
            add(0, int(p), int(p), top[rng.integers(0, len(top), patch_pairs)],
                bottom[rng.integers(0, len(bottom), patch_pairs)])
    for m in range(n_models):
        for p, q in model_photo_pairs(layout, m, photo_pairs_per_model, rng):
            add(1, p, q, layout.draw(np.full(patch_pairs, p), rng), layout.draw(np.full(patch_pairs, q), rng))
    photos = [layout.photos_of(m) for m in range(n_models)]
    for m1, m2 in combinations(range(n_models), 2):
        n1, n2 = len(photos[m1]), len(photos[m2])
        if not (n1 and n2):
            continue
        k = min(photo_pairs_per_model_pair, n1 * n2)
        for c in np.sort(rng.choice(n1 * n2, size=k, replace=False)):
            p, q = int(photos[m1][c // n2]), int(photos[m2][c % n2])
            add(2, p, q, layout.draw(np.full(patch_pairs, p), rng), layout.draw(np.full(patch_pairs, q), rng))
    n = len(p1)
    group = np.repeat(np.arange(n), [len(r) for r in ii]) if n else np.zeros(0, np.int64)
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
    return ImagePairs(np.asarray(p1, np.int64), np.asarray(p2, np.int64), np.asarray(cats, np.int64),
                      IMAGE_CATEGORIES, cat(ii), cat(jj), group.astype(np.int64))


def halves(y: np.ndarray, patch_size: int, height: np.ndarray) -> np.ndarray:
    """0 where a patch (top row ``y``) lies in the top half of its photo (``height``), 1 in the
    bottom half, -1 where it straddles the middle or the height is unknown (≤ 0)."""
    y, h = np.asarray(y), np.asarray(height)
    out = np.full(len(y), -1, np.int8)
    out[(h > 0) & (2 * (y + patch_size) <= h)] = 0
    out[(h > 0) & (2 * y >= h)] = 1
    return out


__all__ = ["PATCH_CATEGORIES", "IMAGE_CATEGORIES", "LINK", "PhotoLayout", "Pairs", "ImagePairs", "sample_patch_pairs",
           "sample_image_pairs", "model_photo_pairs", "halves"]
