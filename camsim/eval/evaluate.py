"""Source-differentiation evaluation: score the evaluation pairs, write metrics, figures, report.

Where a pair is scored: features f(X) of every evaluation patch are computed once
(:class:`camsim.models.feature_pass.FeaturePass`); each pair (i, j) is then S(f_i, f_j) from the
similarity head (:meth:`camsim.models.similarity.SimilarityNet.score_pairs`, called through
:meth:`camsim.lit.phase_b.ForensicSimilarity.score_pairs` by :func:`camsim.pipeline.stage_eval`).
The Bondi et al. baseline scores the same pairs with 1 − Bray–Curtis of the Phase A
classifier's softmax outputs, its threshold set to match the proposed system's
false-alarm rate on the unknown cases (docs/method.md, "Baseline").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camsim import plots
from camsim.artefacts import atomic_write_json
from camsim.eval import metrics as M
from camsim.eval.report import write_report

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Metrics of one evaluation (flat ``eval/...`` and ``baseline/...`` keys) and what its
    report needs: the models in report order, the figures written, the threshold sweeps."""

    flat: dict
    models: list[str]
    known: list[str]
    figures: dict[str, str]
    sweeps: dict[str, list]


def evaluate_scores(score: np.ndarray, baseline_sim: np.ndarray | None, model_1: np.ndarray, model_2: np.ndarray,
                    known: Sequence[str], eta: float, out_dir: Path, sweep_etas: Sequence[float]) -> Evaluation:
    """Metrics of scored pairs (and of the baseline on the same pairs) and their figures in
    ``out_dir``: ``matrix.png``/``matrix.csv`` (Fig. 2), ``roc.png``, ``sweep.png`` and the
    baseline's matrix. :func:`write_evaluation` then writes ``metrics.json`` and ``report.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = M.order_models(set(model_1) | set(model_2), known)
    proposed = M.source_differentiation_metrics(score, model_1, model_2, known, eta, models)
    flat = M.prefixed(proposed, "eval")
    same = np.asarray(model_1) == np.asarray(model_2)
    figures: dict[str, str] = {}
    sweeps = {"proposed": M.threshold_sweep(score, same, sweep_etas)}
    curves = {"proposed": _roc(score, same)}
    points = {"proposed": (proposed["far"], proposed["same_rate"])}

    matrix = M.pair_matrix(score, model_1, model_2, eta, models)
    plots.plot_pair_matrix(matrix, models, known, out_dir / "matrix.png", title=f"proposed (η = {eta:.3g})")
    plots.write_matrix_csv(matrix, models, known, out_dir / "matrix.csv")
    figures["matrix"] = "matrix.png"

    if baseline_sim is not None:
        base = M.baseline_metrics(baseline_sim, model_1, model_2, known, target_alarm=proposed["alarm_unknown"],
                                  models=models)
        flat.update(M.prefixed(base, "baseline"))
        bmatrix = M.pair_matrix(baseline_sim, model_1, model_2, base["eta"], models)
        plots.plot_pair_matrix(bmatrix, models, known, out_dir / "matrix_baseline.png",
                               title="baseline: Bray–Curtis of softmax outputs")
        plots.write_matrix_csv(bmatrix, models, known, out_dir / "matrix_baseline.csv")
        figures["matrix_baseline"] = "matrix_baseline.png"
        curves["baseline (Bray–Curtis)"] = _roc(baseline_sim, same)
        points["baseline (Bray–Curtis)"] = (base["far"], base["same_rate"])

    plots.plot_roc(curves, out_dir / "roc.png", points=points)
    figures["roc"] = "roc.png"
    plots.plot_threshold_sweep(sweeps["proposed"], out_dir / "sweep.png", eta=eta)
    figures["sweep"] = "sweep.png"
    return Evaluation(flat, models, list(known), figures, sweeps)


def write_evaluation(out_dir: Path, ev: Evaluation, sections: Sequence[tuple[str, str]] = (),
                     protocol: str = "") -> None:
    """``metrics.json`` (nested) and ``report.md`` of an evaluation, with its ``protocol`` line and
    extra report ``sections``."""
    nested = M.nest(ev.flat)
    atomic_write_json(Path(out_dir) / "metrics.json", nested)
    write_report(out_dir, nested, ev.models, ev.known, ev.figures, extra_sections=sections, sweeps=ev.sweeps,
                 protocol=protocol)


def scenario_table(flat: dict) -> tuple[str, list[str], list[list]]:
    """The scenario accuracies of both systems as a logger table ``(key, columns, rows)``."""
    rows = [[s, flat.get(f"eval/acc/{s}"), flat.get(f"baseline/acc/{s}")] for s in M.SCENARIOS]
    return "eval/scenarios", ["scenario", "proposed", "baseline"], rows


def _roc(score: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    far, tpr, _ = M.roc_curve(score, same)
    return far, tpr, M.roc_auc(score, same)


def scenario_line(flat: dict, prefix: str = "eval") -> str:
    """One line with the paper's scenario accuracies and AUC, for the console."""
    def g(k: str, fmt: str) -> str:  # a scenario without pairs: "n/a", not "nan%"
        v = flat.get(f"{prefix}/{k}")
        return "n/a" if v is None or v != v else format(v, fmt)

    return (f"overall {g('acc/overall', '.1%')} · known–known {g('acc/known_known', '.1%')} · "
            f"known–unknown {g('acc/known_unknown', '.1%')} · unknown–unknown {g('acc/unknown_unknown', '.1%')} · "
            f"AUC {g('auc', '.3f')}")
