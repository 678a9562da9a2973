"""``report.md`` of an evaluation run: scenario table (proposed vs baseline), rates, matrix, sweep.

Reads the nested ``metrics.json`` layout of :mod:`camsim.eval.metrics` — ``{"eval": {...},
"baseline": {...}}`` (baseline optional); any other top-level metrics (e.g. ``phase_a``)
are listed at the end. Figures are linked by their path relative to the report; the names
``matrix``, ``matrix_baseline``, ``roc``, ``sweep``, ``sweep_baseline`` and ``confusion``
are placed in their sections, any other name under "Figures".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camsim.artefacts import atomic_write_bytes
from camsim.eval.metrics import flatten, matrix_from_metrics, order_models

SYSTEMS = (("eval", "proposed"), ("baseline", "baseline (Bray–Curtis)"))
SCENARIO_ROWS = (
    ("overall", "overall", "n_pairs"),
    ("known_known", "known vs known", "n/known_known"),
    ("known_unknown", "known vs unknown", "n/known_unknown"),
    ("unknown_unknown", "unknown vs unknown", "n/unknown_unknown"),
)
PLACED_FIGURES = ("matrix", "matrix_baseline", "roc", "sweep", "sweep_baseline", "confusion")


def md_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l, r, c), default l then r."""
    header = [str(h) for h in header]
    align = align or ("l" + "r" * (len(header) - 1))
    if len(align) != len(header):
        raise ValueError(f"align: {len(align)} letters for {len(header)} columns")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"rows: a row has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cell(x) for x in row) + " |")
    return "\n".join(lines)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _pct(v: Any, digits: int = 1) -> str:
    return "–" if _missing(v) else f"{100 * float(v):.{digits}f} %"


def _num(v: Any, fmt: str = ".4g") -> str:
    return "–" if _missing(v) else format(float(v), fmt)


def _int(v: Any) -> str:
    return "–" if _missing(v) else str(int(v))


def _matrix_md(mat: np.ndarray, models: Sequence[str], known: set[str]) -> str:
    n = len(models)
    cols = list(models[: max(n - 1, 0)])
    rows = []
    for i, name in enumerate(models):
        cells = [("" if math.isnan(mat[i, j]) else f"{100 * mat[i, j]:.1f}") if j < i else ""
                 for j in range(len(cols))]
        self_rate = "" if math.isnan(mat[i, i]) else f"{100 * mat[i, i]:.1f}"
        rows.append([name, "known" if name in known else "unknown", *cells, self_rate])
    return md_table(["model", "set", *cols, "Self"], rows, align="ll" + "r" * (len(cols) + 1))


def _figure(figures: Mapping[str, str], name: str, caption: str) -> str:
    return f"\n![{caption}]({figures[name]})\n" if name in figures else ""


def _sweep_md(rows: Sequence[Sequence[float]]) -> str:
    return md_table(["eta", "accuracy", "FAR (different called same)", "FRR (same called different)"],
                    [[_num(r[0]), _pct(r[1]), _pct(r[2]), _pct(r[3])] for r in rows])


