"""The splicing benchmark (``camsim-eval task=splicing``): localisation against ground truth.

The pipeline's ``splicing`` stage (:func:`camsim.pipeline.stage_splicing`) hands it a trained
network and the image sets; this module localises, scores and reports.

Image sets: simulated splices from two different cameras of the evaluation models — known
(⊂ A) and unknown (C) — on scenes no training image shows, with unspliced controls; a folder
of real forgeries with masks (``splicing.real_dir``: ``images/`` + ``masks/<stem>_mask.png``);
and a folder of authentic photos (``splicing.authentic_dir``, searched recursively; no masks),
the real set's controls. Every image is localised in every configured mode.

Each mode's image-level threshold is calibrated first on authentic images that are not in the
benchmark — simulated unspliced images from the evaluation cameras by default
(``splicing.calibration_images``), any folder of authentic photos by override
(``splicing.calibration_dir``) — to ``splicing.target_far`` false alarms. Their rows (kind
``calibration``, decided at that threshold) join ``splicing.csv``: how far the false-alarm rate of
a threshold set on one collection of photos moves on another can be read off there.

Reported per set and mode, each figure with its protocol named in the JSON and the report:

- image level: detection AUC (image score, spliced vs controls) and the false-alarm rate at
  the operating threshold (share of controls called spliced);
- pixel level, on the spliced images: F1, MCC and IoU under two protocols — *fixed*: the
  binary map as decided, no inversion, what an analyst gets; *best*: the best threshold per
  image on the continuous map, better of map and inverted map, what papers usually print —
  each as a per-image mean and pooled over pixels; no mask border excluded.

An image that cannot be read or localised is a row with ``status=error`` and its message, counted
and listed in the report — never dropped.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from camsim.artefacts import atomic_write_json
from camsim.data.io import error_reason, read_rgb
from camsim.data.sources import IMAGE_EXTENSIONS
from camsim.eval.report import md_table
from camsim.localize.engine import calibrate_threshold, expected_far
from camsim.localize.outputs import (
    METRICS,
    PROTOCOL_BEST,
    PROTOCOL_FIXED,
    detection_auc,
    image_confusions,
    overlay_image,
    protocol_name,
)
from camsim.localize.run import IMAGE_ERRORS, Localizer, image_error
from camsim.progress import track

log = logging.getLogger("camsim")

#: the two named pixel-metric protocols every figure is reported under
PROTOCOLS = {"fixed": PROTOCOL_FIXED, "best": PROTOCOL_BEST}


@dataclass
class ImageSet:
    """Images of the benchmark: ``records`` (manifest rows: name, image, mask or None, spliced,
    host/donor model) relative to ``folder``; ``known``: the known (set A) models, for the
    scenario column of simulated splices."""

    kind: str  # "synthetic" | "real"
    folder: Path
    records: list[dict]
    known: set | None = None


def splicing_benchmark(loc: Localizer, image_sets: Sequence[ImageSet], sc: Any, eta: float,
                       min_entropy: float | None, out: Path, checkpoint: str,
                       calibration: ImageSet | None = None, notes: Sequence[str] = ()) -> dict:
    """Localise every image of ``image_sets`` in every mode of ``sc`` (the ``splicing`` node);
    write ``splicing.csv`` / ``.json`` / ``.md`` into ``out`` and return the results.

    ``eta``: the reference mode's patch threshold (the run's η); ``min_entropy``: patches at
    or below it are undecidable (``None``: the checkpoint's training recipe). ``calibration``:
    authentic images on which each mode's image-level threshold is set to ``sc.target_far``
    false alarms (:func:`calibrate`); without them the engine's uncalibrated defaults decide.
    ``notes``: what the report must say first (a split that contradicts the network's training record).
    """
    out.mkdir(parents=True, exist_ok=True)
    cal, rows = calibrate(loc, sc, calibration, eta, min_entropy)
    results: dict[str, Any] = {"checkpoint": checkpoint, "notes": list(notes),
                               "protocols": {k: {**p, "name": protocol_name(p)} for k, p in PROTOCOLS.items()},
                               "calibration": cal, "max_clipped": getattr(sc, "max_clipped", None)}
    thresholds = {m: c["threshold"] for m, c in cal.items()}
    for s in image_sets:
        set_rows = _localise_all(loc, sc, s, eta, min_entropy, out, thresholds)
        rows += set_rows
        results[s.kind] = summarise(set_rows)
    _write_csv(out / "splicing.csv", rows)
    atomic_write_json(out / "splicing.json", results)
    _write_report(out, results, rows)
    return results


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (extensions :data:`IMAGE_EXTENSIONS`; hidden files and
    folders skipped), sorted; with ``recursive``, of its sub-folders too."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def real_records(folder: Path) -> list[dict]:
    """The records of a folder of real forgeries: the images of ``images/`` (other files are
    skipped) with ``masks/<stem>_mask.png`` (absolute paths, so that they join any set)."""
    images = _image_files(folder / "images") if (folder / "images").is_dir() else []
    if not images:
        raise FileNotFoundError(f"splicing.real_dir={folder}: expected images ({', '.join(IMAGE_EXTENSIONS)}) in "
                                f"{folder / 'images'}")
    recs = []
    for p in images:
        mask = folder / "masks" / f"{p.stem}_mask.png"
        if not mask.is_file():
            raise FileNotFoundError(f"no ground-truth mask for {p}: expected {mask} (authentic images go "
                                    "in splicing.authentic_dir)")
        recs.append({"name": p.stem, "image": str(p.resolve()), "mask": str(mask.resolve()), "spliced": True,
                     "host_model": None, "donor_model": None})
    return recs


def authentic_records(folder: Path) -> list[dict]:
    """The records of a folder of authentic images (any layout, searched recursively): controls
    (absolute paths)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"splicing.authentic_dir={folder}: not a folder")
    masks = sorted(p for p in folder.rglob("*_mask.png"))
    if masks:
        raise ValueError(f"splicing.authentic_dir={folder} holds ground-truth masks ({masks[0]}, …): authentic "
                         "images have none — forgeries with masks go in splicing.real_dir")
    images = _image_files(folder, recursive=True)
    if not images:
        raise FileNotFoundError(f"splicing.authentic_dir={folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [{"name": str(p.relative_to(folder).with_suffix("")).replace("/", "__"), "image": str(p.resolve()),
             "mask": None, "spliced": False, "host_model": None, "donor_model": None} for p in images]


