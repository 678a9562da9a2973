"""The splicing benchmark (``camsim-eval task=splicing``): localisation against ground truth.

The pipeline's ``splicing`` stage (:func:`camsim.pipeline.stage_splicing`) hands it a trained
network and the image sets; this module localises, scores and reports.

Spliced images are made by the simulator from two different cameras of the evaluation
models — known (⊂ A) and unknown (C) — on scenes no training image shows, plus unspliced
controls. Each image is localised in every configured mode; reported per mode: pixel F1
and MCC on the spliced images (also with the map inverted, the field's custom), by
host/donor scenario, and the image-level detection AUC against the controls. Optionally a
folder of real forgeries with masks (``splicing.real_dir``: ``images/`` + ``masks/<stem>_mask.png``).
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
from camsim.data.io import read_green, read_rgb
from camsim.eval.report import md_table
from camsim.localize.grid import LocalizationError
from camsim.localize.outputs import best_of_inverted, detection_auc, overlay_image, pixel_f1, pixel_mcc
from camsim.localize.run import Localizer
from camsim.progress import track

log = logging.getLogger("camsim")


def splicing_benchmark(loc: Localizer, image_sets: Sequence[ImageSet], sc: Any, eta: float, min_entropy: float,
                       out: Path, checkpoint: str) -> dict:
    """Localise every image of ``image_sets`` in every mode of ``sc`` (the ``splicing`` node);
    write ``splicing.csv`` / ``.json`` / ``.md`` into ``out`` and return the results.

    ``eta``: the reference mode's decision threshold (the run's η); ``min_entropy``: patches
    at or below it are undecidable (the network's training recipe).
    """
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"checkpoint": checkpoint}
    rows: list[dict] = []
    for s in image_sets:
        set_rows = _localise_all(loc, sc, s, eta, min_entropy, out)
        rows += set_rows
        if s.kind == "synthetic":
            results["synthetic"] = summarise(set_rows)
        else:
            results["real"] = {f"{r['image']}/{r.get('mode', 'read')}": {
                k: r.get(k) for k in ("image", "mode", "decision", "score", "f1", "mcc", "f1_best", "mcc_best",
                                      "status", "message")} for r in set_rows}
    _write_csv(out / "splicing.csv", rows)
    atomic_write_json(out / "splicing.json", results)
    _write_report(out, results, rows)
    return results


@dataclass
class ImageSet:
    """Images of the benchmark: ``records`` (manifest rows: name, image, mask, spliced, host/donor
    model) relative to ``folder``; ``known``: the known (set A) models, for the scenario column."""

    kind: str  # "synthetic" | "real"
    folder: Path
    records: list[dict]
    known: set | None = None


def real_records(folder: Path) -> list[dict]:
    """The records of a folder of real forgeries: ``images/*`` with ``masks/<stem>_mask.png``."""
    images = sorted(p for p in (folder / "images").iterdir() if not p.name.startswith(".")) \
        if (folder / "images").is_dir() else []
    if not images:
        raise FileNotFoundError(f"splicing.real_dir={folder}: expected images in {folder / 'images'}")
    recs = []
    for p in images:
        mask = folder / "masks" / f"{p.stem}_mask.png"
        if not mask.is_file():
            raise FileNotFoundError(f"no ground-truth mask for {p}: expected {mask}")
        recs.append({"name": p.stem, "image": f"images/{p.name}", "mask": f"masks/{mask.name}", "spliced": True,
                     "host_model": None, "donor_model": None})
    return recs


def _localise_all(loc: Localizer, sc: Any, image_set: ImageSet, eta: float, min_entropy: float,
                  out: Path) -> list[dict]:
    """Localise every record of ``image_set`` in every mode of ``sc`` (the ``splicing`` node)."""
    kind, folder, records, known = image_set.kind, image_set.folder, image_set.records, image_set.known
    rows = []
    n_examples = {m: 0 for m in sc.modes}
    for rec in track(records, desc=f"localising {len(records)} {kind} images × {len(sc.modes)} modes"):
        path = folder / rec["image"]
        gt = np.asarray(Image.open(folder / rec["mask"]).convert("L")) > 127
        try:
            green = read_green(path)
        except ValueError as err:
            rows.append({"kind": kind, "image": rec["name"], "status": "error", "message": str(err)})
            continue
        for mode in sc.modes:
            opts = OmegaConf.create({"mode": mode, "reference": "auto" if mode == "reference" else None,
                                     "stride": sc.stride, "min_entropy": float(min_entropy), "eta": float(eta),
                                     "decision_threshold": None})
            row = {"kind": kind, "image": rec["name"], "mode": mode, "spliced": bool(rec["spliced"]),
                   "host_model": rec.get("host_model"), "donor_model": rec.get("donor_model"),
                   "scenario": _scenario(rec, known)}
            try:
                res = loc.run(green, opts)
            except LocalizationError as err:
                row.update(status="error", message=str(err))
                rows.append(row)
                continue
            row.update(status="ok", decision=bool(res.decision), score=float(res.score), message=res.message)
            if rec["spliced"]:
                row.update(f1=pixel_f1(res.mask, gt), mcc=pixel_mcc(res.mask, gt),
                           f1_best=best_of_inverted(pixel_f1, res.mask, gt),
                           mcc_best=best_of_inverted(pixel_mcc, res.mask, gt))
                if n_examples[mode] < int(sc.examples) or kind == "real":
                    n_examples[mode] += 1
                    row["example"] = _example(out, rec["name"], mode, res, read_rgb(path), gt)
            rows.append(row)
    return rows


def _scenario(rec: dict, known: set | None) -> str:
    if not rec.get("spliced") or rec.get("host_model") is None or known is None:
        return "control" if not rec.get("spliced") else "n/a"
    k = lambda m: "known" if m in known else "unknown"  # noqa: E731
    return "_".join(sorted([k(rec["host_model"]), k(rec["donor_model"])]))


def summarise(rows: list[dict]) -> dict:
    """Per mode: mean pixel F1 / MCC over spliced images (and inverted-best), by scenario, detection AUC."""
    out: dict[str, Any] = {}
    for mode in sorted({r["mode"] for r in rows if "mode" in r}):
        ok = [r for r in rows if r.get("mode") == mode and r.get("status") == "ok"]
        sp = [r for r in ok if r["spliced"]]
        mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else None  # noqa: E731
        labels = np.array([r["spliced"] for r in ok], int)
        auc = detection_auc(np.array([r["score"] for r in ok]), labels) if 0 < labels.sum() < len(labels) else None
        out[mode] = {"f1": mean(sp, "f1"), "mcc": mean(sp, "mcc"), "f1_best": mean(sp, "f1_best"),
                     "mcc_best": mean(sp, "mcc_best"), "auc": auc, "n_spliced": len(sp),
                     "n_controls": int((labels == 0).sum()),
                     "errors": sum(1 for r in rows if r.get("mode") == mode and r.get("status") == "error"),
                     "by_scenario": {s: {"f1": mean([r for r in sp if r["scenario"] == s], "f1"),
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
            "score", "f1", "mcc", "f1_best", "mcc_best", "example", "message"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _write_report(out: Path, results: dict, rows: list[dict]) -> None:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["# Splicing localisation benchmark", "", f"Similarity network: `{results['checkpoint']}`", ""]
    if "synthetic" in results:
        lines += ["## Simulated splices (known and unknown cameras, unseen scenes)", "",
                  "Pixel scores are means over spliced images; *best* takes the better of the map and its "
                  "inversion. Detection AUC: image score of spliced images vs unspliced controls.", ""]
        lines.append(md_table(["mode", "pixel F1", "F1 (best)", "MCC", "MCC (best)", "detection AUC", "spliced",
                               "controls", "errors"],
                              [[m, f(v["f1"]), f(v["f1_best"]), f(v["mcc"]), f(v["mcc_best"]), f(v["auc"]),
                                v["n_spliced"], v["n_controls"], v["errors"]] for m, v in results["synthetic"].items()]))
        lines += ["", "By host/donor scenario (pixel F1):", ""]
        lines.append(md_table(["mode", "scenario", "pixel F1", "images"],
                              [[m, s, f(d["f1"]), d["n"]] for m, v in results["synthetic"].items()
                               for s, d in v["by_scenario"].items()]))
    if "real" in results:
        lines += ["", "## Real forgeries", ""]
        lines.append(md_table(["image", "mode", "decision", "score", "pixel F1", "F1 (best)", "MCC"],
                              [[r["image"], r.get("mode"), "spliced" if r.get("decision") else "not spliced",
                                f(r.get("score")), f(r.get("f1")), f(r.get("f1_best")), f(r.get("mcc"))]
                               for r in rows if r["kind"] == "real" and r.get("status") == "ok"]))
    ex = [r for r in rows if r.get("example")]
    if ex:
        lines += ["", "## Examples (overlay | ground truth)", ""]
        lines += [f"**{r['image']}** ({r['mode']} mode, F1 {f(r.get('f1'))}):\n\n![]({r['example']})\n" for r in ex]
    (out / "splicing.md").write_text("\n".join(lines) + "\n")
