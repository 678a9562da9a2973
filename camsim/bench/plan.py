"""Which rows a run measures, with what sizes: the plan built from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from camsim.config import backbone_config, feature_layer, to_plain  # also registers the structured schema

__all__ = ["CONF_DIR", "FULL", "SMOKE", "Spec", "build_plan", "recipe"]

#: the config tree (as camsim.cli.CONF_DIR, which is not imported: it sets OMP_WAIT_POLICY)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# sizes of a full run and of --smoke (tiny: every row in a few seconds)
FULL = dict(patch_sizes=[64, 256], gemm_n=4096, gemm_runs=5, stream_n=1 << 25, stream_runs=10, batch=64, bf16_batch=16, min_time=3.0,
            max_time=30.0, min_reps=3, extract_images=8, extract_size=[1536, 2048], loader_patches=15000,
            loader_max_bytes=256 << 20, decode_size=[3000, 4000], decode_reps=5,
            synth=dict(num_models=4, num_families=2, images_per_model=2, image_size=[768, 1024]),
            pb_features=20000, pb_eval_pairs=1_000_000, pb_matrix_n=2000, loc_size=[3000, 4000], loc_patch=256,
            photo_size=[3000, 4000], photos=2)
SMOKE = dict(patch_sizes=[32], gemm_n=256, gemm_runs=2, stream_n=1 << 16, stream_runs=2, batch=4, bf16_batch=4, min_time=0.0, max_time=1.0,
             min_reps=1, extract_images=2, extract_size=[192, 256], loader_patches=256,
             loader_max_bytes=1 << 20, decode_size=[192, 256], decode_reps=1,
             synth=dict(num_models=2, num_families=1, images_per_model=1, image_size=[64, 96]),
             pb_features=400, pb_eval_pairs=4096, pb_matrix_n=128, loc_size=[192, 256], loc_patch=32,
             photo_size=[192, 256], photos=2)


@dataclass
class Spec:
    """One row of the benchmark: ``name`` shown in the table, ``kind`` a key of ``runner.ROWS``."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)


