"""Weighted ROC figures and the two-level (camera model, photo) bootstrap of the transfer evaluation.

Pure numpy. A *contrast* is a set of scored pairs, positives (same camera model, of one
category) against negatives (different models); every figure of it — ROC AUC, EER, TPR and
TNR at a threshold, TPR at a false-alarm rate — is computed from pair *weights*: all ones
for the point estimate (then the figures equal :mod:`camsim.eval.metrics`' ``roc_auc``,
``equal_error_rate``, ``threshold_at_far``; checked in tests/test_transfer.py), and the
multiplicities of a bootstrap resample for the intervals.

Bootstrap (real sets are small: a few photos of a few dozen models): each replicate draws
the camera models with replacement, and within every drawn model its photos with
replacement. A photo drawn ``c`` times counts ``c`` times; a pair's weight follows from its
two photos (:func:`pair_weights`):

- two patches of one photo (or the two halves of one photo): ``C(p)``, the photo's count
  over all drawn copies of its model;
- two photos of one model: ``n/(n − 1) · Σ_k c_k(p1) c_k(p2)`` over the drawn copies k of the
  model (pairs only form within one copy, between two distinct photos, as in the original
  sample), ``n`` the model's photos: a copy's ``c_k(p1) c_k(p2)`` is ``(n − 1)/n`` in
  expectation, so without the factor a model of two photos weighed half as much as in the point
  estimate and one of ten 0.9 — intervals of these rows leaned towards models with many photos
  (until 2026-12-06);
- two models: ``C(p1) C(p2)``.

Percentile intervals over the replicates where a figure exists (e.g. a replicate that drew
a single model has no negatives); ``n`` says how many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from camsim.eval.metrics import _scores_labels
from camsim.progress import default_workers, track

R = TypeVar("R")

#: what links a pair's two photos (decides its bootstrap weight, see the module docstring)
SAME_PHOTO, SAME_MODEL, DIFF_MODEL = 0, 1, 2

FIGURES = ("auc", "eer", "tpr", "tnr", "acc", "tpr_far1", "tpr_far5", "baseline_auc", "baseline_tpr_same_far",
           "baseline_tpr_far1", "baseline_tpr_far5")


class WeightedRoc:
    """ROC of the rule "same iff S > t" for fixed scores and labels, evaluated for any pair weights.

    The pairs are sorted once; each :meth:`figures` call is O(n) (a bootstrap calls it once per
    replicate): the running sums take the positives and the negatives apart in score order, which
    gives the same sums as summing every pair with zeros for the other class. With unit weights the
    figures are those of :func:`camsim.eval.metrics.roc_curve` and its helpers.
    """

    def __init__(self, score: np.ndarray, positive: np.ndarray):
        s, y = _scores_labels(score, positive)
        self.score, self.positive = s, y
        self.order = np.argsort(-s, kind="stable")
        ss = s[self.order]
        self.y_sorted = y[self.order]
        #: last index of each run of equal scores (descending): ROC point k+1 is "S > next lower score"
        self.ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])
        # each class's pairs in score order, and how many of them lie at or above each ROC point
        # (0 at the first point, (0, 0))
        self._sorted = {c: self.order[self.y_sorted == c] for c in (True, False)}
        self._upto = {c: np.r_[0, np.cumsum(self.y_sorted == c)[self.ends]] for c in (True, False)}
        self._pos, self._neg = np.flatnonzero(y), np.flatnonzero(~y)
        self._above: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _running(self, w: np.ndarray, cls: bool) -> np.ndarray:
        """The class's summed weight at each ROC point, starting at 0."""
        return np.r_[0.0, np.cumsum(w[self._sorted[cls]])][self._upto[cls]]

    def curve(self, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(far, tpr)`` at every distinct threshold, starting at (0, 0); NaN where a class weighs 0."""
        w = np.ones(len(self.score)) if w is None else np.asarray(w, dtype=np.float64)
        tp, fp = self._running(w, True), self._running(w, False)
        with np.errstate(invalid="ignore", divide="ignore"):
            return fp / fp[-1], tp / tp[-1]

    def figures(self, eta: float, w: np.ndarray | None = None, fars: Sequence[float] = (0.01, 0.05),
                match_far: float | None = None) -> dict[str, float]:
        """AUC, EER, TPR/TNR/balanced accuracy at ``eta``, TPR at each false-alarm rate of ``fars``
        (``tpr_far1``, ``tpr_far5`` for 1 % and 5 %), and with ``match_far`` the TPR at that rate
        (``tpr_at_match``). A figure needing a class that weighs nothing is NaN."""
        w = np.ones(len(self.score)) if w is None else np.asarray(w, dtype=np.float64)
        if eta not in self._above:
            above = self.score > eta
            self._above[eta] = (np.flatnonzero(self.positive & above), np.flatnonzero(~self.positive & above))
        pos_above, neg_above = self._above[eta]
        wp, wn = float(w[self._pos].sum()), float(w[self._neg].sum())
        out: dict[str, float] = {
            "tpr": float(w[pos_above].sum()) / wp if wp else np.nan,
            "tnr": 1.0 - float(w[neg_above].sum()) / wn if wn else np.nan,
        }
        out["acc"] = (out["tpr"] + out["tnr"]) / 2.0
        if not (wp and wn):
            out.update(auc=np.nan, eer=np.nan, **{_far_key(f): np.nan for f in fars})
            if match_far is not None:
                out["tpr_at_match"] = np.nan
            return out
        far, tpr = self.curve(w)
        out["auc"] = float(np.sum(np.diff(far) * (tpr[1:] + tpr[:-1]) / 2.0))
        out["eer"] = _eer(far, tpr)
        for f in fars:
            out[_far_key(f)] = _tpr_at_far(far, tpr, f)
        if match_far is not None:
            out["tpr_at_match"] = np.nan if np.isnan(match_far) else _tpr_at_far(far, tpr, match_far)
        return out


def _far_key(f: float) -> str:
    return f"tpr_far{round(100 * f):d}"


def _eer(far: np.ndarray, tpr: np.ndarray) -> float:
    """Where FAR = FRR, linearly interpolated (as :func:`camsim.eval.metrics.equal_error_rate`)."""
    d = far - (1.0 - tpr)
    k = int(np.argmax(d >= 0))
    if d[k] == 0 or k == 0:
        return float(far[k])
    t = -d[k - 1] / (d[k] - d[k - 1])
    return float(far[k - 1] + t * (far[k] - far[k - 1]))


def _tpr_at_far(far: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at the threshold whose false-alarm rate is nearest ``target`` (the lower rate on a tie,
    within 1e-12; the lowest threshold with that rate), as :func:`camsim.eval.metrics.threshold_at_far`
    chooses it. ``far`` rises with the index, so the nearest rates sit beside ``target``'s place in it."""
    target = float(target)
    i = int(np.searchsorted(far, target))
    near = far[max(i - 1, 0):i + 1]
    gmin = np.abs(near - target).min()
    # the first rate within 1e-12 of the nearest gap lies in this window (a margin for rounding)
    lo = int(np.searchsorted(far, target - gmin - 1e-9))
    hi = int(np.searchsorted(far, target + gmin + 1e-9, side="right"))
    gap = np.abs(far[lo:hi] - target)
    best = far[lo + int(np.flatnonzero(np.isclose(gap, gmin, rtol=0, atol=1e-12))[0])]
    k = int(np.searchsorted(far, best, side="right")) - 1
    return float(tpr[k])


# ------------------------------------------------------------------------- resampling


def resample_counts(model_of_photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One bootstrap draw: camera models with replacement, then each drawn model's photos with
    replacement. Returns ``(total [n_photos], per_copy [copies, n_photos])``: how often each photo
    was drawn overall, and in the k-th drawn copy of its model (0 where the model has fewer copies),
    the latter scaled by ``sqrt(n/(n − 1))`` for a model of ``n`` ≥ 2 photos, so that a two-photo
    pair's weight ``Σ_k c_k(p1) c_k(p2)`` (:func:`pair_weights`) is 1 in expectation (module
    docstring)."""
    mop = np.asarray(model_of_photo, dtype=np.int64)
    models = np.unique(mop)
    copies = np.bincount(rng.integers(0, len(models), len(models)), minlength=len(models))
    per_copy = np.zeros((max(1, int(copies.max())), len(mop)), np.float64)
    total = np.zeros(len(mop), np.float64)
    for m, k in zip(models, copies):
        if k == 0:
            continue
        photos = np.flatnonzero(mop == m)
        n = len(photos)
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=int(k))
        total[photos] = draws.sum(axis=0)
        per_copy[: int(k), photos] = draws * (np.sqrt(n / (n - 1.0)) if n > 1 else 1.0)
    return total, per_copy


def pair_weights(link: np.ndarray, photo_1: np.ndarray, photo_2: np.ndarray, total: np.ndarray,
                 per_copy: np.ndarray) -> np.ndarray:
    """Bootstrap weight of each pair from its photos' counts (module docstring); ``link`` is
    :data:`SAME_PHOTO`, :data:`SAME_MODEL` or :data:`DIFF_MODEL` per pair."""
    link = np.asarray(link)
    w = total[photo_1] * total[photo_2]
    same_photo = link == SAME_PHOTO
    w[same_photo] = total[photo_1[same_photo]]
    sm = link == SAME_MODEL
    if sm.any():
        w[sm] = (per_copy[:, photo_1[sm]] * per_copy[:, photo_2[sm]]).sum(axis=0)
    return w


@dataclass
class Contrast:
    """Positives of one category against negatives, with what the bootstrap needs per pair."""

    score: np.ndarray
    positive: np.ndarray
    photo_1: np.ndarray
    photo_2: np.ndarray
    link: np.ndarray
    baseline: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.roc = WeightedRoc(self.score, self.positive)
        self.base_roc = None if self.baseline is None else WeightedRoc(self.baseline, self.positive)

    def figures(self, eta: float, w: np.ndarray | None = None, base_eta: float = 0.5) -> dict[str, float]:
        """The proposed system's :meth:`WeightedRoc.figures` at ``eta``, and the baseline's AUC, its
        TPR at the proposed system's false-alarm rate at ``eta`` and at 1 % / 5 %."""
        out = self.roc.figures(eta, w)
        if self.base_roc is not None:
            b = self.base_roc.figures(base_eta, w, match_far=1.0 - out["tnr"])
            out.update(baseline_auc=b["auc"], baseline_tpr_same_far=b["tpr_at_match"],
                       baseline_tpr_far1=b["tpr_far1"], baseline_tpr_far5=b["tpr_far5"])
        return out


def check_reps_level(reps: int, level: float, prefix: str = "") -> None:
    """Bootstrap replicates ≥ 1 and an interval level in (0, 1); the error names ``prefix + key``."""
    if reps < 1:
        raise ValueError(f"{prefix}reps: must be ≥ 1, got {reps}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"{prefix}level: must be in (0, 1), got {level}")


def percentile_interval(values: Sequence[float], reps: int, level: float) -> dict[str, float]:
    """``{"lo", "hi", "n", "reps"}``: the percentile interval of the replicates' values that exist
    (NaN dropped — a replicate that drew one class only — ``n`` of the ``reps``); ``lo``/``hi`` NaN
    when fewer than half of ``reps`` give the value."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) < max(1, reps // 2):
        return {"lo": np.nan, "hi": np.nan, "n": int(len(v)), "reps": int(reps)}
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return {"lo": float(lo), "hi": float(hi), "n": int(len(v)), "reps": int(reps)}


#: the resamples' seed sequence is ``[seed, BOOTSTRAP_STREAM]`` (non-zero: ``[seed, 0]`` is ``seed``'s)
BOOTSTRAP_STREAM = 0xB007

#: pairs (over all contrasts) from which the bootstrap's replicates run in parallel threads
PARALLEL_PAIRS = 100_000
#: resamples drawn ahead of the threads (each a few [copies, photos] counts)
RESAMPLE_BATCH = 64


def over_resamples(model_of_photo: np.ndarray, reps: int, seed: int, fn: Callable[[np.ndarray, np.ndarray], R],
                   n_pairs: int, desc: str) -> Iterator[R]:
    """``fn(total, per_copy)`` of each of ``reps`` resamples (:func:`resample_counts`, drawn in order
    from the seed sequence ``[seed, BOOTSTRAP_STREAM]``), yielded in that order with a progress bar. From :data:`PARALLEL_PAIRS` pairs the
    replicates run in threads on every core (numpy leaves the GIL in their passes): the same
    results, sooner."""
    # a stream of its own: the transfer evaluation draws its pairs from default_rng(seed)
    rng = np.random.default_rng([seed, BOOTSTRAP_STREAM])
    workers = min(default_workers(), reps) if n_pairs >= PARALLEL_PAIRS else 1

    def results(pool: ThreadPoolExecutor) -> Iterator[R]:
        left = reps
        while left:  # a few resamples at a time: memory stays that of a few replicates
            batch = [resample_counts(model_of_photo, rng) for _ in range(min(left, RESAMPLE_BATCH))]
            left -= len(batch)
            yield from pool.map(lambda counts: fn(*counts), batch)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from track(results(pool), desc=desc, total=reps)


def bootstrap(contrasts: Mapping[str, Contrast], etas: Mapping[str, float], model_of_photo: np.ndarray,
              reps: int, level: float, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """Percentile intervals of every figure of every contrast: ``{name: {figure: {"lo", "hi", "n"}}}``,
    all contrasts from the same resamples; ``lo``/``hi`` NaN when fewer than half the replicates
    give the figure."""
    check_reps_level(reps, level, "transfer.bootstrap.")

    def replicate(total: np.ndarray, per_copy: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: c.figures(etas[name], pair_weights(c.link, c.photo_1, c.photo_2, total, per_copy))
                for name, c in contrasts.items()}

    draws: dict[str, dict[str, list[float]]] = {name: {} for name in contrasts}
    n_pairs = sum(len(c.score) for c in contrasts.values())
    for figs in over_resamples(model_of_photo, reps, seed, replicate, n_pairs, f"bootstrap: {len(contrasts)} contrasts"):
        for name, f in figs.items():
            for k, v in f.items():
                draws[name].setdefault(k, []).append(v)
    return {name: {k: percentile_interval(values, reps, level) for k, values in figs.items()}
            for name, figs in draws.items()}


__all__ = ["WeightedRoc", "Contrast", "bootstrap", "over_resamples", "check_reps_level", "percentile_interval", "resample_counts", "pair_weights", "SAME_PHOTO", "SAME_MODEL",
           "DIFF_MODEL", "FIGURES"]
