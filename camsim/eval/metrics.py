"""Source-differentiation metrics: Fig. 2 pair matrix, scenario accuracies, ROC, baseline.

Pure numpy maths on arrays of scored pairs (``docs/method.md``, "Evaluation" and
"Baseline"). A scored set of pairs is three arrays of equal length:

- ``score``: similarity S in [0, 1] (higher = same camera model); the decision is
  C = 1 ("same") iff ``S > eta``;
- ``model_1``, ``model_2``: camera-model names; the pair is *same* iff they are equal.

``known`` is the set of models from training set A; every other model is *unknown* (set C).

Scenarios (each accuracy is pair-weighted over the pairs that belong to it):

- ``known_known``: both models known, their same (self) pairs included;
- ``known_unknown``: one known, one unknown model (different pairs only, by construction);
- ``unknown_unknown``: both models unknown, their self pairs included;
- ``overall``: every pair.

The baseline's matched false-alarm rate (docs/method.md "Baseline": matched "on the unknown
cases", then detection rates — correct "different" — compared): the forensic false alarm, a
*same*-model pair called "different". ``alarm_unknown``: its rate on the unknown models' same
pairs (1 − their Self rate; 4.5 % in the paper). ``far_unknown``: the unknown cases' *different*
pairs called "same" — 1 − their mean detection rate, so matching it leaves nothing to compare.

Schema of :func:`source_differentiation_metrics` (flat, '/'-separated keys; stable for a
given list of models)::

    acc/overall, acc/known_known, acc/known_unknown, acc/unknown_unknown   accuracy at eta
    n/known_known, n/known_unknown, n/unknown_unknown                        pairs per scenario
    n_pairs                                                                  all pairs (int)
    auc            ROC AUC over all pairs (same = positive class)
    eer            equal error rate over all pairs
    far            false-alarm rate at eta: different pairs called same
    frr            false-rejection rate at eta: same pairs called different
    far_unknown    different pairs with an unknown model called same (see above)
    alarm_unknown  unknown models' same pairs called different: the paper's false alarm (see above)
    same_rate      same pairs called same (TPR) = 1 - frr
    diff_rate      different pairs called different (TNR) = 1 - far
    eta            the decision threshold used (C = 1 iff S > eta)
    pairs/<m1>|<m2>  for every unordered pair of models, m1 before m2 in the known-first
                     order of :func:`order_models`: rate of correctly saying "different";
                     pairs/<m>|<m> is model m's "Self" rate of correctly saying "same"

The ``pairs/`` separator is ``|`` (``PAIR_SEP``): model names must not contain ``/`` or ``|``. A rate
over zero pairs (absent scenario or model pair, a class missing for auc/eer) is ``nan``.

``metrics.json`` of an evaluation run is::

    nest({**prefixed(proposed, "eval"), **prefixed(baseline, "baseline")})

so that ``flatten(json)`` gives the logged names of ``../shared/design.md``
(``eval/acc/overall``, ``baseline/auc``, ``eval/pairs/<m1>|<m2>``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PAIR_SEP = "|"
SCENARIOS = ("overall", "known_known", "known_unknown", "unknown_unknown")
CHOOSE_ETA_RULES = ("max_acc", "eer", "balanced")

SweepRow = tuple[float, float, float, float]


# ----------------------------------------------------------------------------- inputs

def _scored_pairs(score: Any, model_1: Any, model_2: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    m1 = np.asarray(model_1).astype(str).reshape(-1)
    m2 = np.asarray(model_2).astype(str).reshape(-1)
    if not (len(s) == len(m1) == len(m2)):
        raise ValueError(f"score, model_1, model_2: lengths differ ({len(s)}, {len(m1)}, {len(m2)})")
    if np.isnan(s).any():
        raise ValueError(f"score: {int(np.isnan(s).sum())} NaN value(s)")
    return s, m1, m2


def _scores_labels(score: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    y = np.asarray(same).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"score, same: lengths differ ({len(s)}, {len(y)})")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("same: must be boolean (or 0/1)")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise ValueError(f"score: {int(np.isnan(s).sum())} NaN value(s)")
    return s, y


def _rate(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def order_models(models: Iterable[str], known: Iterable[str]) -> list[str]:
    """Known models first, then unknown, each group sorted by name (duplicates dropped).

    The order depends only on the set of models, so the ``pairs/`` keys of a run are the
    same whatever order the models were listed in.
    """
    known = {str(k) for k in known}
    names = sorted({str(m) for m in models})
    return [m for m in names if m in known] + [m for m in names if m not in known]


def _check_names(models: Sequence[str]) -> None:
    for m in models:
        if "/" in m or PAIR_SEP in m or not m:
            raise ValueError(f"model name {m!r}: must be non-empty and contain neither '/' nor '{PAIR_SEP}'"
                             " (they separate metric keys)")


# ------------------------------------------------------------------------ Fig. 2 matrix

def pair_counts(score: Any, model_1: Any, model_2: Any, eta: float,
                models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Counts behind the Fig. 2 matrix: ``(n_correct, n_total)``, both [M, M] int, lower triangle.

    Cell (i, j), i > j, counts the pairs of ``models[i]`` with ``models[j]`` (either order)
    and how many were correctly called "different" (S <= eta); cell (i, i) counts the self
    pairs of ``models[i]`` and how many were correctly called "same" (S > eta). Cells above
    the diagonal are 0. A pair naming a model not in ``models`` raises ``ValueError``.
    """
    s, m1, m2 = _scored_pairs(score, model_1, model_2)
    models = [str(m) for m in models]
    if len(set(models)) != len(models):
        raise ValueError(f"models: duplicate names in {models}")
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    names, inv = np.unique(np.concatenate([m1, m2]), return_inverse=True)
    missing = [m for m in names if m not in index]
    if missing:
        raise ValueError(f"model_1/model_2: model(s) {missing} not in models {models}")
    lut = np.array([index[m] for m in names], dtype=np.int64)
    i1, i2 = lut[inv[: len(s)]], lut[inv[len(s):]]
    row, col = np.maximum(i1, i2), np.minimum(i1, i2)
    same = row == col
    correct = np.where(same, s > eta, s <= eta)
    flat = row * n + col
    total = np.bincount(flat, minlength=n * n).reshape(n, n)
    right = np.bincount(flat, weights=correct, minlength=n * n).round().astype(np.int64).reshape(n, n)
    return right, total