def calibrate(loc: Localizer, sc: Any, image_set: ImageSet | None, eta: float,
              min_entropy: float | None) -> tuple[dict[str, dict], list[dict]]:
    """Per mode, the image-level threshold with at most ``sc.target_far`` false alarms on the
    authentic images of ``image_set`` (:func:`camsim.localize.engine.calibrate_threshold`), with
    what it was set on and the score quantiles there; and the calibration images' rows (kind
    ``calibration``, decided at that threshold) for ``splicing.csv``. ``({}, [])`` without a
    calibration set."""
    if image_set is None:
        return {}, []
    rows = _localise_all(loc, sc, image_set, eta, min_entropy, None, {})
    out = {}
    for mode in sc.modes:
        scores = [r["score"] for r in rows if r["mode"] == mode and r["status"] == "ok"]
        if not scores:
            raise ValueError(f"splicing calibration: no {image_set.kind} calibration image could be analysed in "
                             f"{mode} mode ({len(rows) // len(sc.modes)} images)")
        thr = calibrate_threshold(scores, float(sc.target_far))
        q = np.quantile(scores, [0.5, 0.95])
        out[mode] = {"threshold": thr, "target_far": float(sc.target_far), "images": len(scores), "on": image_set.kind,
                     "achieved_far": float(np.mean(np.asarray(scores) >= thr)),
                     "expected_far_new_images": expected_far(len(scores), float(sc.target_far)),
                     "score_median": float(q[0]), "score_p95": float(q[1]),
                     "errors": sum(1 for r in rows if r["mode"] == mode and r["status"] == "error")}
        for r in rows:  # decided again at the calibrated threshold (the engine's message keeps its default's)
            if r["mode"] == mode and r["status"] == "ok":
                r.update(threshold=thr, decision=r["score"] >= thr,
                         message=f"{r['message']}; at the calibrated threshold {thr:.4g}: "
                                 f"{'spliced' if r['score'] >= thr else 'not spliced'}")
    return out, [{**r, "kind": "calibration"} for r in rows]


