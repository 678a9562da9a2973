"""Source-differentiation evaluation: score the evaluation pairs, write metrics, figures, report.

Where a pair is scored: features f(X) of every evaluation patch are computed once; each pair
(i, j) is then S(f_i, f_j) from the similarity head (:meth:`ForensicSimilarity.score_pairs`).
The Bondi et al. baseline scores the same pairs with 1 − Bray–Curtis of the Phase A
classifier's softmax outputs, its threshold set to match the proposed system's
false-alarm rate on the unknown cases (method.md, "Baseline").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camsim.artefacts import atomic_write_json
from camsim.eval import metrics as M
from camsim.eval import plots
from camsim.eval.report import write_report

log = logging.getLogger(__name__)


def evaluate_scores(score: np.ndarray, baseline_sim: np.ndarray | None, model_1: np.ndarray, model_2: np.ndarray,
                    known: Sequence[str], eta: float, out_dir: Path, sweep_etas: Sequence[float],
                    extra_metrics: dict | None = None, extra_sections: list[tuple[str, str]] | None = None,
                    before_report: Callable[[dict], None] | None = None) -> dict:
    """Metrics of scored pairs (and of the baseline on the same pairs) → files in ``out_dir``.

    Writes ``metrics.json``, ``matrix.png``/``matrix.csv`` (Fig. 2), ``roc.png``,
    ``sweep.png``, the baseline's matrix, and ``report.md``. ``before_report(flat)`` may add
    metrics (and append to ``extra_sections``) before they are written. Returns the flat metrics.
    """
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
        base = M.baseline_metrics(baseline_sim, model_1, model_2, known, target_far=proposed["far_unknown"],
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
    if extra_metrics:
        flat.update(extra_metrics)
    if before_report is not None:  # adds metrics / report sections computed from these results
        before_report(flat)
    nested = M.nest(flat)
    atomic_write_json(out_dir / "metrics.json", nested)
    write_report(out_dir, nested, models, known, figures, extra_sections=extra_sections or (), sweeps=sweeps)
    return flat


def _roc(score: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    far, tpr, _ = M.roc_curve(score, same)
    return far, tpr, M.roc_auc(score, same)


def scenario_line(flat: dict, prefix: str = "eval") -> str:
    """One line with the paper's scenario accuracies and AUC, for the console."""
    g = lambda k: flat.get(f"{prefix}/{k}", float("nan"))  # noqa: E731
    return (f"overall {g('acc/overall'):.1%} · known–known {g('acc/known_known'):.1%} · "
            f"known–unknown {g('acc/known_unknown'):.1%} · unknown–unknown {g('acc/unknown_unknown'):.1%} · "
            f"AUC {g('auc'):.3f}")


def log_to_loggers(loggers: Sequence[Any], flat: dict, out_dir: Path) -> None:
    """Scenario metrics, matrix / ROC pictures and the scenario table to the run's loggers."""
    from camsim.lit.logging import log_images, log_table

    scalars = {k: float(v) for k, v in flat.items()
               if "/pairs/" not in k and isinstance(v, (int, float)) and np.isfinite(v)}
    for lg in loggers:
        lg.log_metrics(scalars)
    images = {f"eval/{p.stem}": p for p in sorted(Path(out_dir).glob("*.png"))}
    log_images(loggers, images)
    rows = [[s, flat.get(f"eval/acc/{s}"), flat.get(f"baseline/acc/{s}")] for s in M.SCENARIOS]
    log_table(loggers, "eval/scenarios", ["scenario", "proposed", "baseline"], rows)


def difficulty_check(data: Any, phase_a_metrics: dict, flat: dict, models: Sequence[str],
                     max_per_model: int = 400) -> tuple[dict, str]:
    """Is the task about camera traces? (issue 3's check, on every run's own data)

    Logistic classifiers on *global* patch statistics (mean, std, histogram) and on the JPEG
    branch's block-DCT histograms of set A's patches, next to the Phase A network's test
    accuracy on the same models; and, where the
    source knows camera families (the simulator's ``cameras.json``), the evaluation's
    "different" rates for same-family pairs vs cross-family pairs.
    """
    from camsim.eval.report import md_table
    from camsim.synth.difficulty import difficulty_report

    ps = data.patch_sets("phase_a")
    rng = np.random.default_rng(0)

    def take(subset: str) -> tuple[np.ndarray, list[str]]:
        xs, ys = [], []
        for m in data.split.a:
            p = ps[(m, subset)]
            idx = np.sort(rng.permutation(len(p))[:max_per_model])
            xs.append(np.asarray(p.patches[idx]))
            ys += [m] * len(idx)
        return np.concatenate(xs), ys

    (xtr, ytr), (xte, yte) = take("train"), take("test")
    glob = difficulty_report(xtr, ytr, xte, yte, features_kind="global", pairwise=False)
    jpeg = difficulty_report(xtr, ytr, xte, yte, features_kind="jpeg", pairwise=False)
    out = {"difficulty/global_stats_acc": glob.accuracy, "difficulty/jpeg_stats_acc": jpeg.accuracy,
           "difficulty/chance": glob.chance, "difficulty/phase_a_test_acc": phase_a_metrics.get("phase_a/test/acc")}
    rows = [["global patch statistics (mean, std, histogram), logistic", f"{glob.accuracy:.1%}"],
            ["JPEG block-DCT histograms (the JPEG branch's features), logistic", f"{jpeg.accuracy:.1%}"],
            ["Phase A network (test images)", "n/a" if out["difficulty/phase_a_test_acc"] is None
             else f"{out['difficulty/phase_a_test_acc']:.1%}"],
            ["chance", f"{glob.chance:.1%}"]]
    text = (f"Classifying the {len(data.split.a)} camera models of set A from patches of their test images:\n\n"
            + md_table(["classifier", "accuracy"], rows))
    families = _families(data)
    if families:
        within, cross = [], []
        for key, rate in flat.items():
            if key.startswith("eval/pairs/") and rate is not None:
                a, b = key[len("eval/pairs/"):].split("|")
                if a != b and a in families and b in families:
                    (within if families[a] == families[b] else cross).append(rate)
        if within and cross:
            out["difficulty/within_family_diff_rate"] = float(np.mean(within))
            out["difficulty/cross_family_diff_rate"] = float(np.mean(cross))
            text += ("\n\nRate of correctly saying \"different\" (evaluation pairs, proposed system): "
                     f"same-family pairs {np.mean(within):.1%} ({len(within)} model pairs), "
                     f"cross-family pairs {np.mean(cross):.1%} ({len(cross)} model pairs).")
    return out, text


def _families(data: Any) -> dict[str, str]:
    """model → family for a rendered simulator catalogue; {} for other sources."""
    from camsim.synth.render import load_cameras

    root = getattr(data.index, "root", None)
    if root is None or not (Path(root) / "cameras.json").is_file():
        return {}
    return {name: cam.family for name, cam in load_cameras(root).items()}