def pair_matrix(score: Any, model_1: Any, model_2: Any, eta: float, models: Sequence[str]) -> np.ndarray:
    """The paper's Fig. 2 as a [M, M] float matrix in the order of ``models``.

    Below the diagonal, (i, j) with i > j: rate of correctly saying "different" for the
    model pair (models[i], models[j]). The diagonal (i, i) holds the "Self" column: rate of
    correctly saying "same" for models[i]. Above the diagonal, and for cells without pairs:
    NaN. Use :func:`order_models` for the paper's known-then-unknown order.
    """
    right, total = pair_counts(score, model_1, model_2, eta, models)
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = np.where(total > 0, right / np.maximum(total, 1), np.nan)
    mat[np.triu_indices(len(models), k=1)] = np.nan
    return mat


def matrix_from_metrics(flat: Mapping[str, Any], models: Sequence[str]) -> np.ndarray:
    """Rebuild the :func:`pair_matrix` layout from the ``pairs/<m1>|<m2>`` keys of a flat dict.

    ``flat`` may carry a prefix (``eval/pairs/...``): give the dict of one system with the
    prefix removed, or the system's own metrics dict. Missing keys give NaN.
    """
    n = len(models)
    mat = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1):
            key = f"pairs/{models[j]}{PAIR_SEP}{models[i]}"
            if key in flat and flat[key] is not None:
                mat[i, j] = float(flat[key])
    return mat


