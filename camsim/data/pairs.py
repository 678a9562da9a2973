"""Where a pair is drawn: balanced Phase B pairs and the evaluation's model × model pairs.

Pairs are index pairs into a concatenation of patch sets (never copied pixels).
``labels[i]`` is the model index of patch ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_balanced_pairs(labels: np.ndarray, n_pairs: int, seed: int | Sequence[int]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_pairs`` pairs (i, j), half same-model and half different-model (docs/method.md, Phase B).

    Same pairs: a model drawn uniformly, then two distinct patches of it. Different pairs:
    two distinct models drawn uniformly, then one patch of each. Returns ``(i, j, same)``.
    ``seed``: an int or a seed sequence's entropy (``[seed, epoch]``).
    """
    labels = np.asarray(labels)
    models = np.unique(labels)
    if len(models) < 2:
        raise ValueError(f"different-model pairs need ≥ 2 camera models, got {len(models)}")
    members = [np.flatnonzero(labels == m) for m in models]
    if any(len(m) < 2 for m in members):
        few = [int(models[k]) for k, m in enumerate(members) if len(m) < 2]
        raise ValueError(f"same-model pairs need ≥ 2 patches per model; model indices {few} have fewer")
    rng = np.random.default_rng(seed)
    n_same = n_pairs // 2
    n_diff = n_pairs - n_same
    sizes = np.array([len(m) for m in members])

    flat = np.concatenate(members)  # patch indices grouped by model
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def pick(model_idx: np.ndarray, member: np.ndarray | None = None) -> np.ndarray:
        """Patch index of the ``member``-th patch (uniform when None) of each chosen model."""
        member = rng.integers(0, sizes[model_idx]) if member is None else member
        return flat[starts[model_idx] + member]

    ms = rng.integers(0, len(models), n_same)
    a = rng.integers(0, sizes[ms])
    b = (a + rng.integers(1, sizes[ms])) % sizes[ms]  # distinct from a
    i_same, j_same = pick(ms, a), pick(ms, b)
    m1 = rng.integers(0, len(models), n_diff)
    m2 = (m1 + rng.integers(1, len(models), n_diff)) % len(models)  # distinct from m1
    i_diff, j_diff = pick(m1), pick(m2)
    i = np.concatenate([i_same, i_diff])
    j = np.concatenate([j_same, j_diff])
    same = np.concatenate([np.ones(n_same, bool), np.zeros(n_diff, bool)])
    order = rng.permutation(n_pairs)
    return i[order], j[order], same[order]


def sample_cell_pairs(labels: np.ndarray, pairs_per_cell: int, seed: int,
                      photos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs for the model × model evaluation matrix (docs/method.md, "Evaluation", Fig. 2).

    For every unordered pair of models (m1 < m2) and every model with itself, draw
    ``pairs_per_cell`` pairs of distinct patches, so every cell of the matrix — the
    "different" rates below the diagonal and the "Self" rates on it — is filled equally.
    ``photos`` (each patch's photo id): the Self cells' two patches from two different photos of
    the model (``eval.self_pairs=two_photos``); ``None``: any two of its patches, the same photo's
    included. Returns ``(i, j)`` with ``labels[i] <= labels[j]``.
    """
    labels = np.asarray(labels)
    models = np.unique(labels)
    members = [np.flatnonzero(labels == m) for m in models]
    short = [int(models[k]) for k, m in enumerate(members) if len(m) < 2]
    if short:
        raise ValueError(f"evaluation needs ≥ 2 patches per model; model indices {short} have fewer")
    if photos is not None:
        photos = np.asarray(photos)
        members = [m[np.argsort(photos[m], kind="stable")] for m in members]  # each model's patches by photo
        one = [int(models[k]) for k, m in enumerate(members) if len(np.unique(photos[m])) < 2]
        if one:
            raise ValueError(f"eval.self_pairs=two_photos needs ≥ 2 test photos with patches per model; model "
                             f"indices {one} have one")
    rng = np.random.default_rng(seed)
    out_i, out_j = [], []
    for a in range(len(models)):
        for b in range(a, len(models)):
            ia = rng.integers(0, len(members[a]), pairs_per_cell)
            if a == b and photos is not None:
                jb = _other_photo(photos[members[a]], ia, rng)
            elif a == b:
                jb = (ia + rng.integers(1, len(members[a]), pairs_per_cell)) % len(members[a])
            else:
                jb = rng.integers(0, len(members[b]), pairs_per_cell)
            out_i.append(members[a][ia])
            out_j.append(members[b][jb])
    return np.concatenate(out_i), np.concatenate(out_j)


def _other_photo(photo: np.ndarray, ia: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each position ``ia`` in ``photo`` (photo ids sorted, so each photo's patches are one run),
    a uniform position among the patches of the other photos."""
    starts = np.searchsorted(photo, photo, side="left")
    ends = np.searchsorted(photo, photo, side="right")
    s, e = starts[ia], ends[ia]
    r = rng.integers(0, len(photo) - (e - s))
    return np.where(r < s, r, r + (e - s))
