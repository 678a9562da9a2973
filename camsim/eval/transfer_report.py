"""Outputs of the transfer evaluation (:mod:`camsim.eval.transfer`): tables, report, figures, scores.

Everything is written to a staging folder first and moved into the run directory only when
all of it is written, so an error never leaves a half-written result behind. Missing figures
(no pairs of a class) are "–" in tables and ``null`` in JSON, never NaN.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from camsim.artefacts import atomic_write_bytes, atomic_write_json
from camsim.eval.metrics import roc_curve
from camsim.eval.report import md_table
from camsim.plots import plot_roc

log = logging.getLogger("camsim")

LABELS = {
    "same_photo": "same model, same photo",
    "other_photo": "same model, different photos",
    "halves": "same photo, top vs bottom half",
    "diff_model": "different models",
    "diff_model_same_make": "different models, same make",
    "diff_model_other_make": "different models, different makes",
}
#: (figure key, column header, percentage?)
COLUMNS = (
    ("auc", "AUC", False), ("tpr", "TPR at η", True), ("tnr", "TNR at η", True), ("acc", "bal. acc. at η", True),
    ("tpr_far1", "TPR at FAR ≈ 1 %", True), ("tpr_far5", "TPR at FAR ≈ 5 %", True), ("eer", "EER", True),
    ("baseline_auc", "baseline AUC", False), ("baseline_tpr_same_far", "baseline TPR at same FAR", True),
)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _clean(v: Any) -> Any:
    """NaN -> None, numpy scalars -> python (for JSON)."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def fmt(value: Any, ci: dict | None = None, pct: bool = True, interval: bool = True) -> str:
    """``"87.5 % [80.1, 93.0]"`` / ``"0.876 [0.81, 0.93]"``; "–" for a missing figure."""
    if _missing(value):
        return "–"
    scale, unit, digits = (100.0, " %", 1) if pct else (1.0, "", 3)
    text = f"{scale * float(value):.{digits}f}{unit}"
    if interval and ci and not _missing(ci.get("lo")) and not _missing(ci.get("hi")):
        text += f" [{scale * ci['lo']:.{digits}f}, {scale * ci['hi']:.{digits}f}]"
        if ci.get("reps") and ci.get("n", ci["reps"]) < 0.95 * ci["reps"]:  # replicates of one class dropped
            text += f" ({ci['n']}/{ci['reps']} reps)"
    return text


def protocol_lines(cfg: DictConfig, run: dict, settings: Any) -> list[str]:
    """What was measured, in words: pairs, threshold, level, intervals, baseline."""
    t = cfg.transfer
    auto = " — eval.eta=auto: the η recorded with the network (no validation pairs here)" \
        if cfg.eval.eta == "auto" else ""
    thr = (f"fixed η = {run['eta']:.3g} (S > η: same){auto}" if t.threshold == "eta" else
           "best η per row — the highest balanced accuracy, chosen on these very pairs (optimistic: an oracle "
           "threshold, the same in every bootstrap replicate)")
    return [
        f"Every photo of every camera model of the source (no split), patches {settings.size} px on a "
        f"{settings.align}-px grid with entropy > {settings.min_entropy:g} nats, at most {t.patches_per_image} "
        "per photo.",
        f"Patch level (pooled over patch pairs): same photo {t.pairs.per_photo} pairs per photo; different photos "
        f"of one model {t.pairs.per_photo_pair} per photo pair (at most {t.pairs.photo_pairs_per_model} photo pairs "
        f"per model); different models {t.pairs.per_model_pair} per model pair (a photo of each drawn uniformly, "
        "then a patch).",
        f"Image level (one decision per pair of photos): the {t.image.aggregate} of {t.image.patch_pairs} patch-pair "
        f"scores; 'halves' = the top vs the bottom half of one photo; different models "
        f"{t.image.photo_pairs_per_model_pair} photo pairs per model pair.",
        f"Threshold: {thr}. Positives = the row's same-model pairs, negatives = the row's different-model pairs; "
        "balanced accuracy = mean of TPR and TNR.",
        f"Intervals: {100 * float(t.bootstrap.level):g} % percentile bootstrap, resampling camera models and, "
        f"within each, its photos ({t.bootstrap.reps} replicates; a replicate that drew one class only gives "
        "no AUC / TNR / EER, and an interval from fewer than 95 % of them says how many, '(n/reps reps)').",
        ("Baseline: Bray–Curtis similarity of the checkpoint's own Phase A softmax" if run.get("networks", 1) == 1
         else f"Baseline: the mean of the {run['networks']} networks' Bray–Curtis similarities, each of its own Phase A "
              "softmax") + "; FAR = different-model pairs called \"same\"; 'at same FAR' = its TPR at the proposed "
        "system's FAR at η.",
    ]