# ------------------------------------------------------------------------- scenarios

def scenario_masks(model_1: Any, model_2: Any, known: Iterable[str]) -> dict[str, np.ndarray]:
    """Boolean masks of the pairs in each scenario of :data:`SCENARIOS` (see module docstring)."""
    known = {str(k) for k in known}
    m1 = np.asarray(model_1).astype(str).reshape(-1)
    m2 = np.asarray(model_2).astype(str).reshape(-1)
    if len(m1) != len(m2):
        raise ValueError(f"model_1, model_2: lengths differ ({len(m1)}, {len(m2)})")
    k1 = np.isin(m1, list(known))
    k2 = np.isin(m2, list(known))
    return {
        "overall": np.ones(len(m1), dtype=bool),
        "known_known": k1 & k2,
        "known_unknown": k1 ^ k2,
        "unknown_unknown": ~k1 & ~k2,
    }


def unknown_cases(model_1: Any, model_2: Any, known: Iterable[str]) -> np.ndarray:
    """Mask of the different pairs with at least one unknown model (``far_unknown``'s pairs)."""
    m = scenario_masks(model_1, model_2, known)
    m1 = np.asarray(model_1).astype(str).reshape(-1)
    m2 = np.asarray(model_2).astype(str).reshape(-1)
    return (m1 != m2) & ~m["known_known"]


def unknown_same_pairs(model_1: Any, model_2: Any, known: Iterable[str]) -> np.ndarray:
    """Mask of the unknown models' same pairs (their "Self" cells): where the paper's false
    alarm — "different" said of one camera model — is counted for the baseline's threshold."""
    m1 = np.asarray(model_1).astype(str).reshape(-1)
    m2 = np.asarray(model_2).astype(str).reshape(-1)
    return (m1 == m2) & scenario_masks(m1, m2, known)["unknown_unknown"]


def scenario_accuracies(score: Any, model_1: Any, model_2: Any, known: Iterable[str],
                        eta: float) -> dict[str, float]:
    """Accuracy of C = [S > eta] per scenario, plus the same-pair and different-pair rates.

    Returns ``{"overall", "known_known", "known_unknown", "unknown_unknown": accuracy,
    "same_rate": TPR, "diff_rate": TNR}``; NaN for a scenario without pairs.
    """
    s, m1, m2 = _scored_pairs(score, model_1, model_2)
    same = m1 == m2
    correct = np.where(same, s > eta, s <= eta)
    out = {name: _rate(correct[mask].sum(), mask.sum())
           for name, mask in scenario_masks(m1, m2, known).items()}
    out["same_rate"] = _rate(correct[same].sum(), same.sum())
    out["diff_rate"] = _rate(correct[~same].sum(), (~same).sum())
    return out


# ------------------------------------------------------------------------------- ROC

