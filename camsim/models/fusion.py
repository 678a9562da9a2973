"""Score-level fusion: one S per pair from several networks' logits of it (``ckpt=[a, b]``, ``fusion``).

Fixed rules (:data:`FUSION_RULES`): ``"logit"`` σ(mean logit), ``"mean"`` the mean of their S.

A *fitted* fusion (:class:`FittedFusion`): a logistic regression on the networks' logits with one set
of weights per **table relation** of the pair — its two photos carry the identical JPEG luminance table,
or not. Where the tables are identical the table says nothing of the model and a pixel network's vote
should weigh more; where they differ a network reading the table knows more. ``camsim-eval
task=transfer 'ckpt=[a, b]' fusion=fit`` fits it on a labelled folder's patch pairs (two patches of one
photo and of two photos of one model: same; of two models: different; classes weighted equally) and
writes ``fusion.json``; ``fusion=<fusion.json>`` applies it to the same networks, in any task. One
network takes it too (``ckpt=a fusion=fit``): its logit reweighted per table relation. Within
one photo (localisation) every pair has identical tables. Its weights carry the fitting collection's
habits — how often its models share a table, how much each network knows there — so fit on photos
like the ones analysed (docs/experiments.md, "A fusion fitted with the table relation").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from camsim.artefacts import atomic_write_json

#: the fixed rules of :func:`fuse_scores`; ``"fit"`` (camsim-eval's transfer task) fits a :class:`FittedFusion`
FUSION_RULES = ("logit", "mean")
FIT = "fit"
KIND = "camsim-fitted-fusion"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # σ, without overflow


def fit_fusion(logits: Sequence[Any], same: Any, same_table: Any, c: float = 1.0, iters: int = 100) -> np.ndarray:
    """Weights ``[2, n + 1]`` (row 0: different tables, row 1: identical; bias, then one per network) of
    the logistic regression of ``same`` on ``[1, z, t, t·z]`` (``z`` the networks' logits, ``t`` the
    identical-table flag), classes weighted equally, L2 penalty ``1/c`` on all but the bias (Newton steps)."""
    z = np.stack([np.asarray(x, dtype=np.float64) for x in logits], axis=1)
    t = np.asarray(same_table).astype(bool)
    if t.shape != (len(z),):
        raise ValueError(f"same_table: one flag per pair expected ({len(z)}), got shape {t.shape}")
    x0 = np.c_[np.ones(len(z)), z]
    y = np.asarray(same).astype(np.float64)
    if y.shape != (len(x0),) or y.min(initial=1) == 1 or y.max(initial=0) == 0:
        raise ValueError("fusion=fit: needs same-model and different-model pairs (a folder of ≥ 2 camera models, "
                         "one with ≥ 2 photos or patches)")
    x = np.c_[x0, x0 * t[:, None]]
    n1, n0 = y.sum(), len(y) - y.sum()
    sw = np.where(y == 1, len(y) / (2 * n1), len(y) / (2 * n0))
    reg = np.eye(x.shape[1]) / float(c)
    reg[0, 0] = 0.0
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = _sigmoid(x @ w)
        step = np.linalg.solve((x * (sw * p * (1 - p))[:, None]).T @ x + reg, x.T @ (sw * (p - y)) + reg @ w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    k = x0.shape[1]
    return np.stack([w[:k], w[:k] + w[k:]])


@dataclass
class FittedFusion:
    """A fusion fitted on labelled pairs (:func:`fit_fusion`): ``weights[t]`` for pairs whose photos'
    luminance tables are different (``t`` 0) or identical (1); ``networks`` each network's file name and
    sha256, in order — applied only to those networks; ``fitted_on``: what it was fitted on."""

    weights: np.ndarray
    networks: list[dict]
    fitted_on: dict = field(default_factory=dict)
    path: str | None = None

    def scores(self, logits: Sequence[Any], same_table: Any) -> np.ndarray:
        """S per pair (float64) from the networks' logits (arrays of one shape: pairs, or a pair matrix)
        and each pair's identical-table flag (or one flag for all: ``True`` within one photo)."""
        if len(logits) != len(self.networks):
            raise ValueError(f"fusion: {self.path or 'a fitted fusion'} fuses {len(self.networks)} networks, "
                             f"given {len(logits)}")
        z = [np.asarray(x, dtype=np.float64) for x in logits]

        def linear(w: np.ndarray) -> np.ndarray:
            return w[0] + sum(wk * zk for wk, zk in zip(w[1:], z))

        flag = np.asarray(same_table, dtype=bool)
        if flag.ndim == 0:                         # one relation for all (one photo): its row only
            return _sigmoid(linear(self.weights[int(flag)]))
        try:
            t = np.broadcast_to(flag, z[0].shape)
        except ValueError as e:
            raise ValueError(f"same_table: one flag per pair {z[0].shape} or one for all expected, got shape "
                             f"{np.shape(same_table)}") from e
        return _sigmoid(np.where(t, linear(self.weights[1]), linear(self.weights[0])))

    def save(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), {"kind": KIND, "version": 1, "weights": self.weights.tolist(),
                                       "rows": ["different tables", "identical tables"],
                                       "columns": ["bias"] + [n["file"] for n in self.networks],
                                       "networks": self.networks, "fitted_on": self.fitted_on})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FittedFusion:
        """From a ``fusion.json``; a ValueError naming the file and what is wrong with it."""
        p = Path(str(path)).expanduser()
        if not p.is_file():
            raise ValueError(f"fusion: {p} not found — give logit, mean, fit (camsim-eval task=transfer) or the "
                             "fusion.json a fit wrote")
        try:
            d = json.loads(p.read_text())
            w = np.asarray(d["weights"], dtype=np.float64)
            nets = list(d["networks"])
            ok = d.get("kind") == KIND and w.shape == (2, len(nets) + 1) and np.isfinite(w).all()
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"fusion: {p} is not a fitted fusion ({e})") from e
        if not ok:
            raise ValueError(f"fusion: {p} is not a fitted fusion of camsim (kind {d.get('kind')!r}, weights "
                             f"{w.shape} for {len(nets)} networks)")
        return cls(w, nets, dict(d.get("fitted_on") or {}), str(p))