def result_rows(results: dict) -> list[tuple[str, dict]]:
    return [(name, r) for name, r in results.items()]


def _row_label(r: dict) -> tuple[str, str]:
    band = f" ({r['band_label']})" if r.get("band_label") else ""
    return (LABELS.get(r["positives"], r["positives"]) + band,
            LABELS.get(r["negatives"], r["negatives"]) + band)


def per_model_rows(table: Any, roles: dict, makes: list, levels: dict, eta_of: dict,
                   photos_in_source: dict | None = None) -> list[dict]:
    """One row per camera model: photos, patches, and per level and category its pairs and decision rate."""
    pm = table.photo_model
    rows = []
    for k, m in enumerate(table.models):
        photos = int((pm == k).sum())
        row: dict[str, Any] = {"model": m, "make": makes[k] or "", "training_set": roles.get(m) or "unknown",
                               "photos": photos, "photos_in_source": (photos_in_source or {}).get(m, photos),
                               "patches": int((pm[table.photo] == k).sum()),
                               "jpeg_quality": _quality_range(table.photo_quality[pm == k])}
        notes = []
        for level, ls in levels.items():
            m1, m2 = pm[ls.photo_1], pm[ls.photo_2]
            eta = eta_of[level]
            for cat in (("same_photo", "other_photo") if level == "patch" else ("halves", "other_photo")):
                sel = (ls.category == cat) & (m1 == k)
                row[f"{level}_{cat}_pairs"] = int(sel.sum())
                row[f"{level}_{cat}_tpr"] = float((ls.score[sel] > eta).mean()) if sel.any() else None
            sel = (ls.category == "diff_model") & ((m1 == k) | (m2 == k))
            row[f"{level}_diff_model_pairs"] = int(sel.sum())
            row[f"{level}_diff_model_tnr"] = float((ls.score[sel] <= eta).mean()) if sel.any() else None
        if photos == 1:
            notes.append("1 photo" + (" with patches" if row["photos_in_source"] > 1 else "")
                         + ": no cross-photo pairs")
        if len(table.models) == 1:
            notes.append("only model: no different-model pairs")
        if row["image_halves_pairs"] == 0:
            notes.append("no photo with patches in both halves")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def _quality_range(q: np.ndarray) -> str:
    """A model's photos' IJG-equivalent JPEG qualities as "93" or "70–99" ("" where none is a JPEG)."""
    q = q[q >= 0]
    if not len(q):
        return ""
    return f"{q.min()}" if q.min() == q.max() else f"{q.min()}–{q.max()}"


def _csv(rows: Sequence[dict], path: Path) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _missing(v) else f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


SHORT = {"same_photo": "same photo", "other_photo": "other photos", "halves": "two halves",
         "diff_model": "all", "diff_model_same_make": "same make", "diff_model_other_make": "other makes"}


def _cell(value: Any, ci: dict | None, pct: bool) -> str:
    """Value, and its interval on a second line (dim), for the console."""
    if _missing(value):
        return "–"
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    text = f"{scale * float(value):.{digits}f}"
    if ci and not _missing(ci.get("lo")) and not _missing(ci.get("hi")):
        text += f"\n[dim]{scale * ci['lo']:.{digits}f}–{scale * ci['hi']:.{digits}f}[/]"
    return text


def console_table(results: dict, title: str, caption: str):
    """The category table for the console: one row per contrast, intervals under the values."""
    from rich.table import Table

    tab = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    tab.add_column("level")
    tab.add_column("same model:")
    tab.add_column("vs diff. models:")
    tab.add_column("pairs +/−", justify="right")
    for _, head, pct in COLUMNS:
        tab.add_column(head + (" %" if pct else ""), justify="right")
    for name, r in results.items():
        pos, neg = SHORT.get(r["positives"], r["positives"]), SHORT.get(r["negatives"], r["negatives"])
        if r.get("band_label"):
            pos, neg = f"{pos}, {r['band_label']}", f"{neg}, {r['band_label']}"
        if r["empty"]:
            why = "no model has two photos with patches" if r["positives"] == "other_photo" else "no pairs"
            tab.add_row(r["level"], pos, neg, f"0/{r['n_neg']}", why, *[""] * (len(COLUMNS) - 1))
            continue
        f, ci = r["figures"], r["ci"]
        tab.add_row(r["level"], pos, neg, f"{r['n_pos']}/{r['n_neg']}",
                    *(_cell(f.get(k), ci.get(k), pct) for k, _, pct in COLUMNS))
    return tab