def write_report(out_dir: str | Path, metrics: Mapping[str, Any], models: Sequence[str], known: Iterable[str],
                 figures: Mapping[str, str] | None = None,
                 extra_sections: Sequence[tuple[str, str]] = (),
                 sweeps: Mapping[str, Sequence[Sequence[float]]] | None = None, protocol: str = "") -> Path:
    """Write ``out_dir/report.md`` and return its path.

    ``metrics``: nested as ``metrics.json`` (needs ``eval``; ``baseline`` optional);
    ``models``: the evaluated models (shown known first); ``known``: models of set A;
    ``figures``: name -> PNG path relative to ``out_dir``; ``extra_sections``: (title,
    markdown) appended as ``##`` sections; ``sweeps``: system name -> rows of
    :func:`camsim.eval.metrics.threshold_sweep`, one table each; ``protocol``: how the pairs were
    drawn and where η came from, under the model lists.
    """
    if "eval" not in metrics or not isinstance(metrics["eval"], Mapping):
        raise ValueError("metrics: no 'eval' section (expected the nested metrics.json layout)")
    figures = dict(figures or {})
    known = {str(k) for k in known}
    models = order_models([str(m) for m in models], known)
    systems = [(key, label, flatten(metrics[key])) for key, label in SYSTEMS
               if isinstance(metrics.get(key), Mapping)]
    proposed = systems[0][2]
    base = systems[1][2] if len(systems) > 1 else None
    labels = [label for _, label, _ in systems]

    out: list[str] = ["# camsim evaluation report", ""]
    known_list = [m for m in models if m in known]
    unknown_list = [m for m in models if m not in known]
    out += [
        "Source differentiation (Mayer & Stamm, ICASSP 2018): for each pair of patches, "
        "\"same camera model\" iff the similarity S > eta.",
        "",
        f"- **Known models** (set A, seen in Phase A): {', '.join(known_list) or '–'}",
        f"- **Unknown models** (set C, never trained on): {', '.join(unknown_list) or '–'}",
        f"- Pairs scored: {_int(proposed.get('n_pairs'))}",
        *([f"- Protocol: {protocol}"] if protocol else []),
        "",
    ]

    # Scenario table
    out += ["## Accuracy by scenario", ""]
    rows = []
    for key, label, n_key in SCENARIO_ROWS:
        rows.append([label, _int(proposed.get(n_key)), *[_pct(f.get(f"acc/{key}")) for _, _, f in systems]])
    out += [md_table(["scenario", "pairs", *labels], rows), ""]
    if base is not None:
        out += [
            f"The baseline's threshold (on the Bray–Curtis similarity 1 − BC) is "
            f"**{_num(base.get('eta'), '.6g')}**, set so that its false-alarm rate on the unknown models — "
            f"their same pairs called \"different\", the paper's false alarm — is "
            f"{_pct(base.get('alarm_unknown'), 2)}, the achievable rate nearest the proposed system's "
            f"{_pct(proposed.get('alarm_unknown'), 2)} at eta = {_num(proposed.get('eta'))}; the two systems' "
            "detection rates (\"different\" said of different models) are then compared.",
            "",
        ]

    # Rates
    out += ["## Rates, ROC AUC and equal error rate", ""]
    rate_rows = [
        ("same pairs called same (TPR)", "same_rate", _pct),
        ("different pairs called different (TNR)", "diff_rate", _pct),
        ("FAR: different pairs called same", "far", _pct),
        ("different pairs with an unknown model called same", "far_unknown", _pct),
        ("false alarms on unknown models (same pairs called different)", "alarm_unknown", _pct),
        ("FRR: same pairs called different", "frr", _pct),
        ("threshold eta", "eta", lambda v: _num(v, ".6g")),
        ("ROC AUC", "auc", lambda v: _num(v, ".4f")),
        ("equal error rate", "eer", _pct),
    ]
    out += [md_table(["rate", *labels], [[name, *[fmt(f.get(k)) for _, _, f in systems]]
                                         for name, k, fmt in rate_rows]), ""]
    out.append(_figure(figures, "roc", "ROC curves"))

    # Models and self rates
    out += ["## Models and their Self rates", "",
            "Self rate: share of a model's same pairs correctly called \"same\".", ""]
    mats = [(label, matrix_from_metrics(f, models)) for _, label, f in systems]
    out += [md_table(["model", "set", *[f"Self, {label}" for label, _ in mats]],
                     [[m, "known" if m in known else "unknown", *[_pct(mat[i, i]) for _, mat in mats]]
                      for i, m in enumerate(models)], align="ll" + "r" * len(mats)), ""]

    # Pair matrices
    out += ["## Pair matrix (Fig. 2)", "",
            "Rate (%) of correctly saying \"different\" for each pair of models (row vs column); "
            "\"Self\": rate of correctly saying \"same\". Known models first.", ""]
    for (label, mat), fig_name in zip(mats, ("matrix", "matrix_baseline")):
        out += [f"### {label}", "", _matrix_md(mat, models, known), ""]
        out.append(_figure(figures, fig_name, f"pair matrix, {label}"))
    if base is not None and len(models) > 1:
        p_mat, b_mat = mats[0][1], mats[1][1]
        won, lost, tied, cells = 0, 0, 0, 0
        for i in range(len(models)):
            for j in range(i):
                if models[i] in known and models[j] in known:
                    continue
                p, b = p_mat[i, j], b_mat[i, j]
                if math.isnan(p) or math.isnan(b):
                    continue
                cells += 1
                won += p > b
                lost += p < b
                tied += p == b
        out += [f"On the {cells} model pairs with at least one unknown model, the proposed system's "
                f"\"different\" rate is higher than the baseline's on {won}, lower on {lost}, equal on {tied} "
                "(at the false-alarm rates above on the unknown models' same pairs).", ""]

    # Threshold sweep
    if sweeps or "sweep" in figures or "sweep_baseline" in figures:
        out += ["## Threshold sweep", "", "Decision \"same\" iff S > eta; accuracy over all pairs.", ""]
        for name, rows_ in (sweeps or {}).items():
            out += [f"### {name}", "", _sweep_md(rows_), ""]
        out.append(_figure(figures, "sweep", "threshold sweep"))
        out.append(_figure(figures, "sweep_baseline", "threshold sweep, baseline"))

    if "confusion" in figures:
        out += ["## Phase A classifier", "", _figure(figures, "confusion", "Phase A confusion matrix")]

    others = {k: v for k, v in flatten({k: v for k, v in metrics.items() if k not in dict(SYSTEMS)}).items()}
    if others:
        out += ["## Other metrics", "",
                md_table(["metric", "value"], [[k, _num(v, ".6g") if isinstance(v, (int, float)) else v]
                                               for k, v in sorted(others.items())]), ""]

    rest = [k for k in figures if k not in PLACED_FIGURES]
    if rest:
        out += ["## Figures", ""] + [_figure(figures, k, k) for k in rest]

    for title, body in extra_sections:
        out += [f"## {title}", "", body.rstrip(), ""]

    out_dir = Path(out_dir)
    path = out_dir / "report.md"
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"
    atomic_write_bytes(path, text.encode())
    return path