def roc_curve(score: Any, same: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule "same iff S > t": ``(far, tpr, thresholds)``, far and tpr increasing.

    ``thresholds`` are the distinct scores in decreasing order followed by ``-inf``; point
    k is the rule ``S > thresholds[k]``, so the curve starts at (0, 0) (S > max) and ends at
    (1, 1) (S > -inf). far = different pairs called same, tpr = same pairs called same.
    Needs both classes (``ValueError`` otherwise).
    """
    s, y = _scores_labels(score, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"same: ROC needs same and different pairs (got {n_pos} same, {n_neg} different)")
    thresholds = np.concatenate([np.unique(s)[::-1], [-np.inf]])
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tpr = (n_pos - np.searchsorted(pos, thresholds, side="right")) / n_pos
    far = (n_neg - np.searchsorted(neg, thresholds, side="right")) / n_neg
    return far, tpr, thresholds


def roc_auc(score: Any, same: Any) -> float:
    """Area under :func:`roc_curve` (trapezoids; tied scores count one half)."""
    far, tpr, _ = roc_curve(score, same)
    return float(np.sum(np.diff(far) * (tpr[1:] + tpr[:-1]) / 2.0))


def _eer_point(score: Any, same: Any) -> tuple[float, int, np.ndarray]:
    """EER (linear interpolation where FAR - FRR changes sign), the nearest ROC index, thresholds."""
    far, tpr, thr = roc_curve(score, same)
    frr = 1.0 - tpr
    d = far - frr  # non-decreasing from -1 to 1
    k = int(np.argmax(d >= 0))
    if d[k] == 0 or k == 0:
        eer = float(far[k])
    else:
        t = -d[k - 1] / (d[k] - d[k - 1])
        eer = float(far[k - 1] + t * (far[k] - far[k - 1]))
    nearest = k if (k == 0 or abs(d[k]) <= abs(d[k - 1])) else k - 1
    return eer, nearest, thr


def equal_error_rate(score: Any, same: Any) -> float:
    """Equal error rate: where FAR = FRR on the ROC, linearly interpolated between its points."""
    return _eer_point(score, same)[0]


def far_frr_at(score: Any, same: Any, eta: float) -> tuple[float, float]:
    """``(far, frr)`` of the rule "same iff S > eta"; NaN for a class without pairs."""
    s, y = _scores_labels(score, same)
    return _rate((s[~y] > eta).sum(), (~y).sum()), _rate((s[y] <= eta).sum(), y.sum())


def _threshold_input(scores: Any, name: str, target: float, target_name: str) -> np.ndarray:
    """``scores`` as a flat float64 array; ValueError naming the argument if empty or NaN, or if
    the target rate is outside [0, 1]."""
    v = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(v) == 0 or np.isnan(v).any():
        raise ValueError(f"{name}: {'empty' if len(v) == 0 else 'NaN value(s)'}")
    if not (0.0 <= float(target) <= 1.0) or math.isnan(float(target)):
        raise ValueError(f"{target_name}: a rate in [0, 1], got {target}")
    return v


def threshold_at_alarm(score_of_same_pairs: Any, target: float) -> float:
    """Threshold t whose false-alarm rate ``mean(s <= t)`` — same pairs called "different" under
    "same iff S > t" — on the given same pairs is the achievable one nearest ``target`` (the
    lower one on a tie). Of the thresholds with that rate (those below the next same-pair score)
    t is the highest, the float just below that score (``+inf`` when every pair is an alarm): at
    one false-alarm rate the system calls the most different pairs "different" — the most
    favourable choice for the system the threshold is set for."""
    s = _threshold_input(score_of_same_pairs, "score_of_same_pairs", target, "target")
    values = np.unique(s)
    cands = np.concatenate([[-np.inf], values])  # "different" iff S <= cands[k]: the lowest with its count
    counts = np.searchsorted(np.sort(s), cands, side="right")  # increasing
    gap = np.abs(counts - float(target) * len(s))
    k = int(np.flatnonzero(gap == gap.min())[0])
    return float(np.nextafter(values[k], -np.inf)) if k < len(values) else float("inf")


def threshold_at_far(score_of_different_pairs: Any, target_far: float) -> float:
    """Threshold t whose false-alarm rate ``mean(d > t)`` on the given different pairs is the target.

    The rate is ``k / n`` for k false alarms out of n; t is chosen among the observed scores
    (or ``-inf`` for k = n) so that k is the achievable count nearest to ``target_far * n``
    (the lower one on a tie): without tied scores the rate is within one sample (1 / n) of
    the target, with ties at the boundary it is the nearest achievable rate.
    """
    d = _threshold_input(score_of_different_pairs, "score_of_different_pairs", target_far, "target_far")
    n = len(d)
    cands = np.concatenate([np.unique(d)[::-1], [-np.inf]])  # S > cands[k]
    counts = n - np.searchsorted(np.sort(d), cands, side="right")  # increasing
    gap = np.abs(counts - float(target_far) * n)
    k = int(np.flatnonzero(gap == gap.min())[0])  # first = lowest count on a tie
    return float(cands[k])


def threshold_sweep(score: Any, same: Any, etas: Iterable[float] | None = None) -> list[SweepRow]:
    """Rows ``(eta, acc, far, frr)`` of the rule "same iff S > eta" for each eta.

    Default etas: 0.05, 0.10, ..., 0.95. acc is pair-weighted over all pairs.
    """
    s, y = _scores_labels(score, same)
    if etas is None:
        etas = np.round(np.arange(1, 20) * 0.05, 2)
    rows: list[SweepRow] = []
    for eta in etas:
        eta = float(eta)
        call = s > eta
        acc = _rate((call == y).sum(), len(y))
        far, frr = far_frr_at(s, y, eta)
        rows.append((eta, acc, far, frr))
    return rows


def choose_eta(score: Any, same: Any, rule: str = "max_acc") -> float:
    """Threshold for ``eval.eta=auto``, chosen on validation scores.

    ``max_acc``: the ROC threshold with the highest pair-weighted accuracy (the highest
    threshold among equals); ``eer``: the ROC threshold nearest the equal error rate;
    ``balanced``: the highest balanced accuracy (TPR + TNR) / 2 — Youden's J — whatever the
    classes' sizes. The result is an observed score (or ``-inf``), used as "same iff S > eta".
    """
    if rule not in CHOOSE_ETA_RULES:
        raise ValueError(f"rule: {rule!r} is not one of {CHOOSE_ETA_RULES}")
    s, y = _scores_labels(score, same)
    if rule == "eer":
        _, k, thr = _eer_point(s, y)
        return float(thr[k])
    far, tpr, thr = roc_curve(s, y)
    n_pos, n_neg = y.sum(), (~y).sum()
    acc = (tpr + 1.0 - far) / 2 if rule == "balanced" else (tpr * n_pos + (1.0 - far) * n_neg) / (n_pos + n_neg)
    return float(thr[int(np.argmax(acc))])


# ---------------------------------------------------------------- Bray–Curtis baseline

def bray_curtis(u: Any, v: Any) -> np.ndarray:
    """Bray–Curtis distance per row: BC(u, v) = Σ|u_i − v_i| / Σ|u_i + v_i| (docs/method.md "Baseline").

    ``u``, ``v``: [N, K] (or [K], giving a 0-d array), e.g. softmax outputs of the Phase A
    classifier. A zero denominator (both rows all zero) gives 0 (identical rows).
    """
    a = np.asarray(u, dtype=np.float64)
    b = np.asarray(v, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"u, v: shapes differ ({a.shape}, {b.shape})")
    if a.ndim not in (1, 2):
        raise ValueError(f"u, v: must be [K] or [N, K], got shape {a.shape}")
    num = np.abs(a - b).sum(axis=-1)
    den = np.abs(a + b).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def bray_curtis_similarity(u: Any, v: Any) -> np.ndarray:
    """1 − :func:`bray_curtis`: the baseline's score, higher = same (in [0, 1] for non-negative rows)."""
    return 1.0 - bray_curtis(u, v)


# ------------------------------------------------------------------------ metrics dict

def source_differentiation_metrics(score: Any, model_1: Any, model_2: Any, known: Iterable[str],
                                   eta: float, models: Sequence[str] | None = None) -> dict[str, Any]:
    """The flat metrics dict of the module docstring for one scorer at threshold ``eta``.

    ``models``: the models of the matrix (default: those in the pairs); they are put in the
    known-first order of :func:`order_models`, and the ``pairs/`` keys cover every
    unordered pair of them (NaN where no pairs were scored).
    """
    s, m1, m2 = _scored_pairs(score, model_1, model_2)
    known = {str(k) for k in known}
    if models is None:
        models = sorted(set(m1.tolist()) | set(m2.tolist()))
    models = order_models(models, known)
    _check_names(models)
    same = m1 == m2
    sc = scenario_accuracies(s, m1, m2, known, eta)
    masks = scenario_masks(m1, m2, known)
    far, frr = far_frr_at(s, same, eta)
    both = same.any() and (~same).any()
    unk = unknown_cases(m1, m2, known)
    unk_same = unknown_same_pairs(m1, m2, known)
    out: dict[str, Any] = {f"acc/{name}": sc[name] for name in SCENARIOS}
    out.update({f"n/{name}": int(masks[name].sum()) for name in SCENARIOS[1:]})
    out.update({
        "n_pairs": int(len(s)), "auc": roc_auc(s, same) if both else float("nan"),
        "eer": equal_error_rate(s, same) if both else float("nan"), "far": far, "frr": frr,
        "far_unknown": _rate((s[unk] > eta).sum(), unk.sum()),
        "alarm_unknown": _rate((s[unk_same] <= eta).sum(), unk_same.sum()),
        "same_rate": sc["same_rate"], "diff_rate": sc["diff_rate"], "eta": float(eta),
    })
    mat = pair_matrix(s, m1, m2, eta, models)
    for i in range(len(models)):
        for j in range(i + 1):
            out[f"pairs/{models[j]}{PAIR_SEP}{models[i]}"] = float(mat[i, j])
    return out


def metric_keys(models: Sequence[str], known: Iterable[str]) -> list[str]:
    """The exact key set of :func:`source_differentiation_metrics` for these models (schema)."""
    models = order_models(models, known)
    keys = [f"acc/{n}" for n in SCENARIOS] + [f"n/{n}" for n in SCENARIOS[1:]]
    keys += ["n_pairs", "auc", "eer", "far", "frr", "far_unknown", "alarm_unknown", "same_rate", "diff_rate", "eta"]
    keys += [f"pairs/{models[j]}{PAIR_SEP}{models[i]}" for i in range(len(models)) for j in range(i + 1)]
    return keys


def baseline_metrics(similarity: Any, model_1: Any, model_2: Any, known: Iterable[str],
                     target_alarm: float, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of the Bray–Curtis baseline at the proposed system's false-alarm rate.

    ``similarity``: :func:`bray_curtis_similarity` of the same pairs; ``target_alarm``: the
    proposed system's ``alarm_unknown`` (the unknown models' same pairs called "different",
    the paper's false alarm). The baseline threshold is :func:`threshold_at_alarm` on those
    pairs' similarities — so the two systems' detection rates (the "different" cells of the
    pair matrix) are compared at one false-alarm rate — and the returned dict has the schema
    of :func:`source_differentiation_metrics` with ``eta`` = that threshold.
    """
    s, m1, m2 = _scored_pairs(similarity, model_1, model_2)
    unk = unknown_same_pairs(m1, m2, known)
    if not unk.any():
        raise ValueError("model_1/model_2: no same pair of an unknown model to match the false-alarm rate on")
    eta = threshold_at_alarm(s[unk], target_alarm)
    return source_differentiation_metrics(s, m1, m2, known, eta, models)


# ------------------------------------------------------------------- nest / flatten

def prefixed(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{f"{prefix}/{k}": v}``: one system's metrics under ``eval`` or ``baseline``."""
    return {f"{prefix}/{k}": v for k, v in flat.items()}


def nest(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}``; a key that is both a value and a prefix raises."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(sep)
        if any(p == "" for p in parts):
            raise ValueError(f"key {key!r}: empty part between '{sep}'")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"key {key!r}: {p!r} is already a value")
            node = child
        if parts[-1] in node:
            raise ValueError(f"key {key!r}: already present (as a value or a prefix)")
        node[parts[-1]] = value
    return out


def flatten(nested: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Inverse of :func:`nest`: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (empty dicts vanish)."""
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        for k, v in node.items():
            key = f"{path}{sep}{k}" if path else str(k)
            if isinstance(v, Mapping):
                walk(v, key)
            else:
                out[key] = v

    walk(nested, "")
    return out
