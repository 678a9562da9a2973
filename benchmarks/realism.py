"""Simulator realism ablation (issue 18): which simulator trait moves which figure.

For each variant — the quick recipe with one family of simulator traits switched on (or all
of them, ``data=synth_real``) — this trains the main job from its own render and then runs the
transfer evaluation of its network on a folder of real photos of camera models it never saw
(default ``../shared/data/cameras``), under the network's own patch settings (entropy > 4
nats) and with ``transfer.min_entropy=1.0`` (flat fields kept). Two variants change Phase B
instead of the simulator — how many camera models stand behind its pairs (``head_with_a``: A's
too; ``b25``: ten more unseen models in B, its control; ``a20_b25``: ten more in A as well). The
``recipe`` is today's quick recipe, ``recipe_fine_adaptive`` today's with its fine-quality models
adaptive too, ``recipe_shadows`` today's with cast shadows in its scenes and ``recipe_table_balance``
today's with Phase B's pairs balanced by JPEG table; the other ``recipe_*``
variants start from the recipe of 2026-12-04..06 (``recipe_before``: no content-adaptive quality),
on which the docs measured them (``recipe_nojpeg``: without the JPEG branch; ``recipe_b50``: 50
models behind the head; ``recipe_photo`` / ``recipe_pixel`` / ``recipe_tables``: trait families
retried on it); every other variant from the recipe as it was
until 2026-12-04, on which the docs measured them (``default``). It prints one markdown row per
variant and writes ``realism.json``:

    python benchmarks/realism.py                         # every variant (≈ 5 min each on 2 cores)
    python benchmarks/realism.py default synth_real      # some of them
    python benchmarks/realism.py --list
    python benchmarks/realism.py --paired                # no training: each variant already in --out
                                                         # against --reference (default: OUT/default)

Protocol of the transfer columns: AUC, patch pairs pooled (same photo / two photos of one model,
negatives = different models), and image level for two photos (mean of 64 patch-pair scores),
as ``camsim-eval``'s transfer.md states it. Simulated columns: the main job's evaluation
(η = 0.5) and the report's JPEG-statistics difficulty check on set A.

``--paired`` (also printed after a run that includes the reference): for each variant, the
difference of its two-photo AUC from the reference's, with a 95 % interval from a paired
bootstrap over camera models and photos (``camsim-compare --paired``, camsim/eval/paired.py):
both networks weighed by the same draws, so the interval is the photos' luck once, not twice.
A training seed's spread is not in it: compare the reference with itself under ``--extra seed=1``
(``--reference OUT_SEED1/default_seed-1``) to see that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from camsim.synth.params import family_of, model_name

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

_JPEG = ["data.synth.jpeg.presets_per_model=3", "data.synth.jpeg.adaptive_share=0.25",
         "data.synth.jpeg.table_families=2"]
_PHOTO = ["data.synth.exposure.ev_sigma=0.3", "data.synth.exposure.iso_sigma=0.5",
          "data.synth.white_balance.per_photo=true", "data.synth.resample.downscale_share=0.15"]
_PIXEL = ["data.synth.noise.fixed_pattern=0.3", "data.synth.noise.prnu=0.01", "data.synth.lens.vignetting=0.4",
          "data.synth.lens.chromatic_aberration=1.0",
          "data.synth.demosaic.methods=[bilinear,malvar,hamilton_adams,ahd,frequency]",
          "data.synth.family.differ_in=2"]


def _new_models(first: int, stop: int) -> str:
    """Models ``first`` … ``stop - 1`` of a larger catalogue (6 families), by the catalogue's own names:
    what a larger ``data.num_models`` adds to a smaller one."""
    return ",".join(model_name(family_of(k, 6), k) for k in range(first, stop))


# The recipe's sets before 2026-12-04 (split=counts, seed 0, drawn from the 30-model catalogue), written out so that
# a 40-model catalogue — which extends the 30 camera for camera, camsim/synth/params.py — can
# keep A, C and the known models (so Phase A, bit for bit) and give B ten more models.
_A = "F00_M12,F00_M18,F01_M13,F01_M19,F01_M25,F02_M20,F02_M26,F03_M15,F04_M16,F04_M28"
_B = ("F00_M00,F00_M06,F01_M01,F01_M07,F02_M02,F02_M08,F02_M14,F03_M09,F03_M21,F03_M27,F04_M04,"
      "F05_M05,F05_M11,F05_M23,F05_M29")
_B_MORE = _new_models(30, 40)
_B25_C_KNOWN = [f"split.b=[{_B},{_B_MORE}]", "split.c=[F00_M24,F03_M03,F04_M10,F04_M22,F05_M17]",
                "split.known=[F01_M13,F01_M19,F01_M25,F02_M26,F04_M28]"]
_SETS_40 = ["data.num_models=40", f"split.a=[{_A}]", *_B25_C_KNOWN]

# One step further: a 50-model catalogue, A of 20 (the recipe's 10 + ten new models; the same known
# models), B of 25 as in b25, C unchanged — does a backbone trained on more models transfer better?
_A_MORE = _new_models(40, 50)
_SETS_50 = ["data.num_models=50", f"split.a=[{_A},{_A_MORE}]", *_B25_C_KNOWN]

# Today's recipe (split=counts, seed 0, on its 40 models) written out, so that a 65-model catalogue can
# keep A, C and the known models (Phase A bit for bit) and give B 25 more models: 50 behind the head
_A_TODAY = "F00_M24,F01_M07,F01_M13,F02_M14,F03_M09,F03_M15,F03_M33,F04_M04,F04_M22,F05_M05"
_B_TODAY = ("F00_M06,F00_M12,F00_M18,F00_M30,F00_M36,F01_M01,F01_M25,F01_M31,F01_M37,F02_M02,F02_M20,F02_M26,"
            "F02_M38,F03_M03,F03_M21,F03_M27,F03_M39,F04_M10,F04_M16,F04_M28,F05_M11,F05_M17,F05_M23,F05_M29,F05_M35")
_B_TODAY_MORE = _new_models(40, 65)
_SETS_65 = ["data.num_models=65", f"split.a=[{_A_TODAY}]", f"split.b=[{_B_TODAY},{_B_TODAY_MORE}]",
            "split.c=[F00_M00,F01_M19,F02_M08,F02_M32,F04_M34]", "split.known=[F01_M13,F02_M14,F03_M09,F03_M33,F05_M05]"]

# The variants below were measured against the quick recipe as it was until 2026-12-04 (30 simulated
# models, B of 15, no fine JPEG qualities; docs/experiments.md): each pins those settings, unless it
# sets them itself, so that their commands still measure what the docs report. ``recipe`` is today's.
_V1 = ["data.num_models=30", "split.b=15", "data.synth.jpeg.fine_share=0.0", "data.synth.jpeg.adaptive_share=0.0",
       "data.synth.jpeg.fine_fixed=false"]
# The recipe_* variants were measured on the recipe of 2026-12-04..06, before its catalogue had
# content-adaptive quality (2026-12-07): each pins that off unless it sets it itself
_V2 = ["data.synth.jpeg.adaptive_share=0.0"]


def _pinned(pins: list[str], overrides: list[str], also_own: tuple[str, ...] = ()) -> list[str]:
    """``overrides`` on top of ``pins`` (the pins whose key ``overrides`` or ``also_own`` set themselves dropped)."""
    own = {o.split("=", 1)[0] for o in overrides} | set(also_own)
    return [o for o in pins if o.split("=", 1)[0] not in own] + list(overrides)


def _v1(overrides: list[str]) -> list[str]:
    """``overrides`` on the recipe of before 2026-12-04 (its settings that ``overrides`` leaves alone);
    ``data=synth_real`` keeps its own adaptive share, as measured."""
    return _pinned(_V1, overrides, ("data.synth.jpeg.adaptive_share",) if "data=synth_real" in overrides else ())


def _v2(overrides: list[str]) -> list[str]:
    """``overrides`` on the recipe of 2026-12-04..06 (without content-adaptive quality)."""
    return _pinned(_V2, overrides)


#: name → (what changes, overrides of the quick recipe)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("today's quick recipe (40 models, 40 % at a fine JPEG quality, half the others adaptive, B of 25)", []),
    "recipe_fine_adaptive": ("today's quick recipe but a quarter of all models adaptive, fine ones included "
                             "(data.synth.jpeg.fine_fixed=false)",
                             ["data.synth.jpeg.adaptive_share=0.25", "data.synth.jpeg.fine_fixed=false"]),
    "recipe_shadows": ("today's quick recipe with cast shadows: 20-60 % of each scene lit up to 3 EV less "
                       "(data.synth.scenes.shadow_ev=3)", ["data.synth.scenes.shadow_ev=3"]),
    "recipe_table_balance": ("today's quick recipe with Phase B's pairs balanced by JPEG table: a quarter each of "
                             "same / different model x identical / different luminance table "
                             "(phase_b.table_balance=true)", ["phase_b.table_balance=true"]),
    "recipe_before": ("the quick recipe of 2026-12-04..06: no content-adaptive quality", list(_V2)),
    # measured on the recipe of 2026-12-04..06 (docs/experiments.md, "Four levers tried again on
    # today's recipe" and before; README "Sim -> real"): pinned to it
    **{name: (what, _v2(ov)) for name, (what, ov) in {
        "recipe_nojpeg": ("the 2026-12-06 recipe, backbone without the JPEG branch (model=mislnet_small)",
                          ["model=mislnet_small"]),
        "recipe_recompress": ("the 2026-12-06 recipe, every Phase B training patch with a twin re-saved at JPEG "
                              "quality 60-95 (phase_b.recompress)", ["phase_b.recompress.share=1.0"]),
        "recipe_b50": ("the 2026-12-06 recipe, set B of 50 models: B + 25 models of a 65-model catalogue, A and C "
                       "unchanged", _SETS_65),
        "recipe_photo": ("the 2026-12-06 recipe, per-photo exposure, ISO, auto white balance, 15 % reduced size",
                         _PHOTO),
        "recipe_pixel": ("the 2026-12-06 recipe, fixed-pattern noise + PRNU, vignetting, lateral CA, AHD/frequency "
                         "demosaicing, siblings differing in 2 traits", _PIXEL),
        "recipe_tables": ("the 2026-12-06 recipe, makers' own quantisation-table shapes (2, shared between families)",
                          ["data.synth.jpeg.table_families=2"]),
    }.items()},
    **{name: (what, _v1(ov)) for name, (what, ov) in {
        "default": ("the recipe until 2026-12-04: 30 models, B of 15, no fine JPEG qualities", []),
        "jpeg": ("per-photo JPEG: 3 presets, 25 % adaptive, 2 makers' table families", _JPEG),
        "photo": ("per-photo exposure, ISO, auto white balance, 15 % reduced size", _PHOTO),
        "pixel": ("fixed-pattern noise + PRNU, vignetting, lateral CA, AHD/frequency demosaicing, siblings "
                  "differing in 2 traits", _PIXEL),
        "scenes": ("30 % photo-like texture scenes (sky, foliage, text, skin)", ["data.synth.scenes.texture_share=0.3"]),
        "synth_real": ("all of the above (data=synth_real)", ["data=synth_real"]),
        "synth_real_fixed_jpeg": ("all but the per-photo JPEG traits (one JPEG setting per model)",
                                  ["data=synth_real", "data.synth.jpeg.presets_per_model=1", "data.synth.jpeg.adaptive_share=0",
                                   "data.synth.jpeg.table_families=0"]),
        "synth_real_nojpeg": ("all, backbone without the JPEG branch (model=mislnet_small)",
                              ["data=synth_real", "model=mislnet_small"]),
        # Fine JPEG qualities (96–100: steps of 1–2), as camera originals mostly are (93–99 measured):
        # where the JPEG lattice is gone, only pixel traces tell models apart
        "jpeg_fine": ("40 % of models save at a fine quality, 96–100 (data.synth.jpeg.fine_share)",
                      ["data.synth.jpeg.fine_share=0.4"]),
        "jpeg_fine_presets": ("every model has a second, fine preset (96–100) drawn per photo beside its own quality",
                              ["data.synth.jpeg.presets_per_model=2", "data.synth.jpeg.shared_qualities=[96,97,98,99,100]"]),
        # Not simulator changes: how many models stand behind Phase B's pairs (the 30-model simulator)
        "head_with_a": ("the head's pairs also from A's 10 models (25 models; phase_b.with_a)", ["phase_b.with_a=true"]),
        "b25": ("set B of 25 models: B + 10 models of a 40-model catalogue, A and C unchanged (the control "
                "for head_with_a)", _SETS_40),
        "a20_b25": ("set A of 20 models (A + 10 models of a 50-model catalogue) and B of 25 as in b25, C unchanged",
                    _SETS_50),
    }.items()},
}


def _run(args: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        res = subprocess.run(args, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode:
        raise SystemExit(f"{' '.join(args)} failed (exit {res.returncode}); see {log}")


def _auc(m: dict, level: str, row: str) -> float | None:
    got = m.get("transfer", {}).get(level, {}).get(row, {}).get("auc", {})
    return got.get("value")


def run_variant(name: str, out: Path, real: Path, extra: list[str] = ()) -> dict:
    what, overrides = VARIANTS[name]
    overrides = [*overrides, *extra]
    d = out / "_".join([name, *extra]).replace("=", "-")
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _run([str(BIN / "camsim-run"), "experiment=quick", *overrides, f"hydra.run.dir={d / 'run'}"], d / "run.log")
    train_s = time.time() - t0
    summary = json.loads((d / "run" / "run.json").read_text())
    ckpt = Path(summary.get("finetune", summary["phase_b"])["artefact"]) / "model.ckpt"  # the network evaluated
    ev = summary.get("eval", {})
    row = {"variant": " ".join([name, *extra]), "what": what, "overrides": overrides, "train_seconds": round(train_s),
           "phase_a_acc": json.loads((Path(summary["phase_a"]["artefact"]) / "metrics.json").read_text())
           .get("phase_a/test/acc"),  # also when the phase was reused
           "overall": ev.get("eval/acc/overall"), "known_known": ev.get("eval/acc/known_known"),
           "unknown_unknown": ev.get("eval/acc/unknown_unknown"),
           "auc": ev.get("eval/auc"), "jpeg_stats_acc": ev.get("difficulty/jpeg_stats_acc"), "checkpoint": str(ckpt)}
    for tag, extra in (("4nat", []), ("1nat", ["transfer.min_entropy=1.0"])):
        rd = d / f"transfer-{tag}"
        _run([str(BIN / "camsim-eval"), f"ckpt={ckpt}", "data=folder", f"data.root={real}", *extra,
              f"hydra.run.dir={rd}"], d / f"transfer-{tag}.log")
        m = json.loads((rd / "metrics.json").read_text())
        row[f"same_photo_{tag}"] = _auc(m, "patch", "same_photo")
        row[f"two_photos_{tag}"] = _auc(m, "patch", "other_photo")
        row[f"image_two_photos_{tag}"] = _auc(m, "image", "other_photo")
    return row


def _f(v: float | None, pct: bool = False) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    head = ("| variant | Phase A | sim overall | sim KK | sim UU | sim AUC | JPEG-stats on A | real same photo 4/1 nat "
            "| real two photos 4/1 nat | real image two photos 4/1 nat |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['variant']} | {_f(r['phase_a_acc'], True)} | {_f(r['overall'], True)} | "
                     f"{_f(r['known_known'], True)} | {_f(r['unknown_unknown'], True)} | {_f(r['auc'])} | {_f(r['jpeg_stats_acc'], True)} | "
                     f"{_f(r['same_photo_4nat'])} / {_f(r['same_photo_1nat'])} | "
                     f"{_f(r['two_photos_4nat'])} / {_f(r['two_photos_1nat'])} | "
                     f"{_f(r['image_two_photos_4nat'])} / {_f(r['image_two_photos_1nat'])} |")
    return "\n".join(lines)


def paired_rows(out: Path, reference: Path, reps: int = 1000) -> str:
    """Markdown: every variant dir under ``out`` against ``reference``, two photos of one model,
    patch and image level, at 4 and 1 nat (paired bootstrap, camsim.eval.paired)."""
    from camsim.eval.paired import paired_bootstrap, read_scores

    lines = [f"Paired against {reference.name} (Δ AUC, two photos of one model vs different models; 95 % paired "
             f"bootstrap over models and photos, {reps} replicates; P = share of replicates where the variant is better)",
             "", "| variant | patch 4 nat | patch 1 nat | image 4 nat | image 1 nat |", "|---|---:|---:|---:|---:|"]
    tags, keys = ("4nat", "1nat"), ("patch/other_photo", "image/other_photo")
    ref = {t: read_scores(reference / f"transfer-{t}") for t in tags
           if (reference / f"transfer-{t}" / "scores.npz").is_file()}
    for d in sorted(p for p in out.iterdir() if (p / "transfer-4nat" / "scores.npz").is_file()):
        if d.resolve() == reference.resolve():
            continue
        cell = {}
        for t in tags:
            if t in ref and (d / f"transfer-{t}" / "scores.npz").is_file():
                res = paired_bootstrap(ref[t], read_scores(d / f"transfer-{t}"), reps)  # every contrast at once
                for k in keys:
                    r = res[k]["auc"]
                    cell[k, t] = f"{r['delta']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] P {100 * r['p_b_better']:.0f} %"
        lines.append(f"| {d.name} | " + " | ".join(cell.get((k, t), "n/a") for k in keys for t in tags) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help=f"default: all of {list(VARIANTS)}")
    ap.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "cameras"),
                    help="folder of real photos, one sub-folder per camera model")
    ap.add_argument("--out", default=str(REPO / "outputs" / "realism"))
    ap.add_argument("--extra", nargs="*", default=[],
                    help="overrides added to every variant, e.g. --extra seed=1 (a second draw of the whole run)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--paired", action="store_true", help="no training: compare the variants already in --out "
                    "with --reference (paired bootstrap)")
    ap.add_argument("--reference", default=None, help="a variant dir to compare against (default: OUT/default)")
    a = ap.parse_args()
    if a.list:
        for k, (what, ov) in VARIANTS.items():
            print(f"{k:20s} {what}\n{'':20s} {' '.join(ov) or '(no override)'}")
        return
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if not Path(a.real).is_dir():
        raise SystemExit(f"--real {a.real}: not a folder of camera-model sub-folders")
    out = Path(a.out)
    reference = Path(a.reference) if a.reference else out / "_".join(["default", *a.extra]).replace("=", "-")
    if a.paired:
        if not (reference / "transfer-4nat" / "scores.npz").is_file():
            raise SystemExit(f"--reference {reference}: no transfer-4nat/scores.npz (run that variant first)")
        print(paired_rows(out, reference))
        return
    rows = []
    for name in a.variants or list(VARIANTS):
        rows.append(run_variant(name, out, Path(a.real), a.extra))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        (out / "realism.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    if (reference / "transfer-4nat" / "scores.npz").is_file():
        print()
        print(paired_rows(out, reference))


if __name__ == "__main__":
    main()
