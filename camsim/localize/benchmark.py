"""The splicing benchmark (``camsim-eval task=splicing``): localisation against ground truth.

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
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from camsim.artefacts import atomic_write_json, cached_dir
from camsim.config import to_plain
from camsim.data.io import read_green, read_rgb
from camsim.localize.grid import LocalizationError
from camsim.localize.outputs import best_of_inverted, detection_auc, overlay_image, pixel_f1, pixel_mcc
from camsim.localize.run import Localizer
from camsim.progress import track

log = logging.getLogger("camsim")


def run_splicing(cfg: DictConfig) -> dict:
    """Localise the benchmark's images with the similarity network of this config (or ``ckpt``)."""
    from camsim.config import validate
    from camsim.lit.phase_b import load_similarity
    from camsim.pipeline import RunState, stage, stage_data, stage_phase_a, stage_phase_b

    validate(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    st = RunState(cfg, out, Path(cfg.paths.artefact_dir).resolve(), train=False)
    with stage("data", st.summary):
        stage_data(st)
    if cfg.get("ckpt"):
        ckpt = Path(cfg.ckpt)
    else:
        stage_phase_a(st)
        stage_phase_b(st)
        ckpt = st.phase_b_dir / "model.ckpt"
    loc = Localizer(load_similarity(ckpt), **to_plain(cfg.phase_b.feature_pass))
    sc = cfg.splicing
    results: dict[str, Any] = {"checkpoint": str(ckpt)}
    rows: list[dict] = []
    if str(cfg.data._target_).endswith("SynthSource"):
        with stage("splicing benchmark (simulated cameras)", st.summary):
            folder = _synthetic_splices(cfg, st)
            records = _load_manifest(folder)
            rows += _localise_all(loc, cfg, folder, records, out, "synthetic", set(st.data.split.known))
            results["synthetic"] = summarise(rows)
    else:
        log.info("  data is not the simulator: no synthetic splices (give splicing.real_dir for real forgeries)")
    if sc.real_dir:
        with stage(f"splicing: real forgeries in {sc.real_dir}", st.summary):
            real_records = _real_records(Path(sc.real_dir))
            real_rows = _localise_all(loc, cfg, Path(sc.real_dir), real_records, out, "real", None)
            rows += real_rows
            results["real"] = {f"{r['image']}/{r.get('mode', 'read')}": {
                k: r.get(k) for k in ("image", "mode", "decision", "score", "f1", "mcc", "f1_best", "mcc_best",
                                      "status", "message")} for r in real_rows}
    _write_csv(out / "splicing.csv", rows)
    atomic_write_json(out / "splicing.json", results)
    _write_report(out, results, rows)
    for mode, m in results.get("synthetic", {}).items():
        log.info("  %s mode: pixel F1 %.3f (inverted-best %.3f), MCC %.3f, detection AUC %s", mode, m["f1"],
                 m["f1_best"], m["mcc"], "n/a" if m["auc"] is None else f"{m['auc']:.3f}")
    log.info("outputs: %s", out)
    return results


def _synthetic_splices(cfg: DictConfig, st: Any) -> Path:
    from camsim.synth.splice import render_splices

    sc, d = cfg.splicing, cfg.data
    models = list(st.data.split.known) + list(st.data.split.c)
    key = {"num_images": int(sc.num_images), "image_size": list(sc.image_size), "seed": int(sc.seed),
           "control_fraction": float(sc.control_fraction), "models": models,
           "catalogue": {"num_models": int(d.num_models), "num_families": int(d.num_families), "seed": int(d.seed)}}
    return cached_dir(st.artefact_dir, "splices", key, lambda tmp: render_splices(
        tmp, int(sc.num_images), tuple(sc.image_size), int(d.seed), num_models=int(d.num_models),
        num_families=int(d.num_families), models=models, control_fraction=float(sc.control_fraction),
        workers=d.get("workers")))


def _load_manifest(folder: Path) -> list[dict]:
    from camsim.synth.splice import load_splices

    return load_splices(folder)


def _real_records(folder: Path) -> list[dict]:
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


def _localise_all(loc: Localizer, cfg: DictConfig, folder: Path, records: list[dict], out: Path,
                  kind: str, known: set | None) -> list[dict]:
    """Localise every record in every mode; ``known``: the known (set A) models, for the scenario column."""
    sc = cfg.splicing
    eta = 0.5 if cfg.eval.eta == "auto" else float(cfg.eval.eta)
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
                                     "stride": sc.stride, "min_entropy": float(cfg.patches.min_entropy), "eta": eta,
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
    from camsim.eval.report import md_table

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