def localize_options(mode: str, stride: int | None, min_entropy: float | None, eta: float,
                     decision_threshold: float | None, max_clipped: float | None = None) -> Any:
    """The options the benchmark localises with — camsim-localize's keys (``conf/localize.yaml``)
    with its defaults for the rest, so the two give the same map for the same network and image."""
    return OmegaConf.create({"mode": mode, "reference": "auto" if mode == "reference" else None, "stride": stride,
                             "min_entropy": min_entropy, "eta": float(eta), "decision_threshold": decision_threshold,
                             "max_clipped": max_clipped})


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The ground-truth mask (> 127: spliced) of an image of ``shape``; a ValueError naming the
    mask when it cannot be read or its size differs."""
    try:
        with Image.open(path) as img:
            gt = np.asarray(img.convert("L")) > 127
    except (OSError, SyntaxError, ValueError) as err:   # PIL: unreadable, truncated, bad PNG chunks
        raise ValueError(f"ground-truth mask {path} cannot be read: {err}") from err
    if gt.shape != shape:
        raise ValueError(f"mask {path.name} is {gt.shape[1]}x{gt.shape[0]}, its image {shape[1]}x{shape[0]}")
    return gt


def _localise_all(loc: Localizer, sc: Any, image_set: ImageSet, eta: float, min_entropy: float | None,
                  out: Path | None, thresholds: dict[str, float]) -> list[dict]:
    """Localise every record of ``image_set`` in every mode of ``sc`` (the ``splicing`` node),
    each mode at its image-level threshold (default: the engine's); example pictures into ``out``."""
    kind, folder, records, known = image_set.kind, image_set.folder, image_set.records, image_set.known
    rows = []
    n_examples = {m: 0 for m in sc.modes}
    for rec in track(records, desc=f"localising {len(records)} {kind} images × {len(sc.modes)} modes"):
        path = folder / rec["image"]
        base = {"kind": kind, "image": rec["name"], "spliced": bool(rec["spliced"]),
                "host_model": rec.get("host_model"), "donor_model": rec.get("donor_model"),
                "scenario": _scenario(rec, known)}
        try:
            rgb = read_rgb(path)  # decoded once: the analysis reads green, an RGB network's patches and examples all
            green = np.ascontiguousarray(rgb[..., 1])
            gt = _read_mask(folder / rec["mask"], green.shape) if rec["mask"] else None
        except (ValueError, OSError, *IMAGE_ERRORS) as err:
            rows += [{**base, "mode": mode, "status": "error", "message": f"{path}: {_reason(err)}"}
                     for mode in sc.modes]
            continue
        for mode in sc.modes:
            opts = localize_options(mode, sc.stride, min_entropy, eta, thresholds.get(mode),
                                    getattr(sc, "max_clipped", None))
            row = {**base, "mode": mode}
            try:  # one image that cannot be analysed (out of memory included) is its row, the benchmark goes on
                res = loc.run(green, opts, colour=rgb)
                row.update(status="ok", decision=bool(res.decision), score=float(res.score),
                           threshold=float(res.threshold), message=res.message)
                if gt is not None:
                    for key, protocol in PROTOCOLS.items():
                        pred = res.mask if protocol["threshold"] == "fixed" else res.heatmap
                        conf = image_confusions(pred, gt, protocol)
                        row[f"confusion_{key}"] = conf
                        row.update({f"{m}_{key}": float(fn(*conf[m])) for m, fn in METRICS.items()})
                    if out is not None and (n_examples[mode] < int(sc.examples) or kind == "real"):
                        row["example"] = _example(out, rec["name"], mode, res, rgb, gt)
                        n_examples[mode] += 1
            except IMAGE_ERRORS as err:
                row = {**base, "mode": mode, "status": "error", "message": f"{path}: {_reason(err)}"}
            rows.append(row)
    return rows


def _reason(err: Exception) -> str:
    """Why an image of the benchmark could not be analysed (:func:`camsim.localize.run.image_error`);
    an error of another kind (a RuntimeError not about memory) is raised again."""
    reason = image_error(err) if isinstance(err, IMAGE_ERRORS) else error_reason(err)
    if reason is None:
        raise err
    return reason


def _scenario(rec: dict, known: set | None) -> str:
    if not rec.get("spliced"):
        return "control"
    if rec.get("host_model") is None or known is None:
        return "n/a"
    k = lambda m: "known" if m in known else "unknown"  # noqa: E731
    return "_".join(sorted([k(rec["host_model"]), k(rec["donor_model"])]))


def _pixel_figures(spliced: list[dict], key: str) -> dict[str, Any]:
    """F1 / MCC / IoU of the spliced images under protocol ``key``: per-image mean and pooled."""
    if not spliced:
        return {"per_image": None, "pooled": None}
    per_image = {m: float(np.mean([r[f"{m}_{key}"] for r in spliced])) for m in METRICS}
    pooled = {m: float(fn(*np.sum([r[f"confusion_{key}"][m] for r in spliced], axis=0))) for m, fn in METRICS.items()}
    return {"per_image": per_image, "pooled": pooled}


def summarise(rows: list[dict]) -> dict:
    """Per mode: detection AUC and false-alarm rate at the operating threshold (image level),
    pixel F1 / MCC / IoU under both protocols, pixel F1 by host/donor scenario, errors listed.
    ``f1`` / ``mcc`` (fixed protocol, per-image mean) and ``f1_best`` / ``mcc_best`` (best
    protocol) are the headline figures; ``f1_gated`` is ``f1`` with 0 for every spliced image the
    image-level decision called "not spliced" (an analyst acting on the verdict sees no map there)."""
    out: dict[str, Any] = {}
    for mode in sorted({r["mode"] for r in rows if "mode" in r}):
        ok = [r for r in rows if r.get("mode") == mode and r.get("status") == "ok"]
        sp = [r for r in ok if r["spliced"]]
        controls = [r for r in ok if not r["spliced"]]
        labels = np.array([r["spliced"] for r in ok], int)
        auc = detection_auc(np.array([r["score"] for r in ok]), labels) if 0 < labels.sum() < len(labels) else None
        pixel = {k: _pixel_figures(sp, k) for k in PROTOCOLS}
        headline = {f"{m}{'' if k == 'fixed' else '_best'}": (pixel[k]["per_image"] or {}).get(m)
                    for k in PROTOCOLS for m in ("f1", "mcc", "iou")}
        mean = lambda rs: float(np.mean([r["f1_fixed"] for r in rs])) if rs else None  # noqa: E731
        # what an analyst acting on the verdict gets: no map at all where the image was called "not spliced"
        gated = float(np.mean([r["f1_fixed"] if r["decision"] else 0.0 for r in sp])) if sp else None
        out[mode] = {**headline, "f1_gated": gated, "auc": auc, "pixel": pixel,
                     "false_alarm_rate": float(np.mean([r["decision"] for r in controls])) if controls else None,
                     "detection_rate": float(np.mean([r["decision"] for r in sp])) if sp else None,
                     "n_spliced": len(sp), "n_controls": len(controls),
                     "errors": [{"image": r["image"], "message": r.get("message")} for r in rows
                                if r.get("mode") == mode and r.get("status") == "error"],
                     "by_scenario": {s: {"f1": mean([r for r in sp if r["scenario"] == s]),
                                         "n": sum(1 for r in sp if r["scenario"] == s)}
                                     for s in sorted({r["scenario"] for r in sp})}}
    return out


def _example(out: Path, name: str, mode: str, res: Any, rgb: np.ndarray, gt: np.ndarray) -> str:
    """overlay | ground truth side by side → examples/<name>_<mode>.png"""
    ov = overlay_image(res, rgb)
    g = np.repeat((gt.astype(np.uint8) * 255)[..., None], 3, axis=2)
    sep = np.full((ov.shape[0], 8, 3), 255, np.uint8)
    rel = f"examples/{name}_{mode}.png"
    (out / "examples").mkdir(exist_ok=True)
    Image.fromarray(np.concatenate([ov, sep, g], axis=1)).save(out / rel)
    return rel


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = ["kind", "image", "mode", "status", "spliced", "scenario", "host_model", "donor_model", "decision",
            "score", "threshold", "f1_fixed", "mcc_fixed", "iou_fixed", "f1_best", "mcc_best", "iou_best", "example",
            "message"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


SET_TITLES = {"synthetic": "Simulated splices (known and unknown cameras, unseen scenes; simulated controls)",
              "real": "Real images (forgeries with masks; authentic photos as controls)"}


def _write_report(out: Path, results: dict, rows: list[dict]) -> None:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    pr = results["protocols"]
    lines = ["# Splicing localisation benchmark", "", f"Similarity network: `{results['checkpoint']}`", "",
             *[f"**Note:** {n} — the scenarios (known / unknown cameras) of their splices are mislabelled.\n"
               for n in results.get("notes") or []],
             "Protocols of the pixel figures (spliced images only):", "",
             f"- **fixed**: {pr['fixed']['name']} — the map an analyst sees, scored whatever the image-level "
             "verdict;",
             f"- **best**: {pr['best']['name']} — what papers usually print.", "",
             "Each also pooled over all pixels of the set (columns *pooled*). Image level: detection AUC of the "
             "image score, spliced vs controls; false alarms = controls called spliced at the operating threshold.",
             "", "Decidable patches: entropy above the threshold" + (
                 f", and at most {results['max_clipped']:g} of their pixels clipped (≥ 250; `splicing.max_clipped`)."
                 if results.get("max_clipped") is not None else " (clipped highlights not excluded: "
                 "`splicing.max_clipped` null)."), ""]
    cal = results.get("calibration") or {}
    lines += ["Operating thresholds (image score ≥ threshold: spliced): " + (
        "; ".join(f"{m} {c['threshold']:.4g}, calibrated to {c['target_far']:.0%} false alarms on {c['images']} "
                  f"{'simulated unspliced' if c['on'] == 'synthetic' else 'authentic'} images (there: "
                  f"{c['achieved_far']:.1%} at or above it, scores' median {c['score_median']:.3f}, 95th percentile "
                  f"{c['score_p95']:.3f}; on new images of that kind expect "
                  f"{c.get('expected_far_new_images', float('nan')):.1%} false alarms, (k+1)/(n+1); rows of kind "
                  "`calibration` in splicing.csv; thresholds to full precision in splicing.json)" for m, c in cal.items())
        if cal else "the engine's uncalibrated defaults (graph 0.25, reference 1 − η)") + ".", ""]
    for kind, title in SET_TITLES.items():
        if kind not in results:
            continue
        res = results[kind]
        lines += [f"## {title}", ""]
        lines.append(md_table(
            ["mode", "F1 fixed", "F1 fixed, 0 if called not spliced", "MCC fixed", "IoU fixed", "F1 fixed pooled",
             "F1 best", "IoU best", "detection AUC", "false alarms", "spliced", "controls", "errors"],
            [[m, f(v["f1"]), f(v.get("f1_gated")), f(v["mcc"]), f(v["iou"]),
              f((v["pixel"]["fixed"]["pooled"] or {}).get("f1")),
              f(v["f1_best"]), f(v["iou_best"]), f(v["auc"]),
              "n/a" if v["false_alarm_rate"] is None else f"{v['false_alarm_rate']:.1%}",
              v["n_spliced"], v["n_controls"], len(v["errors"])] for m, v in res.items()]))
        scen = [[m, s, f(d["f1"]), d["n"]] for m, v in res.items() for s, d in v["by_scenario"].items() if s != "n/a"]
        if scen:
            lines += ["", "By host/donor scenario (pixel F1, fixed protocol):", ""]
            lines.append(md_table(["mode", "scenario", "pixel F1", "images"], scen))
        simulated = sorted(m for m, c in cal.items() if c["on"] == "synthetic")
        if kind == "real" and simulated and any(v["n_controls"] for v in res.values()):
            lines += ["", f"**The controls were decided at thresholds set on simulated images** ({', '.join(simulated)}): "
                      "real authentic photos score otherwise, so their false alarms above are not the target's. "
                      "For real photos calibrate on authentic photos like them: `splicing.calibration_dir=<folder>` "
                      "(README, \"A threshold set on other real photos\")."]
        errs = [(m, e) for m, v in res.items() for e in v["errors"]]
        if errs:
            lines += ["", "Images that could not be analysed:", ""]
            lines += [f"- {e['image']} ({m} mode): {e['message']}" for m, e in errs]
        lines.append("")
    real = [r for r in rows if r["kind"] == "real" and r.get("status") == "ok"]
    if real:
        lines += ["## Real images, one by one", ""]
        lines.append(md_table(["image", "mode", "spliced (truth)", "decision", "score", "threshold", "F1 fixed",
                               "F1 best"],
                              [[r["image"], r["mode"], "yes" if r["spliced"] else "no",
                                "spliced" if r["decision"] else "not spliced", f(r["score"]), f(r["threshold"]),
                                f(r.get("f1_fixed")), f(r.get("f1_best"))] for r in real]))
    ex = [r for r in rows if r.get("example")]
    if ex:
        lines += ["", "## Examples (overlay | ground truth)", ""]
        lines += [f"**{r['image']}** ({r['mode']} mode, F1 fixed {f(r.get('f1_fixed'))}):\n\n![]({r['example']})\n"
                  for r in ex]
    (out / "splicing.md").write_text("\n".join(lines) + "\n")