def _check_choice(group: str, name: str, option: str) -> None:
    """ValueError naming ``option`` when ``conf/<group>/<name>.yaml`` does not exist."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ValueError(f"{option}: no config {path}; choose one of {names}")


def recipe(experiment: str = "quick", model: str | None = None, head: str | None = None,
           data: str | None = None) -> dict:
    """The parts of a composed recipe (``experiment=...``, with ``model=`` / ``similarity=`` /
    ``data=`` when given) the benchmark uses, as plain data: configs as camsim-run builds them."""
    overrides = [f"experiment={experiment}"]
    if data is not None:
        _check_choice("data", data, "--data")
        overrides.append(f"data={data}")
    if model is not None:
        _check_choice("model", model, "--model")
        overrides.append(f"model={model}")
    if head is not None:
        _check_choice("similarity", head, "--head")
        overrides.append(f"similarity={head}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    return {"experiment": experiment, "model_name": str(cfg.hydra.runtime.choices.model),
            "model": backbone_config(cfg), "feature_layer": feature_layer(cfg),
            "similarity_name": str(cfg.hydra.runtime.choices.similarity), "similarity": to_plain(cfg.similarity),
            "patch": int(cfg.patches.size), "align": int(cfg.patches.align),
            "min_entropy": float(cfg.patches.min_entropy), "phase_a_loader": to_plain(cfg.phase_a.loader),
            "phase_a_optimizer": to_plain(cfg.phase_a.optimizer), "phase_b_loader": to_plain(cfg.phase_b.loader),
            "phase_b_optimizer": to_plain(cfg.phase_b.optimizer), "train_pairs": int(cfg.phase_b.train_pairs),
            "channels_last": bool(cfg.phase_a.channels_last), "compile": bool(cfg.phase_a.compile),
            "data": to_plain(cfg.data)}


#: rows whose lines carry FLOPs (a share of the GEMM ceiling, of the roofline bound)
FLOP_KINDS = ("phase_a", "phase_b_train", "phase_b_eval", "localize")


def _matches(name: str, pattern: str) -> bool:
    """``--only`` patterns: a glob (``phase_a/*/64/*``) or a row-name prefix (``data``)."""
    return fnmatchcase(name, pattern) or name == pattern or name.startswith(pattern.rstrip("/") + "/")


def build_plan(args: argparse.Namespace) -> list[Spec]:
    """The rows a run measures, from the parsed command line (``--only`` applied)."""
    sizes = dict(SMOKE if args.smoke else FULL)
    patch_sizes = list(args.patch_sizes or sizes["patch_sizes"])
    timing = {k: sizes[k] for k in ("min_time", "max_time", "min_reps")}
    batch = int(args.batch or sizes["batch"])
    quick = recipe("quick")
    # --model / --head as camsim-run composes them (schema defaults filled in)
    chosen = recipe("quick", model=args.model, head=args.head)
    model_cfg, head_cfg = chosen["model"], chosen["similarity"]
    variants = list(args.variants)
    plan = [Spec("gemm", "gemm", {"n": args.gemm_n or sizes["gemm_n"], "runs": sizes["gemm_runs"]}),
            Spec("stream", "stream", {"n": sizes["stream_n"], "runs": sizes["stream_runs"]})]
    for P in patch_sizes:
        for v in variants:
            # bf16 autocast is ~10-50x slower on CPUs without bf16 instructions: fewer patches
            b = max(2, min(batch, sizes["bf16_batch"] * 64 * 64 // (P * P))) if v == "bf16" else batch
            plan.append(Spec(f"phase_a/{args.model}/{P}/{v}", "phase_a", {
                "model_name": args.model, "model_cfg": model_cfg, "patch": P, "batch": b, "variant": v,
                "infer_batch": b if (args.batch or args.smoke or v == "bf16") else None,
                "timing": timing, "compile_cache": args.compile_cache}))
    q_patch = quick["patch"] if not args.smoke else patch_sizes[0]
    q_batch = quick["phase_a_loader"]["batch_size"] if not args.smoke else batch
    for v in ("eager", "channels_last", "composed", "compile"):  # composed: what the quick recipe trains with
        if v in variants:
            plan.append(Spec(f"phase_a/quick/{v}", "phase_a", {
                "model_name": quick["model_name"], "model_cfg": quick["model"], "patch": q_patch, "batch": q_batch,
                "infer_batch": batch if args.smoke else None, "variant": v, "timing": timing,
                "compile_cache": args.compile_cache, "recipe": "quick"}))
    for fmt in ("jpg", "png"):
        plan.append(Spec(f"data/extract/{'jpeg' if fmt == 'jpg' else 'png'}", "extract", {
            "format": fmt, "images": sizes["extract_images"], "image_size": sizes["extract_size"],
            "patch_sizes": patch_sizes, "timing": timing, "workers": args.workers}))
    for P in sorted(set(patch_sizes) | {q_patch}):
        n = min(sizes["loader_patches"], max(64, sizes["loader_max_bytes"] // (P * P)))
        plan.append(Spec(f"data/loader/{P}", "loader", {
            "patch": P, "patches": n, "loader": quick["phase_a_loader"], "extra_workers": args.loader_workers,
            "timing": timing, "recipe_patch": q_patch}))
    plan.append(Spec("data/decode", "decode", {"image_size": sizes["decode_size"], "reps": sizes["decode_reps"]}))
    plan.append(Spec("data/synth", "synth", {"synth": sizes["synth"], "workers": args.workers}))
    common = {"model_cfg": model_cfg, "head_cfg": head_cfg, "feature_layer": chosen["feature_layer"],
              "timing": timing}
    plan.append(Spec("phase_b/train", "phase_b_train", {
        **common, "features": sizes["pb_features"], "pairs": quick["train_pairs"] if not args.smoke else 512,
        "loader": quick["phase_b_loader"], "optimizer": quick["phase_b_optimizer"]}))
    plan.append(Spec("phase_b/eval", "phase_b_eval", {
        **common, "features": sizes["pb_features"], "pairs": sizes["pb_eval_pairs"], "matrix_n": sizes["pb_matrix_n"]}))
    for v in args.localize_variants:
        plan.append(Spec("phase_b/localize" + ("" if v == "channels_last" else f"/{v}"), "localize", {
            **common, "patch": sizes["loc_patch"], "image_size": sizes["loc_size"], "variant": v,
            "compile_cache": args.compile_cache}))
    # camsim-localize end to end as the analyst runs it: the quick recipe's network (or --localize-ckpt)
    photo = {"model_cfg": quick["model"], "head_cfg": quick["similarity"], "feature_layer": quick["feature_layer"],
             "patch": quick["patch"], "align": quick["align"], "min_entropy": quick["min_entropy"],
             "image_size": sizes["photo_size"], "photos": sizes["photos"],
             "ckpt": str(args.localize_ckpt) if args.localize_ckpt else None,
             "folder": str(args.localize_folder) if args.localize_folder else None}
    for v in args.localize_variants:
        plan.append(Spec("phase_b/localize/photo" + ("" if v == "channels_last" else f"/{v}"), "localize_photo",
                         {**photo, "variant": v}))
    # the main job as a user starts it, from an empty directory (smoke: debug=fast)
    plan.append(Spec("job/quick", "job", {"overrides": ["debug=fast"] if args.smoke else []}))
    # the ceiling again at the end: this VM's clock drifts (102-161 GFLOP/s in runs of one day),
    # so the ceiling is the faster of the two and every share is conservative
    plan.append(Spec("gemm/end", "gemm", dict(plan[0].params)))
    if args.only:
        chosen = [s for s in plan if any(_matches(s.name, pat) for pat in args.only)]
        if any(s.kind in FLOP_KINDS for s in chosen):  # their shares need the ceiling and the bandwidth
            chosen = [s for s in plan if s in chosen or s.name in ("gemm", "stream", "gemm/end")]
        plan = chosen
    if not any(s.kind not in ("gemm", "stream") for s in plan):  # only the yardsticks asked for: once each
        plan = [s for s in plan if s.name in ("gemm", "stream")]
    return plan