def check_fusion(rule: Any, allow_fit: bool = False) -> str | FittedFusion:
    """``rule`` when it is one of :data:`FUSION_RULES` (or ``"fit"`` where ``allow_fit``), a
    :class:`FittedFusion` as given or loaded from a path ending in ``.json``; else a ValueError naming
    the key ``fusion``."""
    if isinstance(rule, FittedFusion):
        return rule
    if str(rule).endswith(".json"):
        return FittedFusion.load(rule)
    if rule == FIT and not allow_fit:
        raise ValueError("fusion=fit: fitting needs labelled pairs — camsim-eval task=transfer ckpt=<a> (or "
                         "'ckpt=[a, b]') fusion=fit data=folder data.root=<labelled photos> writes fusion.json; give "
                         "its path here")
    if rule not in FUSION_RULES + ((FIT,) if allow_fit else ()):
        raise ValueError(f"fusion: {rule!r} is not one of {FUSION_RULES} nor a fitted fusion's .json (how several "
                         "networks' scores of a pair make one)")
    return str(rule)


def fuse_scores(logits: Sequence[Any], rule: str | FittedFusion = "logit", same_table: Any = None) -> np.ndarray:
    """One S per pair from several networks' logits of the same pairs (float64, their shape): ``"logit"``
    σ(mean logit), the mean of their log-odds — a network sure of its answer weighs more —;
    ``"mean"`` the mean of their S = σ(logit), each network's say bounded by 1/n; a
    :class:`FittedFusion` its weights for each pair's table relation (``same_table``, needed then)."""
    rule = check_fusion(rule)
    if isinstance(rule, FittedFusion):
        if same_table is None:
            raise ValueError("fuse_scores: a fitted fusion needs each pair's identical-table flag (same_table)")
        return rule.scores(logits, same_table)
    z = np.stack([np.asarray(x, dtype=np.float64) for x in logits])
    if rule == "logit":
        return _sigmoid(z.mean(axis=0))
    return _sigmoid(z).mean(axis=0)


__all__ = ["FUSION_RULES", "FIT", "FittedFusion", "check_fusion", "fit_fusion", "fuse_scores"]