def console_title(cfg: DictConfig, run: dict) -> str:
    """The protocol in one line: threshold, what a row pools, what the intervals resample."""
    t = cfg.transfer
    thr = f"fixed η = {run['eta']:.3g}" if t.threshold == "eta" else "best η per row (oracle, on these pairs)"
    names = " + ".join(f"{Path(c).parent.name}/{Path(c).name}" for c in run["checkpoint"].split(" + "))
    return (f"Transfer evaluation of {names} on "
            f"{run['source_name']}: {thr}; patch rows pooled over patch pairs, image rows one decision per photo "
            f"pair ({t.image.aggregate} of {t.image.patch_pairs} patch-pair scores); under each value its "
            f"{100 * float(t.bootstrap.level):g} % bootstrap interval over camera models and photos")


def write_outputs(out_dir: Path, cfg: DictConfig, *, nets: Any, table: Any, roles: dict, makes: list, results: dict,
                  levels: dict, patch_pairs: Any, image_pairs: Any, patch_scores: tuple, image_patch_scores: tuple,
                  notes: list[str], fingerprints: tuple, settings: Any, run: dict, dropped: list[str]) -> dict:
    """Write every output to a staging folder, then move them into ``out_dir``; print the table."""
    from rich.console import Console


    stage = staged_outputs(out_dir)
    try:
        eta_fixed = float(run["eta"])
        eta_of, eta_why = {}, {}
        for level in levels:
            main = results.get(f"{level}/other_photo") or {}
            best = cfg.transfer.threshold != "eta" and main.get("eta") is not None
            eta_of[level] = float(main["eta"]) if best else eta_fixed
            eta_why[level] = ("the best η of this level's two-photo row, chosen on these test pairs (an oracle "
                              "threshold)" if best else "the fixed η" if cfg.transfer.threshold == "eta" else
                              "the fixed η: this level has no two-photo row to choose one on")
        run = {**run, "decision_eta": {lv: {"eta": eta_of[lv], "how": eta_why[lv]} for lv in levels}}
        models = per_model_rows(table, roles, makes, levels, eta_of, run.get("photos_in_source"))
        _csv(models, stage / "per_model.csv")
        ls = levels["image"]
        pm = table.photo_model
        img_rows = []
        for k in range(len(ls.score)):
            p, q = int(ls.photo_1[k]), int(ls.photo_2[k])
            img_rows.append({"category": ls.category[k], "model_1": table.models[pm[p]], "photo_1": table.photo_path[p],
                             "model_2": table.models[pm[q]], "photo_2": table.photo_path[q],
                             "patch_pairs": int((image_pairs.group == k).sum()), "score": float(ls.score[k]),
                             "baseline": None if ls.baseline is None else float(ls.baseline[k]),
                             "decision": "same" if ls.score[k] > eta_of["image"] else "different"})
        _csv(img_rows, stage / "photo_pairs.csv")
        _write_scores(stage / "scores.npz", table, roles, makes, patch_pairs, image_pairs, patch_scores,
                      image_patch_scores, levels, run)
        figures = {}
        for name, r in results.items():
            c = r.get("contrast")
            if c is None or c.positive.all():
                continue
            far, tpr, _ = roc_curve(c.score, c.positive)
            curves = {"proposed": (far, tpr, r["figures"]["auc"])}
            if c.baseline is not None:
                bf, bt, _ = roc_curve(c.baseline, c.positive)
                curves["baseline (Bray–Curtis)"] = (bf, bt, r["figures"]["baseline_auc"])
            pos, neg = _row_label(r)
            fname = f"roc_{name.replace('/', '_').replace('~', '_vs_')}.png"
            plot_roc(curves, stage / fname, points={"proposed": (1 - r["figures"]["tnr"], r["figures"]["tpr"])},
                     title=f"{r['level']} level: {pos}\nvs {neg}")
            figures[name] = fname
        proto = protocol_lines(cfg, run, settings)
        metrics = _metrics(cfg, nets, table, roles, makes, results, notes, fingerprints, settings, run, proto)
        atomic_write_json(stage / "metrics.json", metrics)
        (stage / "transfer.md").write_text(_markdown(cfg, nets, table, roles, makes, results, notes, fingerprints,
                                                     run, proto, models, figures, dropped))
        atomic_write_json(stage / "run.json", {**run, "models": {m: int((pm == k).sum()) for k, m in
                                                                 enumerate(table.models)}})
        written = publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for every column
        console = Console(width=200)
    console.print(console_table(results, console_title(cfg, run), "\n".join(proto + notes)))
    log.info("outputs: %s (%s)", out_dir, ", ".join(p.name for p in written if not p.name.startswith("roc_")))
    return metrics


