"""Splicing detection and localisation from patch similarities (issue 7).

The engine knows no model: it receives two callables,

* ``extract(patches uint8 [N, P, P]) -> float32 [N, d]`` — one vector per patch for
  ``score_matrix`` to compare: the features f(X) (Phase A), or what the similarity head
  computes of them once per patch (``camsim.localize.run.Localizer``: the head's row terms);
  called in batches, once per decidable patch;
* ``score_matrix(F [N, d], G [M, d]) -> [N, M]`` — the similarity S in [0, 1] of every
  pair (Phase B; higher = same camera model). The engine always passes ``G``.

Two modes:

* ``"reference"`` — the paper's splicing demonstration (docs/method.md, "Splicing
  demonstration"): one reference patch is scored against every decidable patch and the
  patches with S ≤ eta are "different source". Per-patch ``scores`` = S(ref, patch);
  ``suspicion`` = 1 − S. Image score = 1 − (the ``min_suspect``-th smallest S of the other
  patches), decision: score ≥ 1 − eta, i.e. at least ``min_suspect`` patches differ from
  the reference.
* ``"graph"`` — forensic similarity graphs (Mayer & Stamm 2020): the symmetrised S of the
  decidable patches is split by :func:`camsim.localize.graph.spectral_bipartition`
  (``graph_method``: ``"spectral"``, smallest normalised cut, score ``clip(1 − λ₂, 0, 1)``;
  or ``"modularity"``, largest modularity, score ``clip(2Q, 0, 1)``). Up to
  ``max_graph_nodes`` decidable patches the graph is exact; above, that many evenly spread
  landmark patches form the graph and every other patch joins a side by the Nyström
  extension of the Fiedler vector from its similarities to the landmarks
  (:func:`camsim.localize.graph.extend_partition`): memory O(m² + batch·m), time O(N·m)
  pair scores, so any photo up to the pixel cap runs. The splice side is chosen by
  evidence (:func:`camsim.localize.graph.splice_side`: share of the patches and share of
  the patches on the image's outer ring — the host owns the frame), or, when a reference
  pixel is given, it is the community without it. Per-patch ``scores`` = ``suspicion`` =
  1 − mean S to the host community (its landmarks above ``max_graph_nodes``); decision:
  score ≥ ``decision_threshold``. The default :data:`GRAPH_THRESHOLD` is **not
  calibrated**: calibrate it on authentic images with :func:`calibrate_threshold`
  (scores of authentic images → the threshold with a target false-alarm rate) and pass
  it as ``decision_threshold`` (``camsim-localize decision_threshold=…``).

Near-white patches (``max_clipped``, off by default): a patch with more than that share of its
pixels at or above :data:`CLIP_LEVEL` (clipped highlights, as JPEG decodes them) is undecidable
too — a clipped pixel holds no trace of the sensor's noise or demosaicing. On one collection of
authentic photos the graph's cut followed clipped highlights; leaving them out lowered its false
alarms, not a new collection's (docs/experiments.md, "Clipped highlights and false alarms").

Pixel maps: ``heatmap`` is the mean ``suspicion`` of the decidable patches covering each
pixel (float32, NaN where none does: flat patches and the < 8 px margin the 8-px aligned
grid leaves uncovered, see :mod:`camsim.localize.grid`); ``mask`` marks pixels where at least half of those patches
are suspect. Both are kept per cell of the patch grid (:class:`camsim.localize.grid.CellMap`)
and expanded to pixels only when read, so writing a preview never builds a 12-MP map. In graph mode the mask is the bipartition whatever the decision ("where, if
spliced"); ``decision`` says whether.

Bad input raises :class:`LocalizationError` (a ``ValueError``) with a message naming the
field; batch callers write that message into the image's CSV row.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from camsim.config.schema import LOCALIZATION_MODES
from camsim.data.patches import cut_patches, patch_entropy
from camsim.localize.graph import METHODS, affinity, affinity_block, extend_partition, spectral_bipartition
from camsim.localize.grid import CellMap, LocalizationError, PhotoError, patch_cell_map, patch_grid
from camsim.machine import single_blas_thread
from camsim.progress import track

Extract = Callable[[np.ndarray], np.ndarray]
ScoreMatrix = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]

#: Fewest decidable patches each mode accepts (reference: the reference and the default
#: ``min_suspect`` = 2 others — more when ``min_suspect`` is larger; graph: a bipartition with an
#: eigengap needs λ₃, and two communities of ≥ 2 patches).
MIN_DECIDABLE = {"reference": 3, "graph": 4}
#: Default graph-mode decision threshold on the graph score (uncalibrated: see calibrate_threshold).
GRAPH_THRESHOLD = 0.25
#: Default number of nodes solved exactly in graph mode (landmarks above it).
MAX_GRAPH_NODES = 2048
#: Most pairs per ``score_matrix`` call (~4 M: 16 MB of float32 scores): rows per call are
#: ``max(batch, PAIR_BLOCK // len(G))``, so a head whose per-call cost includes its columns
#: (the branch of every G row) pays it once per 2048 rows against 2048 landmarks, not per 256.
PAIR_BLOCK = 1 << 22
MODES = LOCALIZATION_MODES
#: A pixel at or above this 8-bit value counts as clipped (255 as a JPEG decodes it: ringing
#: leaves clipped highlights at 250–255).
CLIP_LEVEL = 250


def calibrate_threshold(scores_of_authentic_images: Any, target_far: float) -> float:
    """The smallest image-level threshold whose false-alarm rate on authentic images is at
    most ``target_far``, for the rule "spliced if score ≥ threshold".

    With n authentic scores, at most ``k = floor(target_far · n)`` of them may reach the
    threshold; the threshold is the next float above the (k+1)-th largest score (ties at
    that score are all below it). ``target_far`` in [0, 1). Pure; raises ``ValueError``
    naming the argument for an empty list, NaN / inf scores or a rate outside [0, 1).
    """
    s = np.asarray(scores_of_authentic_images, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("scores_of_authentic_images is empty: calibration needs authentic images")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores_of_authentic_images contains NaN or inf")
    far = float(target_far)
    if not 0.0 <= far < 1.0:
        raise ValueError(f"target_far must lie in [0, 1); got {target_far!r}")
    kth = np.sort(s)[::-1][_allowed_false_alarms(s.size, far)]   # the (k+1)-th largest
    return float(np.nextafter(kth, np.inf))


def expected_far(n: int, target_far: float) -> float:
    """The false-alarm rate to expect on *new* authentic images of the same kind at the threshold
    :func:`calibrate_threshold` sets on ``n`` of them: ``(k + 1) / (n + 1)``, ``k = floor(target_far · n)``
    (a new score is as likely to fall in any of the n + 1 gaps of the sorted calibration scores).
    Above ``target_far`` whenever ``n`` is small: 20 images at 5 % give 9.5 %."""
    return (_allowed_false_alarms(n, float(target_far)) + 1) / (n + 1)


def _allowed_false_alarms(n: int, target_far: float) -> int:
    """k = floor(target_far · n): how many of n calibration scores may reach the threshold."""
    return int(np.floor(target_far * n + 1e-9))


@dataclass
class LocalizationResult:
    """Everything one localisation produced; per-patch arrays are ``[N]`` in grid order."""

    mode: str
    green: np.ndarray                      # uint8 [H, W], the analysed image (for the overlay)
    shape: tuple[int, int]                 # (H, W) of the image
    patch: int
    stride: int
    positions: np.ndarray                  # int64 [N, 2], top-left (y, x) of each patch
    grid_shape: tuple[int, int]            # (rows, cols), rows * cols == N
    entropy: np.ndarray                    # float64 [N], nats
    decidable: np.ndarray                  # bool [N], entropy > min_entropy (and clipped share <= max_clipped)
    scores: np.ndarray                     # float64 [N]; reference: S(ref, ·); graph: suspicion; NaN if undecidable
    suspicion: np.ndarray                  # float64 [N] in [0, 1], higher = more suspect; NaN if undecidable
    suspect: np.ndarray                    # bool [N], patch judged "different source" / in the spliced community
    heatmap_cells: CellMap                 # mean suspicion of the covering decidable patches (NaN if none), per cell
    mask_cells: CellMap                    # share of the covering decidable patches that are suspect, per cell
    score: float                           # image-level splice score, higher = more likely spliced
    decision: bool                         # image judged spliced
    threshold: float                       # decision: score >= threshold
    reference: tuple[int, int] | None      # top-left (y, x) of the reference patch, if any
    reference_index: int | None
    message: str                           # one human-readable line
    stats: dict[str, Any] = field(default_factory=dict)  # graph: lambda2, modularity, ...; timing (seconds)

    @property
    def n_decidable(self) -> int:
        return int(self.decidable.sum())

    @cached_property
    def heatmap(self) -> np.ndarray:
        """float32 ``[H, W]``: mean suspicion of the decidable patches covering each pixel, NaN
        where none does (built from :attr:`heatmap_cells` on first use)."""
        return self.heatmap_cells.pixels().astype(np.float32)

    @cached_property
    def mask(self) -> np.ndarray:
        """bool ``[H, W]``: suspected pixels — at least half of the covering decidable patches
        are suspect (built from :attr:`mask_cells` on first use)."""
        return self.mask_cells.pixels() >= 0.5

    @property
    def suspect_share(self) -> float:
        """Share of the image's pixels in :attr:`mask`, without building it."""
        return self.mask_cells.area_mean(lambda v: v >= 0.5)

    @cached_property
    def brightness_auc(self) -> float:
        """How the suspected patches' mean grey level ranks against the other decidable patches':
        the area under the ROC, ties counted ½ (0.5: unrelated; near 0 / 1: the suspects are the
        image's darker / brighter patches — exposure within one camera's photo moves these
        networks' scores too, docs/experiments.md, "A fresh set nobody had scored"). NaN where
        either side is empty."""
        idx = np.flatnonzero(self.decidable)
        sus = self.suspect[idx]
        if sus.all() or not sus.any():
            return float("nan")
        p = self.patch
        return rank_auc(np.array([self.green[y:y + p, x:x + p].mean() for y, x in self.positions[idx]]), sus)


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` (bool) items: the Mann–Whitney
    probability that a positive outscores a negative, ties counted ½ (both classes present)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((rankdata(scores)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _check_inputs(green: Any, mode: str, patch: Any, stride: Any, eta: float, batch: Any,
                  min_entropy: float, max_clipped: float | None) -> np.ndarray:
    arr = np.asarray(green)
    if arr.ndim != 2:
        hint = " (pass the green channel, image[..., 1])" if arr.ndim == 3 else ""
        raise LocalizationError(f"green must be a 2-D [H, W] array{hint}; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise LocalizationError(f"green must be uint8; got dtype {arr.dtype}")
    if mode not in MODES:
        raise LocalizationError(f"mode must be one of {MODES}; got {mode!r}")
    for name, v in (("patch", patch), ("stride", stride), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise LocalizationError(f"{name} must be a positive integer; got {v!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise LocalizationError(f"eta must lie in [0, 1]; got {eta!r}")
    if not np.isfinite(min_entropy):
        raise LocalizationError(f"min_entropy must be finite; got {min_entropy!r}")
    if max_clipped is not None and (isinstance(max_clipped, bool) or not 0.0 <= float(max_clipped) <= 1.0):
        raise LocalizationError(f"max_clipped must be a share in [0, 1] or None (off); got {max_clipped!r}")
    return arr


def _check_colour(colour: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(colour)
    if arr.dtype != np.uint8 or arr.shape != (*shape, 3):
        raise LocalizationError(f"colour must be uint8 [H, W, 3] of the green channel's size {shape}; "
                                f"got {arr.dtype} {arr.shape}")
    return arr


def _features(image: np.ndarray, positions: np.ndarray, patch: int, extract: Extract, batch: int,
              progress: bool) -> np.ndarray:
    """Features of the patches of ``image`` (green ``[H, W]`` or RGB ``[H, W, 3]``) at ``positions``,
    extracted in batches, checked."""
    starts = range(0, len(positions), batch)
    if progress:
        starts = track(starts, desc="features", total=len(starts))
    out = []
    for a in starts:
        patches = cut_patches(image, positions[a:a + batch], patch)
        f = np.asarray(extract(patches))
        if f.ndim != 2 or f.shape[0] != len(patches):
            raise LocalizationError(
                f"extract must return [N, d] for N={len(patches)} patches; got shape {f.shape}")
        if not np.all(np.isfinite(f)):
            raise LocalizationError("extract returned NaN or inf features")
        out.append(f.astype(np.float32, copy=False))
    return np.concatenate(out, axis=0)


def _scores(score_matrix: ScoreMatrix, F: np.ndarray, G: np.ndarray, batch: int) -> np.ndarray:
    """S(F_i, G_j) for all pairs, ``max(batch, PAIR_BLOCK // len(G))`` rows per call, checked; in
    the scorer's float dtype (float32 from a network: callers widen to float64 where they compute,
    exactly, so no float64 copy of every block is made), float64 for any other dtype."""
    out = []
    step = max(int(batch), PAIR_BLOCK // max(1, len(G)))
    for a in range(0, len(F), step):
        rows = F[a:a + step]
        s = np.asarray(score_matrix(rows, G))
        if s.dtype.kind != "f":
            s = s.astype(np.float64)
        if s.shape != (len(rows), len(G)):
            raise LocalizationError(
                f"score_matrix must return [{len(rows)}, {len(G)}]; got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise LocalizationError("score_matrix returned NaN or inf similarities")
        out.append(s)
    return out[0] if len(out) == 1 else np.concatenate(out, axis=0)


def _pick_reference(reference: Any, positions: np.ndarray, dec_idx: np.ndarray, patch: int,
                    shape: tuple[int, int]) -> tuple[int, str]:
    """Index (into ``dec_idx``) of the decidable patch whose centre is nearest pixel ``reference``."""
    try:
        y, x = (int(v) for v in reference)
    except (TypeError, ValueError):
        raise LocalizationError(
            f"reference must be None, 'auto' or a pixel (y, x); got {reference!r}") from None
    if not (0 <= y < shape[0] and 0 <= x < shape[1]):
        raise LocalizationError(f"reference pixel (y={y}, x={x}) lies outside the image {shape[0]}x{shape[1]}")
    centres = positions[dec_idx] + (patch - 1) / 2.0
    k = int(np.argmin(((centres - (y, x)) ** 2).sum(axis=1)))
    py, px = positions[dec_idx[k]]
    note = ""
    if not (py <= y < py + patch and px <= x < px + patch):
        note = f"reference pixel ({y}, {x}) lies in no decidable patch; using the nearest one at ({py}, {px}); "
    return k, note


def _auto_reference(score_matrix: ScoreMatrix, F: np.ndarray, batch: int, candidates: int) -> int:
    """The candidate patch most similar to all the others (highest mean S): likely host."""
    n = len(F)
    cand = np.unique(np.linspace(0, n - 1, min(n, candidates)).round().astype(np.int64))
    S = _scores(score_matrix, F[cand], F, batch).astype(np.float64)
    S[np.arange(len(cand)), cand] = np.nan                      # no self-similarity
    return int(cand[int(np.argmax(np.nanmean(S, axis=1)))])


def _outer_ring(pos: np.ndarray) -> np.ndarray:
    """1.0 for patches in the first / last row or column of the grid, else 0.0 (the host prior)."""
    ys, xs = pos[:, 0], pos[:, 1]
    return ((ys == ys.min()) | (ys == ys.max()) | (xs == xs.min()) | (xs == xs.max())).astype(np.float64)


def _landmarks(n: int, m: int, must: int | None) -> np.ndarray:
    """``m`` indices evenly spread over ``0..n-1`` (raster order → spread over the image),
    always including ``must``; all of them when ``n <= m``."""
    if n <= m:
        return np.arange(n)
    idx = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
    if must is not None and must not in idx:
        idx[int(np.argmin(np.abs(idx - must)))] = must
        idx = np.unique(idx)
    return idx


@single_blas_thread()                                          # matvecs: one BLAS thread is faster and steadier
def _graph(F: np.ndarray, score_matrix: ScoreMatrix, batch: int, ref_k: int | None, ring: np.ndarray,
           weights: str, eta: float, max_nodes: int, method: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Graph mode on the decidable patches' features ``F``: labels (1 = suspect), suspicion
    (1 − mean affinity to the host), info. Exact up to ``max_nodes`` patches, landmarks above."""
    n = len(F)
    lm = _landmarks(n, max_nodes, ref_k)
    host = None if ref_k is None else int(np.searchsorted(lm, ref_k))
    S = _scores(score_matrix, F[lm], F[lm], batch)
    labels_l, info = spectral_bipartition(S, weights=weights, eta=eta, host=host, host_prior=ring[lm],
                                          method=method)
    if len(lm) == n:                                          # exact: every patch is a node
        W = affinity(S, weights=weights, eta=eta)
        del S
        is_host = labels_l == 0
        n_host = is_host.sum() - is_host                       # host patches other than i
        mean_to_host = np.divide(W[:, is_host].sum(axis=1), n_host, out=np.zeros(n), where=n_host > 0)
        info.update(nodes=n, landmarks=n, approximation="exact")
        return labels_l, 1.0 - mean_to_host, info             # a lone host patch: 1
    del S
    self_of = np.full(n, -1, dtype=np.int64)
    self_of[lm] = np.arange(len(lm))
    labels = np.empty(n, dtype=np.int64)
    mean_to_host = np.empty(n)
    rows = max(1, PAIR_BLOCK // len(lm))                       # ≤ ~4 M affinities per block
    FL = F[lm]
    for a in range(0, n, rows):
        sl = slice(a, min(a + rows, n))
        Wb = affinity_block(_scores(score_matrix, F[sl], FL, batch),
                            _scores(score_matrix, FL, F[sl], batch).T, weights=weights, eta=eta)
        labels[sl], _, mean_to_host[sl] = extend_partition(Wb, info["fiedler"], info["lambda2"],
                                                           info["cut_value"], labels_l, self_of[sl])
    info.update(nodes=n, landmarks=len(lm), approximation="landmarks (Nystrom extension)",
                sizes=(int((labels == 0).sum()), int((labels == 1).sum())))
    return labels, 1.0 - mean_to_host, info


def localize(green: np.ndarray, extract: Extract, score_matrix: ScoreMatrix, patch: int,
             stride: int | None = None, min_entropy: float = 4.0, mode: str = "graph",
             reference: None | str | tuple[int, int] = None, eta: float = 0.5, batch: int = 256, *,
             decision_threshold: float | None = None, min_suspect: int = 2,
             graph_weights: str = "similarity", max_graph_nodes: int = MAX_GRAPH_NODES,
             graph_method: str = "spectral", auto_candidates: int = 64, align: int = 8,
             cover_border: bool = True, progress: bool = False,
             colour: np.ndarray | None = None, max_clipped: float | None = None) -> LocalizationResult:
    """Localise regions of ``green`` (uint8 ``[H, W]``) from a different camera model.

    The grid and the entropy filter read ``green``; ``extract`` gets patches cut from it
    (``[N, P, P]``) or, with ``colour`` (uint8 ``[H, W, 3]``, the same photo in RGB, for a
    network with ``in_channels=3``), from that (``[N, 3, P, P]``).

    ``stride`` defaults to ``patch // 2`` (50 % overlap). Patches with entropy
    ≤ ``min_entropy`` nats are undecidable (docs/method.md, "Patch entropy"), and with
    ``max_clipped`` those with more than that share of pixels ≥ :data:`CLIP_LEVEL`. ``reference``:
    ``None`` / ``"auto"`` (reference mode: the patch with the highest mean S to the
    others, among ≤ ``auto_candidates`` evenly spread candidates; graph mode: none) or a
    pixel ``(y, x)`` (the decidable patch whose centre is nearest; in graph mode its
    community is the host). ``batch`` bounds the patches per ``extract`` call; ``score_matrix``
    gets ``max(batch, PAIR_BLOCK // len(G))`` rows per call. ``align`` / ``cover_border``: the patch grid
    (:func:`camsim.localize.grid.patch_grid`). ``max_graph_nodes``: patches solved exactly
    in graph mode (landmarks above). See the module docstring for scores and decisions.
    ``stats["timing"]`` holds seconds spent in ``extract`` (``features_s``), in
    ``score_matrix`` (``scoring_s``) and in all (``total_s``).
    """
    t_start = time.perf_counter()
    spent = {"features_s": 0.0, "scoring_s": 0.0}

    def _timed(fn: Callable, key: str) -> Callable:
        def wrapper(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[key] += time.perf_counter() - t
        return wrapper

    extract = _timed(extract, "features_s")
    score_matrix = _timed(score_matrix, "scoring_s")
    if isinstance(max_graph_nodes, bool) or not isinstance(max_graph_nodes, (int, np.integer)) \
            or max_graph_nodes < MIN_DECIDABLE["graph"]:
        raise LocalizationError(f"max_graph_nodes must be an integer >= {MIN_DECIDABLE['graph']}; "
                                f"got {max_graph_nodes!r}")
    if graph_method not in METHODS:
        raise LocalizationError(f"graph_method must be one of {METHODS}; got {graph_method!r}")
    stride = patch // 2 if stride is None and isinstance(patch, (int, np.integer)) else stride
    arr = _check_inputs(green, mode, patch, stride, eta, batch, min_entropy, max_clipped)
    if align > 1 and stride < align:
        warnings.warn(f"stride={stride} is below the {align}-px JPEG grid patches are aligned to: most patches "
                      f"are cut off that grid, where authentic patches are often called \"different\" — use a "
                      f"multiple of {align}", UserWarning, stacklevel=2)
    image = arr if colour is None else _check_colour(colour, arr.shape)  # what ``extract``'s patches are cut from
    h, w = arr.shape
    positions, grid_shape = patch_grid(h, w, patch, stride, align=align, cover_border=cover_border)
    n = len(positions)

    eb = max(1, min(batch, (1 << 22) // (patch * patch)))       # ≤ ~4 M pixels per entropy call
    entropy, clipped = np.empty(n), np.zeros(n)
    for a in range(0, n, eb):
        cut = cut_patches(arr, positions[a:a + eb], patch)
        entropy[a:a + eb] = patch_entropy(cut)
        if max_clipped is not None:
            clipped[a:a + eb] = (cut >= CLIP_LEVEL).mean(axis=(1, 2))
    decidable = entropy > min_entropy
    n_clipped = 0
    if max_clipped is not None:
        n_clipped = int((decidable & (clipped > max_clipped)).sum())
        decidable &= clipped <= max_clipped
    dec_idx = np.flatnonzero(decidable)
    # reference mode decides on the min_suspect-th most different patch: with fewer others, one
    # patch alone would call an image spliced
    need = MIN_DECIDABLE[mode] if mode == "graph" else max(MIN_DECIDABLE[mode], int(min_suspect) + 1)
    if len(dec_idx) < need:
        raise PhotoError(
            f"too few decidable patches: {len(dec_idx)} of {n} have entropy > {min_entropy} nats"
            + (f" (and {n_clipped} more are near-white: > {max_clipped:g} clipped)" if n_clipped else "")
            + f"; {mode} mode needs at least {need} (flat or saturated image? try a smaller patch or stride)")
    note = ""
    ref_k: int | None = None                                     # index into dec_idx / F
    if reference is not None and not (isinstance(reference, str) and reference == "auto"):
        if isinstance(reference, str):
            raise LocalizationError(f"reference must be None, 'auto' or a pixel (y, x); got {reference!r}")
        ref_k, note = _pick_reference(reference, positions, dec_idx, patch, (h, w))
    F = _features(image, positions[dec_idx], patch, extract, batch, progress)
    if ref_k is None and mode == "reference":
        ref_k = _auto_reference(score_matrix, F, batch, auto_candidates)
        note = "automatic reference; "

    scores = np.full(n, np.nan)
    suspicion = np.full(n, np.nan)
    suspect = np.zeros(n, dtype=bool)
    stats: dict[str, Any] = {}
    if mode == "reference":
        assert ref_k is not None
        s = np.clip(_scores(score_matrix, F[ref_k:ref_k + 1], F, batch)[0].astype(np.float64), 0.0, 1.0)
        flags = s <= eta
        flags[ref_k] = False
        others = np.delete(s, ref_k)
        k = max(1, int(min_suspect))
        score = float(1.0 - np.sort(others)[k - 1])
        threshold = 1.0 - eta if decision_threshold is None else float(decision_threshold)
        scores[dec_idx], suspicion[dec_idx], suspect[dec_idx] = s, 1.0 - s, flags
        stats = {"n_different": int(flags.sum()), "min_suspect": k}
    else:
        ring = _outer_ring(positions)[dec_idx]                  # the frame of the whole grid
        labels, forgery, info = _graph(F, score_matrix, batch, ref_k, ring, graph_weights, eta,
                                       int(max_graph_nodes), graph_method)
        score = float(info["score"])
        threshold = GRAPH_THRESHOLD if decision_threshold is None else float(decision_threshold)
        scores[dec_idx], suspicion[dec_idx], suspect[dec_idx] = forgery, forgery, labels == 1
        stats = {k: v for k, v in info.items() if k not in ("fiedler", "cut_value")}
    decision = bool(score >= threshold)

    flag_values = np.where(decidable, suspect.astype(np.float64), np.nan)
    mask_cells = patch_cell_map(flag_values, positions, patch, (h, w))     # pixels: >= 0.5 (NaN → False)
    heatmap_cells = patch_cell_map(suspicion, positions, patch, (h, w))
    ref_pos = None if ref_k is None else (int(positions[dec_idx[ref_k]][0]), int(positions[dec_idx[ref_k]][1]))
    verdict = "spliced" if decision else "not spliced"
    stats["timing"] = {**spent, "total_s": time.perf_counter() - t_start}
    stats["n_clipped"] = n_clipped
    clip_note = f" ({n_clipped} near-white left out)" if n_clipped else ""
    message = (f"{mode} mode: {note}{len(dec_idx)} of {n} patches decidable{clip_note}; "
               f"{int(suspect.sum())} suspect; {verdict} (score {score:.3f}, threshold {threshold:.3f})")
    return LocalizationResult(
        mode=mode, green=arr, shape=(h, w), patch=int(patch), stride=int(stride), positions=positions,
        grid_shape=grid_shape, entropy=entropy, decidable=decidable, scores=scores,
        suspicion=suspicion, suspect=suspect, heatmap_cells=heatmap_cells, mask_cells=mask_cells, score=score,
        decision=decision, threshold=threshold, reference=ref_pos,
        reference_index=None if ref_k is None else int(dec_idx[ref_k]), message=message, stats=stats)


__all__ = ["LocalizationError", "LocalizationResult", "localize", "rank_auc", "calibrate_threshold", "expected_far", "MIN_DECIDABLE",
           "GRAPH_THRESHOLD", "MAX_GRAPH_NODES", "PAIR_BLOCK", "MODES"]
