"""Compare the jobs of a sweep (a Hydra multirun dir) without a W&B dashboard.

Each job dir holds ``.hydra/overrides.yaml`` (what the sweep set) and ``metrics.json``
(the evaluation); the comparison is one row per job: the swept parameters, then metrics.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from camsim.eval.metrics import flatten

#: η is among them: with eval.eta=auto each job decides at its own
DEFAULT_METRICS = ("eval/acc/overall", "eval/acc/known_known", "eval/acc/known_unknown",
                   "eval/acc/unknown_unknown", "eval/auc", "baseline/acc/unknown_unknown", "eval/eta")


def find_jobs(root: Path) -> list[Path]:
    """Job directories under ``root`` (any depth) that have Hydra's overrides file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    jobs = sorted({p.parent.parent for p in root.rglob(".hydra/overrides.yaml")},
                  key=lambda p: (len(p.parts), str(p.parent), _num(p.name), p.name))  # one sweep's jobs together
    if not jobs:
        raise FileNotFoundError(f"no Hydra job dirs (with .hydra/overrides.yaml) under {root}")
    return jobs


def _num(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return float("inf")


def load_rows(root: Path, metrics: Sequence[str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of (swept parameter values + metrics); the parameters that differ between jobs.

    ``job`` is the job's folder below ``root`` (several sweeps under one root stay apart); a job
    lacking a metric says so in ``status``; a metric asked for that no job has is an error listing
    the ones they have (a typo, or the sweep of another task, gave an empty column marked "ok").
    ``metrics=None``: :data:`DEFAULT_METRICS`, those no job has left out (``eval.baseline=false``)."""
    root = Path(root)
    jobs = []  # (folder, swept parameters, flat metrics or None without metrics.json)
    for job in find_jobs(root):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        mfile = job / "metrics.json"
        jobs.append((job, dict(o.split("=", 1) for o in overrides if "=" in o),
                     flatten(json.loads(mfile.read_text())) if mfile.exists() else None))
    available = {k for _, _, flat in jobs for k, v in (flat or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
    has = {k for _, _, flat in jobs for k, v in (flat or {}).items() if v is not None}
    if metrics is None:  # the default columns some job has (all of them when none has any)
        metrics = [m for m in DEFAULT_METRICS if m in has] or list(DEFAULT_METRICS)
    absent = [m for m in metrics if m not in has]
    if absent and available:
        near = sorted(available)
        raise ValueError(f"camsim-compare: no job under {root} has {', '.join(absent)}; its metrics.json files hold "
                         f"{len(near)} figures, e.g. {', '.join(near[:12])}{' …' if len(near) > 12 else ''} "
                         "(choose with --metrics)")
    rows = []
    for job, params, flat in jobs:
        row: dict[str, Any] = {"job": str(job.relative_to(root)) if job != root else job.name,
                               **{k.lstrip("+~"): v for k, v in params.items()}}
        row.update({m: (flat or {}).get(m) for m in metrics})
        lacking = [m for m in metrics if row[m] is None]
        row["status"] = "no metrics.json" if flat is None else f"missing: {', '.join(lacking)}" if lacking else "ok"
        rows.append(row)
    keys = sorted({k for r in rows for k in r} - set(metrics) - {"job", "status"})
    swept = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1] or keys
    return swept, rows


def summarise(rows: list[dict], swept: Sequence[str], metrics: Sequence[str],
              over: Sequence[str]) -> tuple[list[str], list[dict]]:
    """One row per setting of the swept parameters other than ``over`` (e.g. ``seed``): ``n`` jobs,
    and each metric's mean, ``min`` and ``max`` over the jobs that have it — a setting's figure in
    expectation and its spread between training draws. ``status`` names a metric some jobs lack."""
    unknown = [k for k in over if k not in swept]
    if unknown:
        raise ValueError(f"camsim-compare: --over {', '.join(unknown)}: not a parameter the jobs differ in; "
                         f"swept: {', '.join(swept) or 'none'}")
    keep = [k for k in swept if k not in over]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:  # in the jobs' order: the first setting first
        groups.setdefault(tuple(r.get(k) for k in keep), []).append(r)
    out = []
    for key, rs in groups.items():
        row: dict[str, Any] = {**dict(zip(keep, key)), "n": len(rs)}
        short = []
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) is not None]
            row[m] = float(np.mean(vals)) if vals else None
            row[f"{m} min"], row[f"{m} max"] = (min(vals), max(vals)) if vals else (None, None)
            if len(vals) < len(rs):
                short.append(f"{m} in {len(vals)} of {len(rs)}")
        row["status"] = f"only {', '.join(short)}" if short else "ok"
        out.append(row)
    return [*keep, "n", *(c for m in metrics for c in (m, f"{m} min", f"{m} max")), "status"], out


def write_comparison(root: Path, out: Path | None = None, metrics: Sequence[str] | None = None,
                     x: str | None = None, over: Sequence[str] = ()) -> tuple[Path, Path | None, list[str], list[dict]]:
    """Write ``comparison.csv`` and ``comparison.png`` (metric vs the swept parameter ``x``);
    ``metrics=None``: the default columns the jobs have (:func:`load_rows`). With ``over``
    (e.g. ``["seed"]``) also ``comparison_over.csv``, :func:`summarise`'s rows, which are returned
    instead of the jobs'."""
    swept, rows = load_rows(root, metrics)
    metrics = [m for m in (metrics or DEFAULT_METRICS) if any(m in r for r in rows)]
    summary = summarise(rows, swept, metrics, over) if over else None  # a bad --over fails before any write
    out = Path(out) if out else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["job", *swept, *metrics, "status"]
    csv_path = out / "comparison.csv"
    _write_csv(csv_path, columns, rows)
    png = _plot(rows, x or (swept[0] if swept else None), swept, metrics, out / "comparison.png")
    if summary is not None:
        csv_path = out / "comparison_over.csv"
        _write_csv(csv_path, *summary)
        return csv_path, png, *summary
    return csv_path, png, columns, rows


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _plot(rows: list[dict], x: str | None, swept: list[str], metrics: Sequence[str], path: Path) -> Path | None:
    if x is None:
        return None
    if x not in swept:
        raise ValueError(f"camsim-compare: --x {x!r} is not a swept parameter; swept: {swept}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in swept if k != x]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(", ".join(f"{k}={r.get(k)}" for k in others) or "all jobs", []).append(r)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for label, rs in groups.items():
            xs = [r.get(x) for r in rs]
            numeric = all(_is_number(v) for v in xs)
            order = np.argsort([float(v) for v in xs]) if numeric else np.arange(len(xs))
            xv = [float(xs[i]) if numeric else str(xs[i]) for i in order]
            yv = [np.nan if rs[i].get(m) is None else float(rs[i][m]) for i in order]
            ax.plot(xv, yv, marker="o", label=label)
        ax.set_title(m, fontsize=8)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if len(groups) > 1:
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def format_table(columns: list[str], rows: list[dict], over: Sequence[str] = ()) -> Any:
    """The jobs' table; with ``over``, :func:`summarise`'s: each metric as "mean [min, max]"."""
    from rich.markup import escape
    from rich.table import Table

    spread = {c for c in columns if f"{c} min" in columns}
    shown = [c for c in columns if not (c.endswith((" min", " max")) and c[:-4] in spread)]
    t = Table(title=escape(f"sweep comparison: mean [min, max] over {', '.join(over)}") if over else "sweep comparison")
    for c in shown:
        t.add_column(c.replace("eval/acc/", "acc ").replace("eval/", ""), justify="right")
    for r in rows:
        t.add_row(*[escape(f"{_fmt(r.get(c))} [{_fmt(r.get(c + ' min'))}, {_fmt(r.get(c + ' max'))}]")
                    if c in spread and r.get(c) is not None else escape(_fmt(r.get(c))) for c in shown])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)
