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
    return _uniform_outside(rng, 0, len(photo), s, e - s)


def _uniform_outside(rng: np.random.Generator, start: np.ndarray | int, size: np.ndarray | int,
                     skip_at: np.ndarray | int, skip: np.ndarray | int) -> np.ndarray:
    """A uniform position in [start, start + size) outside the run of ``skip`` positions from
    ``skip_at`` (the run inside that range, or ``skip`` 0)."""
    pos = start + rng.integers(0, size - skip)
    return np.where(pos >= skip_at, pos + skip, pos)


def sample_table_balanced_pairs(labels: np.ndarray, tables: np.ndarray, n_pairs: int, seed: int | Sequence[int]
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase B pairs in which sharing a JPEG table says nothing of the label (``phase_b.table_balance``).

    A quarter each of: same model, identical table; same model, different tables; different
    models, identical table; different models, different tables — so P(same | identical table)
    = P(same | different tables) = ½, where :func:`sample_balanced_pairs` gives a simulated
    catalogue's head ~0.9 and ~0.1 and it learns "same table → same model" (docs/experiments.md,
    "Phase B pairs balanced by JPEG table"). ``tables[i]``: an int id of patch ``i``'s photo's
    luminance table. Each stratum: a model (or, for different models with one table, a table)
    drawn uniformly among those that can give it, then patches uniformly; different models with
    different tables: a model, a patch of it and a second model uniformly, redrawn together where the
    second has only that patch's table. Returns ``(i, j, same)``.
    """
    labels, tables = np.asarray(labels), np.asarray(tables)
    if labels.shape != tables.shape:
        raise ValueError(f"labels and tables differ in length ({len(labels)} vs {len(tables)})")
    tables = np.unique(tables, return_inverse=True)[1].reshape(-1)  # ids 0..T-1
    order = np.lexsort((tables, labels))  # sorted by model, then table: cells are runs
    lab, tab = labels[order], tables[order]
    models = np.unique(lab)
    if len(models) < 2:
        raise ValueError(f"different-model pairs need ≥ 2 camera models, got {len(models)}")
    new = np.r_[True, (lab[1:] != lab[:-1]) | (tab[1:] != tab[:-1])]
    c_start = np.flatnonzero(new)
    c_size = np.diff(np.r_[c_start, len(lab)])
    cell = np.cumsum(new) - 1  # each sorted position's cell
    m_of = np.searchsorted(models, lab)  # each sorted position's model index
    m_start, m_end = np.searchsorted(lab, models, "left"), np.searchsorted(lab, models, "right")
    c_model, c_table = m_of[c_start], tab[c_start]
    rng = np.random.default_rng(seed)
    n_same, n_diff = n_pairs // 2, n_pairs - n_pairs // 2
    counts = {"si": n_same // 2, "sd": n_same - n_same // 2, "di": n_diff // 2, "dd": n_diff - n_diff // 2}

    # same model, identical table: a patch whose cell has another, then that other
    ok = c_size[cell] >= 2
    si_models = np.unique(m_of[ok])
    if counts["si"] and not len(si_models):
        raise ValueError("no camera model has two patches of one JPEG table")
    ok_pos = np.flatnonzero(ok)
    k = si_models[rng.integers(0, len(si_models), counts["si"])]
    lo, hi = np.searchsorted(m_of[ok_pos], k, "left"), np.searchsorted(m_of[ok_pos], k, "right")
    a_si = ok_pos[lo + rng.integers(0, hi - lo)]
    b_si = _uniform_outside(rng, c_start[cell[a_si]], c_size[cell[a_si]], a_si, 1)

    # same model, different tables: a model with ≥ 2 tables, a patch of it, one of its other tables
    sd_models = np.flatnonzero(np.bincount(c_model, minlength=len(models)) >= 2)
    if counts["sd"] and not len(sd_models):
        raise ValueError("no camera model has photos with two different JPEG luminance tables (the "
                         "simulator: data.synth.jpeg.adaptive_share > 0 or presets_per_model > 1 give some)")
    k = sd_models[rng.integers(0, len(sd_models), counts["sd"])]
    a_sd = m_start[k] + rng.integers(0, m_end[k] - m_start[k])
    c = cell[a_sd]
    b_sd = _uniform_outside(rng, m_start[k], m_end[k] - m_start[k], c_start[c], c_size[c])

    # different models, identical table: a table ≥ 2 models save with, two of them, a patch of each
    by_table = np.lexsort((c_model, c_table))
    t_new = np.r_[True, c_table[by_table][1:] != c_table[by_table][:-1]]
    t_start = np.flatnonzero(t_new)
    t_size = np.diff(np.r_[t_start, len(by_table)])
    shared = np.flatnonzero(t_size >= 2)
    if counts["di"] and not len(shared):
        raise ValueError("no JPEG luminance table is shared by two camera models")
    g = shared[rng.integers(0, len(shared), counts["di"])]
    i1 = rng.integers(0, t_size[g])
    i2 = (i1 + rng.integers(1, t_size[g])) % t_size[g]
    c1, c2 = by_table[t_start[g] + i1], by_table[t_start[g] + i2]
    a_di = c_start[c1] + rng.integers(0, c_size[c1])
    b_di = c_start[c2] + rng.integers(0, c_size[c2])

    # different models, different tables: m2 ≠ m1, then a patch of m2 outside m1's patch's table
    span = int(tab.max()) + 1
    keys = c_model * span + c_table  # each cell's (model, table), ascending

    def find_cell(m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cell of model ``m`` with table ``t`` and whether it exists."""
        ci = np.minimum(np.searchsorted(keys, m * span + t), len(keys) - 1)
        return ci, keys[ci] == m * span + t

    m1, m2 = np.zeros(counts["dd"], np.int64), np.zeros(counts["dd"], np.int64)
    a_dd, todo = np.zeros(counts["dd"], np.int64), np.ones(counts["dd"], bool)
    for _ in range(1000):  # redraw the rows whose m2 has only the table of m1's patch
        n = int(todo.sum())
        m1[todo] = rng.integers(0, len(models), n)
        a_dd[todo] = m_start[m1[todo]] + rng.integers(0, m_end[m1[todo]] - m_start[m1[todo]])
        m2[todo] = (m1[todo] + rng.integers(1, len(models), n)) % len(models)
        ci, has = find_cell(m2, tab[a_dd])
        todo = has & (c_size[ci] == m_end[m2] - m_start[m2])
        if not todo.any():
            break
    else:
        raise ValueError("no two camera models save with different JPEG luminance tables")
    b_dd = _uniform_outside(rng, m_start[m2], m_end[m2] - m_start[m2], np.where(has, c_start[ci], len(lab)),
                            np.where(has, c_size[ci], 0))

    i = order[np.concatenate([a_si, a_sd, a_di, a_dd])]
    j = order[np.concatenate([b_si, b_sd, b_di, b_dd])]
    same = np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]
    perm = rng.permutation(n_pairs)
    return i[perm], j[perm], same[perm]
