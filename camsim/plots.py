"""Figures of the evaluation: Fig. 2 pair matrix, ROC, Phase A confusion, threshold sweep.

Every function builds a standalone :class:`matplotlib.figure.Figure` on the Agg canvas (no
pyplot, no global state, nothing left open), saves it as PNG when ``path`` is given
(atomically, via :mod:`camsim.artefacts`) and returns it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from camsim.artefacts import atomic_write_bytes

KNOWN_COLOUR = "tab:blue"
UNKNOWN_COLOUR = "tab:red"


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is None:
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def _check_square(matrix: np.ndarray, names: Sequence[str], what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise ValueError(f"{what}: expected a [{len(names)}, {len(names)}] matrix, got shape {m.shape}")
    return m


def _text_colour(value: float) -> str:
    return "white" if value < 0.6 else "black"


def plot_pair_matrix(matrix: np.ndarray, models: Sequence[str], known: Iterable[str],
                     path: str | Path | None = None, title: str = "") -> Figure:
    """The paper's Fig. 2: lower-triangular "different" rates plus a separate "Self" column.

    ``matrix`` as from :func:`camsim.eval.metrics.pair_matrix` (rows/columns in the order
    of ``models``; diagonal = Self rates). Known model labels are blue, unknown red, and a
    line separates the known block from the unknown one (for the known-first order).
    """
    models = [str(m) for m in models]
    m = _check_square(matrix, models, "matrix")
    known = set(known)
    n = len(models)
    ncol = max(n - 1, 0)  # off-diagonal columns 0..n-2, then a gap, then Self
    disp = np.full((n, ncol + 2), np.nan)
    for i in range(n):
        for j in range(min(i, ncol)):
            disp[i, j] = m[i, j]
        disp[i, ncol + 1] = m[i, i]
    fig = _new_figure((1.0 + 0.62 * (ncol + 2), 1.0 + 0.5 * n))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(disp), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(disp):
        if not math.isnan(v):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color=_text_colour(v))
    ax.set_yticks(range(n), models)
    ax.set_xticks(list(range(ncol)) + [ncol + 1], models[:ncol] + ["Self"], rotation=60, ha="right")
    for lab, name in zip(ax.get_yticklabels(), models):
        lab.set_color(KNOWN_COLOUR if name in known else UNKNOWN_COLOUR)
    for lab, name in zip(ax.get_xticklabels()[:ncol], models[:ncol]):
        lab.set_color(KNOWN_COLOUR if name in known else UNKNOWN_COLOUR)
    ax.get_xticklabels()[-1].set_fontweight("bold")
    n_known = sum(name in known for name in models)
    if 0 < n_known < n:
        ax.axhline(n_known - 0.5, color="black", lw=1.2)
        if n_known <= ncol:
            ax.axvline(n_known - 0.5, color="black", lw=1.2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="correct rate (cells in %)")
    if title:
        ax.set_title(title, fontsize=9, loc="left", pad=18)
    ax.legend(handles=[Patch(color=KNOWN_COLOUR, label="known"), Patch(color=UNKNOWN_COLOUR, label="unknown")],
              loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize=8,
              handlelength=1.0, borderaxespad=0.2)
    _save(fig, path)
    return fig


def write_matrix_csv(matrix: np.ndarray, models: Sequence[str], known: Iterable[str],
                     path: str | Path) -> Path:
    """The Fig. 2 matrix as CSV: ``model, set, <one column per model>, self``.

    Cell (row i, column j < i) is the correct "different" rate of the pair; other model
    columns are empty; ``self`` is the diagonal (correct "same" rate); NaN is empty.
    """
    models = [str(m) for m in models]
    m = _check_square(matrix, models, "matrix")
    known = set(known)

    def fmt(v: float) -> str:
        return "" if math.isnan(v) else f"{v:.6f}"

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "set", *models, "self"])
    for i, name in enumerate(models):
        cells = [fmt(m[i, j]) if j < i else "" for j in range(len(models))]
        w.writerow([name, "known" if name in known else "unknown", *cells, fmt(m[i, i])])
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path | None = None,
             points: Mapping[str, tuple[float, float]] | None = None, title: str = "ROC") -> Figure:
    """ROC curves on one plot: ``curves[name] = (far, tpr, auc)``; ``points[name] = (far, tpr)``
    marks each system's operating point at its eta (e.g. ``(far, same_rate)`` of its metrics)."""
    fig = _new_figure((4.8, 4.4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="chance")
    colours = {}
    for name, (far, tpr, auc) in curves.items():
        (line,) = ax.plot(np.asarray(far), np.asarray(tpr), lw=1.6, label=f"{name} (AUC {auc:.3f})")
        colours[name] = line.get_color()
    for name, (pf, pt) in (points or {}).items():
        ax.plot([pf], [pt], marker="o", ms=7, mfc="none", mew=1.6, color=colours.get(name, "black"),
                ls="none", label=f"{name} at eta: FAR {100 * pf:.1f} %, TPR {100 * pt:.1f} %")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-alarm rate (different pairs called same)")
    ax.set_ylabel("detection rate (same pairs called same)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)
    return fig


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | Path | None = None,
                   title: str = "Phase A confusion (row-normalised)") -> Figure:
    """Row-normalised confusion matrix (rows = true class), per-class accuracy in the row labels.

    ``confusion``: counts [K, K]; the title carries the overall accuracy (trace / total).
    """
    names = [str(c) for c in class_names]
    c = _check_square(confusion, names, "confusion")
    k = len(names)
    rows = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, c / np.where(rows > 0, rows, 1.0), np.nan)
    per_class = np.diag(norm)
    total = c.sum()
    overall = float(np.trace(c) / total) if total > 0 else float("nan")
    size = 2.0 + 0.32 * k
    fig = _new_figure((size + 1.5, size))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(norm), cmap="Blues", vmin=0.0, vmax=1.0)
    if k <= 25:
        for (i, j), v in np.ndenumerate(norm):
            if not math.isnan(v) and v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")
    labels = [f"{n} ({'-' if math.isnan(a) else f'{100 * a:.1f} %'})" for n, a in zip(names, per_class)]
    fs = 7 if k <= 25 else 5
    ax.set_yticks(range(k), labels, fontsize=fs)
    ax.set_xticks(range(k), names, rotation=70, ha="right", fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    ax.set_title(f"{title}\noverall accuracy {100 * overall:.1f} %", fontsize=9)
    _save(fig, path)
    return fig


def plot_threshold_sweep(rows: Sequence[tuple[float, float, float, float]], path: str | Path | None = None,
                         eta: float | None = None, title: str = "threshold sweep") -> Figure:
    """Accuracy, FAR and FRR against eta from :func:`camsim.eval.metrics.threshold_sweep` rows;
    ``eta`` draws a vertical line at the threshold in use."""
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    fig = _new_figure((5.2, 3.6))
    ax = fig.add_subplot()
    ax.plot(arr[:, 0], arr[:, 1], marker=".", label="accuracy")
    ax.plot(arr[:, 0], arr[:, 2], marker=".", label="FAR (different called same)")
    ax.plot(arr[:, 0], arr[:, 3], marker=".", label="FRR (same called different)")
    if eta is not None and math.isfinite(eta):
        ax.axvline(eta, color="0.4", ls="--", lw=1, label=f"eta = {eta:.3g}")
    ax.set_xlabel("eta (same iff S > eta)")
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    _save(fig, path)
    return fig