def _write_scores(path: Path, table: Any, roles: dict, makes: list, pp: Any, ip: Any, patch_scores: tuple,
                  image_patch_scores: tuple, levels: dict, run: dict) -> None:
    """Every scored patch pair (patch level, and the patch pairs behind each image-level decision)
    with both patches' model, photo and pixel corner; the image-level pairs; the photos."""
    ps, pb = patch_scores
    ips, ipb = image_patch_scores
    i = np.r_[pp.i, ip.i].astype(np.int64)
    j = np.r_[pp.j, ip.j].astype(np.int64)
    cat = np.r_[np.asarray(pp.categories)[pp.category], np.asarray(ip.categories)[ip.category][ip.group]]
    level = np.r_[np.full(len(pp.i), "patch"), np.full(len(ip.i), "image")]
    group = np.r_[np.full(len(pp.i), -1), ip.group].astype(np.int64)
    pm = table.photo_model
    im = levels["image"]
    arrays = dict(
        models=np.asarray(table.models, dtype=str), makes=np.asarray([m or "" for m in makes], dtype=str),
        model_set=np.asarray([roles.get(m) or "" for m in table.models], dtype=str),
        photo_path=np.asarray(table.photo_path, dtype=str), photo_model=pm, photo_jpeg_quality=table.photo_quality,
        photo_jpeg_table=table.photo_table,
        patch_photo=table.photo, patch_yx=table.yx,
        level=level, category=cat, group=group, i=i, j=j,
        model_1=np.asarray(table.models, dtype=str)[pm[table.photo[i]]],
        model_2=np.asarray(table.models, dtype=str)[pm[table.photo[j]]],
        image_1=table.photo[i], image_2=table.photo[j], yx_1=table.yx[i], yx_2=table.yx[j],
        score=np.r_[ps, ips], baseline=np.r_[pb, ipb] if pb is not None else np.zeros(0),
        image_category=im.category.astype(str), image_photo_1=im.photo_1, image_photo_2=im.photo_2,
        image_score=im.score, image_baseline=im.baseline if im.baseline is not None else np.zeros(0),
        eta=np.float64(run["eta"]), aggregate=np.asarray(run["aggregate"]),
        decision_eta_patch=np.float64(run["decision_eta"]["patch"]["eta"]),
        decision_eta_image=np.float64(run["decision_eta"]["image"]["eta"]),
        fine_jpeg_quality=np.int64(run.get("fine_jpeg_quality") or -1),
        far_jpeg_gap=np.int64(run.get("far_jpeg_gap") or -1),
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _metrics(cfg, nets, table, roles, makes, results, notes, fingerprints, settings, run, proto) -> dict:
    pm = table.photo_model
    contrasts: dict[str, dict] = {}
    for name, r in results.items():
        level, _, key = name.partition("/")
        figs = {k: {"value": r["figures"].get(k), **{b: (r["ci"].get(k) or {}).get(b) for b in ("lo", "hi", "n", "reps")}}
                for k in r["figures"]}
        contrasts.setdefault(level, {})[key] = {"positives": r["positives"], "negatives": r["negatives"],
                                                **({"jpeg_band": r["band_label"]} if r.get("band_label") else {}),
                                                "n_pos": r["n_pos"], "n_neg": r["n_neg"], "eta": r["eta"], **figs}
    sets = nets.training_sets
    return _clean({"transfer": {
        **{k: run[k] for k in ("checkpoint", "source", "eta", "threshold", "aggregate")},
        "bootstrap": {"reps": int(cfg.transfer.bootstrap.reps), "level": float(cfg.transfer.bootstrap.level)},
        "patch_settings": {"size": settings.size, "align": settings.align, "min_entropy": settings.min_entropy},
        "training": {"a": sets["a"], "b": sets["b"], "data": fingerprints[0]}, "source_fingerprint": fingerprints[1],
        "models": {m: {"make": makes[k], "set": roles.get(m) or "unknown", "photos": int((pm == k).sum()),
                       "patches": int((pm[table.photo] == k).sum())} for k, m in enumerate(table.models)},
        "protocol": proto, "notes": notes, **contrasts}})


def _markdown(cfg, nets, table, roles, makes, results, notes, fingerprints, run, proto, models, figures, dropped) -> str:
    sets = nets.training_sets
    known = [m for m in table.models if roles.get(m)]
    unknown = [m for m in table.models if not roles.get(m)]
    lines = ["# Transfer evaluation", "",
             f"Checkpoint `{run['checkpoint']}` (feature layer `{nets.feature_layer}`), source `{run['source']}`.", "",
             f"- Trained on: set A = {', '.join(sets['a'])}; set B = "
             f"{'not recorded' if sets['b'] is None else ', '.join(sets['b'])}.",
             f"- Training data: `{json.dumps(fingerprints[0]) if fingerprints[0] else 'not recorded'}`.",
             f"- Known models here (trained on): {', '.join(f'{m} ({roles[m]})' for m in known) or 'none'}.",
             f"- Unknown models here: {', '.join(unknown) or 'none'}.", "", "## Protocol", "",
             *[f"- {p}" for p in proto], ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    for level in ("patch", "image"):
        rows = []
        for name, r in results.items():
            if r["level"] != level:
                continue
            pos, neg = _row_label(r)
            if r["empty"]:
                rows.append([pos, neg, f"0/{r['n_neg']}", "no pairs", *[""] * (len(COLUMNS) - 1)])
            else:
                rows.append([pos, neg, f"{r['n_pos']}/{r['n_neg']}",
                             *(fmt(r["figures"].get(k), r["ci"].get(k), pct) for k, _, pct in COLUMNS)])
        lines += [f"## {level.capitalize()} level", "",
                  md_table(["positives", "negatives", "pairs +/−", *(c[1] for c in COLUMNS)], rows,
                           "lll" + "r" * len(COLUMNS)), ""]
        for name, fname in figures.items():
            if name.startswith(level + "/"):
                pos, neg = _row_label(results[name])
                lines += [f"![ROC, {level} level: {pos} vs {neg}]({fname})", ""]
    head = ["model", "make", "trained on", "photos with patches/all", "patches", "JPEG q", "same photo: TPR", "other photos: TPR",
            "diff. models: TNR", "halves: TPR", "photo pairs: TPR", "diff. model photos: TNR", "note"]
    body = []
    for r in models:
        def rate(key: str) -> str:
            return fmt(r[key + "_tpr"] if key + "_tpr" in r else r[key + "_tnr"], None) + f" ({r[key + '_pairs']})"
        body.append([r["model"], r["make"] or "–", r["training_set"], f"{r['photos']}/{r['photos_in_source']}",
                     r["patches"], r["jpeg_quality"] or "–",
                     rate("patch_same_photo"), rate("patch_other_photo"), rate("patch_diff_model"),
                     rate("image_halves"), rate("image_other_photo"), rate("image_diff_model"), r["note"] or ""])
    at = "; ".join(f"{lv} level η = {d['eta']:.4g}, {d['how']}" for lv, d in run.get("decision_eta", {}).items())
    lines += ["## Per camera model", "", f"Decision rates at η ({at}; pairs in brackets); `per_model.csv`, "
              "`photo_pairs.csv` (its `decision` at the image level's η) and `scores.npz` hold every figure's pairs.", "",
              md_table(head, body, "lllrrr" + "r" * 6 + "l"), "",
              "JPEG q: the IJG-equivalent quality of the photos' luma quantisation tables (lowest–highest).", ""]
    if dropped:
        lines += [f"Left out (no usable patch): {', '.join(dropped)}.", ""]
    return "\n".join(lines)


__all__ = ["write_outputs", "per_model_rows", "protocol_lines", "fmt", "console_table", "LABELS"]


def staged_outputs(out_dir: Path):
    """A staging folder inside ``out_dir``; :func:`publish` moves its files into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".transfer-", dir=out_dir))


def publish(stage: Path, out_dir: Path, last: tuple[str, ...] = ("metrics.json", "run.json")) -> list[Path]:
    """Move every staged file into ``out_dir`` (``last`` ones at the end), then remove the stage."""
    names = sorted(p.name for p in stage.iterdir())
    names = [n for n in names if n not in last] + [n for n in last if n in names]
    for n in names:
        os.replace(stage / n, out_dir / n)
    shutil.rmtree(stage, ignore_errors=True)
    return [out_dir / n for n in names]
