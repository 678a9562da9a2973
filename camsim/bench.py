"""Benchmarks against the hardware's limit (issue 9): ``python -m camsim.bench``.

Measures, on the machine it runs on, the fp32 GEMM ceiling and camsim's hot paths —
Phase A training / inference (method.md, "Learning Phase A"), the data layer (patch
extraction, cached-patch loader, JPEG decoding, the simulator), Phase B head training,
pair scoring and splicing localisation (method.md, "Learning Phase B", "Splicing
demonstration") — prints a table with the achieved share of the ceiling and the issue's
targets, and writes everything to JSON. ``benchmarks/README.md`` explains each row.

Conventions (also written into the JSON's ``meta``):

* throughput = items per second of the **fastest** timed call (best of several, like the
  GEMM ceiling, so both sides of a ratio are measured the same way; the median is in the
  JSON too);
* FLOPs: ``count_flops`` (torch FlopCounterMode, 2 per multiply-add, conv/matmul only) of
  one forward pass; a training step counts 3x the forward FLOPs (backward ~ 2x forward);
* peak memory: every row runs in a fresh ``python -m camsim.bench`` subprocess and reports
  that process's peak resident set size (``ru_maxrss``) plus its RSS when the row started
  (imports only) and the peak of its own child processes (loader / extraction workers);
  Phase A rows read it before building the fp64 reference models of their correctness check.
  ``--in-process`` runs the rows in this process instead and resets the kernel's
  high-water mark (``/proc/self/clear_refs``) before each row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camsim.artefacts import atomic_write_json
from camsim.progress import default_workers

__all__ = ["main", "build_plan", "run_plan", "compare_variant", "agreement", "reference_outputs", "targets", "annotate",
           "texture", "ROWS", "TARGETS"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
NUM_CLASSES = 10
VARIANTS = ("eager", "channels_last", "compile", "bf16")
VARIANT_LABEL = {"eager": "eager, default layout", "channels_last": "channels_last",
                 "compile": "channels_last + torch.compile", "bf16": "bf16 autocast (eager)"}
#: issue 9 targets (shares of the GEMM ceiling; loader / training ratio)
TARGETS = {"inference_share": 0.70, "training_share": 0.45, "loader_ratio": 3.0}
#: error floor (relative to fp64) below which a fast path always "agrees"; see ``agreement``
AGREE_RTOL = {"eager": 1e-4, "channels_last": 1e-4, "compile": 1e-4, "bf16": 5e-2}
FLOP_CONVENTION = ("FLOPs = torch FlopCounterMode (2 per multiply-add; conv + matmul only) of one "
                   "forward pass per item; a training step counts 3x forward")
TIMING_CONVENTION = ("throughput of the fastest timed call (best of several, after warm-up); "
                     "median in the JSON")

# sizes of a full run and of --smoke (tiny: every row in a few seconds)
FULL = dict(patch_sizes=[64, 256], gemm_n=4096, gemm_runs=5, batch=64, bf16_batch=16, min_time=3.0,
            max_time=30.0, min_reps=3, extract_images=8, extract_size=[1536, 2048], loader_patches=15000,
            loader_max_bytes=256 << 20, decode_size=[3000, 4000], decode_reps=5,
            synth=dict(num_models=4, num_families=2, images_per_model=2, image_size=[768, 1024]),
            pb_features=20000, pb_eval_pairs=1_000_000, pb_matrix_n=2000, loc_size=[3000, 4000], loc_patch=256)
SMOKE = dict(patch_sizes=[32], gemm_n=256, gemm_runs=2, batch=4, bf16_batch=4, min_time=0.0, max_time=1.0,
             min_reps=1, extract_images=2, extract_size=[192, 256], loader_patches=256,
             loader_max_bytes=1 << 20, decode_size=[192, 256], decode_reps=1,
             synth=dict(num_models=2, num_families=1, images_per_model=1, image_size=[64, 96]),
             pb_features=400, pb_eval_pairs=4096, pb_matrix_n=128, loc_size=[192, 256], loc_patch=32)


class SkipRow(Exception):
    """A row that cannot run here (e.g. the simulator is not importable); the reason is shown."""


# --------------------------------------------------------------------------- helpers


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A random-textured uint8 ``[H, W]`` image: blocky noise at three scales plus per-pixel
    Gaussian noise, mid-grey centred; ≥ 99.9 % of its 32-px patches have entropy > 4 nats
    (a few touch clipped pixels)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 128.0, np.float32)
    for scale, amp in ((64, 24.0), (16, 16.0), (4, 15.0)):
        small = rng.normal(0.0, amp, (height // scale + 1, width // scale + 1)).astype(np.float32)
        img += np.repeat(np.repeat(small, scale, axis=0), scale, axis=1)[:height, :width]
    img += rng.normal(0.0, 12.0, (height, width)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def texture_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a shared :func:`texture` plus a little per-channel noise."""
    base = texture(height, width, seed).astype(np.int16)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        out[..., c] = np.clip(base + rng.integers(-6, 7, (height, width), dtype=np.int16), 0, 255)
    return out


def _time_calls(fn: Callable[[], Any], cfg: dict, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls: at least ``min_reps`` calls and
    ``min_time`` seconds, stopping early once ``max_time`` is spent (with ≥ 2 calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        spent = time.perf_counter() - start
        if len(times) >= cfg["min_reps"] and spent >= cfg["min_time"]:
            break
        if spent >= cfg["max_time"] and len(times) >= min(2, cfg["min_reps"]):
            break
    return times


def _rate(items: float, times: Sequence[float]) -> dict:
    """``{"best", "median"}`` items per second of per-call ``times``."""
    return {"best": items / min(times), "median": items / statistics.median(times), "calls": len(times)}


def _line(metric: str, value: float | None, unit: str, flops: float | None = None, **extra: Any) -> dict:
    """One display line of a row: ``value`` in ``unit``; ``flops`` per item gives GFLOP/s."""
    return {"metric": metric, "value": value, "unit": unit, "flops": flops, **extra}


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_mb(who: int) -> float:
    """``ru_maxrss`` in MB (KiB on Linux, bytes on macOS)."""
    return resource.getrusage(who).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ≥ 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _model_cfg(group: str, name: str) -> dict:
    """A ``conf/<group>/<name>.yaml`` as a plain dict (for ``hydra.utils.instantiate``)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ValueError(f"--{'model' if group == 'model' else 'head'}: no config {path}; choose one of {names}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _recipe(experiment: str) -> dict:
    """The parts of a composed recipe (``experiment=...``) the benchmark uses, as plain data."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import camsim.config  # noqa: F401  (registers the structured schema)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    return {"experiment": experiment, "model_name": str(cfg.hydra.runtime.choices.model),
            "model": plain(cfg.model), "similarity_name": str(cfg.hydra.runtime.choices.similarity),
            "patch": int(cfg.patches.size), "phase_a_loader": plain(cfg.phase_a.loader),
            "phase_a_optimizer": plain(cfg.phase_a.optimizer), "phase_b_loader": plain(cfg.phase_b.loader),
            "phase_b_optimizer": plain(cfg.phase_b.optimizer), "train_pairs": int(cfg.phase_b.train_pairs),
            "channels_last": bool(cfg.phase_a.channels_last), "compile": bool(cfg.phase_a.compile)}


@contextlib.contextmanager
def _inductor_cache(mode: str) -> Iterator[None]:
    """``fresh``: an empty temporary inductor cache (cold compile, as on a new machine);
    ``default``: the user's cache (warm after the first run)."""
    if mode == "default":
        yield
        return
    from torch._inductor import utils

    fresh = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache
    with fresh():
        yield


def _rel_diff(a: Any, b: Any, norm: bool = False) -> float:
    """max |a − b| / max |b| (``norm``: ‖a − b‖ / ‖b‖); 0 for empty tensors."""
    a, b = a.detach().float(), b.detach().float()
    if not b.numel():
        return 0.0
    if norm:
        return float((a - b).norm()) / max(float(b.norm()), 1e-12)
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


# --------------------------------------------------------------------------- rows


def row_gemm(p: dict) -> dict:
    """fp32 GEMM ceiling: best of ``runs`` timed ``n x n @ n x n`` products (2 n^3 FLOPs)."""
    import torch

    n = int(p["n"])
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up (thread pool, packing buffers)
    times = []
    for _ in range(int(p["runs"])):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t)
    flops = 2.0 * n ** 3
    best = flops / min(times) / 1e9
    return {"lines": [_line(f"fp32 GEMM {n}x{n}, {torch.get_num_threads()} threads", best, "GFLOP/s")],
            "gflops": best, "gflops_median": flops / statistics.median(times) / 1e9, "n": n,
            "threads": torch.get_num_threads(), "runs": len(times)}


def _outputs(model: Any, params: Sequence[Any], x: Any, y: Any, amp: Callable) -> dict:
    """Eval-mode logits, train-mode logits and the gradients of one cross-entropy backward
    pass (float64 copies). Eval first, so both see the same batch-norm running statistics."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad(), amp():
        ev = model(x).double()
    model.train()
    for q in params:
        q.grad = None
    with amp():
        logits = model(x)
    F.cross_entropy(logits if logits.dtype == torch.float64 else logits.float(), y).backward()
    grads = [q.grad.detach().double().clone() for q in params]
    for q in params:
        q.grad = None
    return {"eval_logits": ev, "train_logits": logits.detach().double(), "grads": grads}


def reference_outputs(model_cfg: dict, patch: int, state: dict, x: Any, y: Any) -> dict:
    """``_outputs`` of the plain eager backbone with weights ``state``, in fp32 and in fp64."""
    import copy

    from camsim.lit.phase_a import build_backbone

    ref = build_backbone(model_cfg, NUM_CLASSES, patch)
    ref.load_state_dict(state)
    f64 = copy.deepcopy(ref).double()
    return {"fp32": _outputs(ref, list(ref.parameters()), x, y, contextlib.nullcontext),
            "fp64": _outputs(f64, list(f64.parameters()), x, y, contextlib.nullcontext)}


def agreement(fast: dict, refs: dict, variant: str) -> dict:
    """Is a fast path as accurate as the fp32 eager reference?

    Errors are relative to the fp64 eager result (logits: max |a − b| / max |b|; gradients:
    ‖a − b‖ / ‖b‖ per tensor). fp32 itself is not exact — the gradients of the layers before
    conv2's batch norm are 1e-3 (64 px) to 5e-3 (256 px) off fp64 in fp32 eager (cancellation
    in the batch-norm backward) — so a quantity agrees when its error is ≤ max(
    ``AGREE_RTOL[variant]``, 4 × fp32 eager's error); per gradient tensor. ``forward_agree``
    covers the eval / train logits (what scores and features depend on), ``grads_agree``
    the gradients, ``agree`` both.
    """
    f32, f64 = refs["fp32"], refs["fp64"]
    floor = AGREE_RTOL.get(variant, 0.0)
    out: dict[str, Any] = {"variant": variant, "tolerance": floor, "factor": 4.0}
    flags = {}
    for key in ("eval_logits", "train_logits", "grads"):
        if key == "grads":
            fast_err = [_rel_diff(a, b, norm=True) for a, b in zip(fast[key], f64[key])]
            ref_err = [_rel_diff(a, b, norm=True) for a, b in zip(f32[key], f64[key])]
            vs32 = max((_rel_diff(a, b, norm=True) for a, b in zip(fast[key], f32[key])), default=0.0)
        else:
            fast_err, ref_err = [_rel_diff(fast[key], f64[key])], [_rel_diff(f32[key], f64[key])]
            vs32 = _rel_diff(fast[key], f32[key])
        flags[key] = all(e <= max(floor, 4.0 * r) for e, r in zip(fast_err, ref_err))
        out[key] = {"vs_fp64": max(fast_err, default=0.0), "fp32_eager_vs_fp64": max(ref_err, default=0.0),
                    "vs_fp32_eager": vs32}
    # logits (eval and train mode) as one quantity: what features and scores depend on
    out["forward"] = {k: max(out["eval_logits"][k], out["train_logits"][k]) for k in ("vs_fp64", "fp32_eager_vs_fp64")}
    out["forward_agree"] = bool(flags["eval_logits"] and flags["train_logits"])
    out["grads_agree"] = bool(flags["grads"])
    out["agree"] = out["forward_agree"] and out["grads_agree"]
    out["worst_vs_fp64"] = max(out[k]["vs_fp64"] for k in ("eval_logits", "train_logits", "grads"))
    out["worst_fp32_eager_vs_fp64"] = max(out[k]["fp32_eager_vs_fp64"] for k in ("eval_logits", "train_logits", "grads"))
    return out


def _amp(variant: str) -> Callable:
    import torch

    if variant == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _inputs(batch: int, patch: int, seed: int = 0) -> tuple[Any, Any]:
    import torch

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 256, (batch, 1, patch, patch), dtype=np.uint8))
    return x, torch.from_numpy(rng.integers(0, NUM_CLASSES, batch))


def _classifier(model_cfg: dict, patch: int, variant: str, seed: int = 0) -> Any:
    import torch

    from camsim.lit.phase_a import CameraClassifier

    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; choose one of {list(VARIANTS)}")
    torch.manual_seed(seed)
    return CameraClassifier(model_cfg, [f"model{k:02d}" for k in range(NUM_CLASSES)], patch,
                            channels_last=variant in ("channels_last", "compile"), compile=variant == "compile")


def compare_variant(model_cfg: dict, patch: int, variant: str, batch: int = 4, seed: int = 0) -> dict:
    """A Phase A fast path (channels_last | compile | bf16 | eager) vs the eager reference
    with the same weights and batch: see :func:`agreement` for the criterion."""
    import copy

    clf = _classifier(model_cfg, patch, variant, seed)
    x, y = _inputs(batch, patch, seed)
    state = copy.deepcopy(clf.backbone.state_dict())
    fast = _outputs(clf, list(clf.backbone.parameters()), x, y, _amp(variant))
    return agreement(fast, reference_outputs(model_cfg, patch, state, x, y), variant)


def row_phase_a(p: dict) -> dict:
    """Phase A inference and training patches/s of one backbone, patch size and variant.

    Inference: eval mode, ``no_grad``, ``CameraClassifier.forward`` (logits, as counted by
    ``count_flops``). Training: forward, cross-entropy, backward, SGD step, constrained-layer
    projection — the work of ``training_step`` + ``optimizer_step`` without logging. After
    the timing (and the peak-memory reading), the outputs at the initial weights are checked
    against fp32 / fp64 eager references (cached per run for rows sharing model, size, batch).
    """
    import copy

    import torch
    import torch.nn.functional as F

    from camsim.artefacts import content_hash
    from camsim.lit.phase_a import FeaturePass, feature_batch_size
    from camsim.models.backbone import count_flops
    from camsim.models.constrained import project_constrained_layers_

    variant, P = p["variant"], int(p["patch"])
    B = int(p["batch"])
    amp = _amp(variant)
    x, y = _inputs(B, P)
    # inference = the product's frozen-backbone feature pass (FeaturePass: batch by pixel budget,
    # channels_last / compile with inductor freezing as the variant says); bf16 = autocast eager
    B_inf = int(p.get("infer_batch") or feature_batch_size(P))
    x_inf = _inputs(B_inf, P, seed=1)[0]
    res: dict[str, Any] = {"model": p["model_name"], "patch": P, "batch": B, "infer_batch": B_inf, "variant": variant}
    with _inductor_cache(p.get("compile_cache", "fresh") if variant == "compile" else "default"):
        clf = _classifier(p["model_cfg"], P, variant)
        init = copy.deepcopy(clf.state_dict())
        flops = float(count_flops(clf.backbone, P))
        opt = torch.optim.SGD(clf.backbone.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        fp = None if variant == "bf16" else FeaturePass(
            clf.backbone, ["logits"], B_inf, channels_last=variant in ("channels_last", "compile"),
            compile=variant == "compile")
        x_inf_np = x_inf.numpy()

        def infer() -> None:
            if fp is not None:
                fp(x_inf_np)
                return
            with torch.no_grad(), amp():
                clf(x_inf)

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            with amp():
                logits = clf(x)
            F.cross_entropy(logits.float(), y).backward()
            opt.step()
            project_constrained_layers_(clf.backbone)

        first: dict[str, float] = {}
        clf.eval()
        t = time.perf_counter()
        infer()
        first["infer"] = time.perf_counter() - t
        t_inf = _time_calls(infer, p["timing"], warmup=0)
        clf.train()
        t = time.perf_counter()
        train_step()
        first["train"] = time.perf_counter() - t
        t_tr = _time_calls(train_step, p["timing"], warmup=0)
        res["first_call_s"] = first
        hwm = _status_kb("VmHWM")  # peak so far: before the reference models below are built
        res["peak_timed_mb"] = hwm / 1024 if hwm else _maxrss_mb(resource.RUSAGE_SELF)

        # correctness at the initial weights (same for every variant of this model / size / batch)
        clf.load_state_dict(init)
        opt.zero_grad(set_to_none=True)
        # eval logits as the feature pass computes them (compiled graphs included), before
        # _outputs' train-mode forward moves the batch-norm running statistics
        fp_eval = None if fp is None else torch.from_numpy(np.concatenate(
            [fp(x[i:i + B_inf].numpy())["logits"] for i in range(0, B, B_inf)])).double()
        fast = _outputs(clf, list(clf.backbone.parameters()), x, y, amp)
        if fp_eval is not None:
            fast["eval_logits"] = fp_eval
        state = {k[len("backbone."):]: v for k, v in init.items() if k.startswith("backbone.")}
        key = content_hash(p["model_cfg"], P, B, sorted((k, float(v.double().sum())) for k, v in state.items()))
        cache = Path(p["ref_cache"]) / f"ref-{key}.pt" if p.get("ref_cache") else None
        if cache is not None and cache.is_file():
            refs = torch.load(cache, weights_only=True)
        else:
            refs = reference_outputs(p["model_cfg"], P, state, x, y)
            if cache is not None:
                torch.save(refs, cache)
        res["agreement"] = agreement(fast, refs, variant)

        if variant == "compile":
            # the same compile again after dynamo's in-memory caches are dropped: what a later
            # run pays once the on-disk inductor cache holds this model
            import torch._dynamo

            torch._dynamo.reset()
            again = _classifier(p["model_cfg"], P, variant)
            t = time.perf_counter()
            FeaturePass(again.backbone, ["logits"], B_inf, compile=True)(x_inf_np)
            warm_inf = time.perf_counter() - t
            again.train()
            t = time.perf_counter()
            F.cross_entropy(again(x), y).backward()
            warm_tr = time.perf_counter() - t
            res["compile_s"] = {"infer_cold": first["infer"] - min(t_inf), "train_cold": first["train"] - min(t_tr),
                                "infer_warm": warm_inf - min(t_inf), "train_warm": warm_tr - min(t_tr),
                                "cache": p.get("compile_cache", "fresh")}
    inf, tr = _rate(B_inf, t_inf), _rate(B, t_tr)
    res.update(flops_forward=flops, inference=inf, training=tr)
    a = res["agreement"]
    fwd, fwd32 = a["forward"]["vs_fp64"], a["forward"]["fp32_eager_vs_fp64"]
    if variant == "eager":
        n_inf = f"logits vs fp64 {fwd32:.1e}"
        n_tr = f"grads vs fp64 {a['grads']['fp32_eager_vs_fp64']:.1e}"
    else:
        n_inf = f"logits vs fp64 {fwd:.1e} (eager {fwd32:.1e}): {'agree' if a['forward_agree'] else 'DIFFER'}"
        n_tr = (f"grads vs fp64 {a['grads']['vs_fp64']:.1e} (eager {a['grads']['fp32_eager_vs_fp64']:.1e}): "
                f"{'agree' if a['grads_agree'] else 'DIFFER'}")
    lines = [_line("inference", inf["best"], "patches/s", flops, note=f"batch {B_inf}; {n_inf}"),
             _line("training", tr["best"], "patches/s", 3 * flops, note=f"batch {B}, FLOPs 3x fwd; {n_tr}")]
    if "compile_s" in res:
        c = res["compile_s"]
        lines.append(_line("compile time (paid once)", c["infer_cold"] + c["train_cold"], "s",
                           note=f"cold: infer {c['infer_cold']:.1f} s + train {c['train_cold']:.1f} s; "
                                f"warm cache: {c['infer_warm'] + c['train_warm']:.1f} s"))
    res["lines"] = lines
    return res


def _write_images(folder: Path, n: int, size: Sequence[int], fmt: str, seed: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"img{k:03d}.{fmt}"
        im = Image.fromarray(texture_rgb(int(size[0]), int(size[1]), seed + k))
        if fmt == "jpg":
            im.save(path, quality=90)
        else:
            im.save(path, compress_level=6)
        paths.append(path)
    return paths


def row_extract(p: dict) -> dict:
    """Patch extraction from JPEG or PNG files: decode once, cut the grid, entropy filter.

    ``in-process``: ``extract_image_patches`` per file, one core. ``PatchStore``: the cached
    path camsim runs (worker processes, round-robin selection, atomic write), cold cache.
    """
    from camsim.data.patches import extract_image_patches
    from camsim.data.store import PatchRequest, PatchSettings, PatchStore

    fmt = p["format"]
    lines, res = [], {"format": fmt, "images": p["images"], "image_size": p["image_size"]}
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        paths = _write_images(Path(tmp) / "img", p["images"], p["image_size"], fmt, seed=11)
        mp = p["images"] * p["image_size"][0] * p["image_size"][1] / 1e6
        for P in p["patch_sizes"]:
            counts = {}

            def one_pass() -> None:
                kept = cells = 0
                for k, path in enumerate(paths):
                    r = extract_image_patches(path, P, 8, 4.0, 10 ** 9, k, 200_000_000)
                    if r.error:
                        raise RuntimeError(f"{path}: {r.error}")
                    kept += len(r.patches)
                    cells += len(r.patches) + r.low_entropy
                counts.update(kept=kept, cells=cells)

            times = _time_calls(one_pass, p["timing"], warmup=1)
            rate = _rate(counts["kept"], times)
            builds = []
            for rep in range(max(1, min(2, p["timing"]["min_reps"]))):
                store = PatchStore(Path(tmp) / f"store-{P}-{rep}", PatchSettings(size=P), workers=p.get("workers"))
                req = PatchRequest("bench", "train", tuple(paths), counts["kept"])
                t = time.perf_counter()
                got = store.get([req])[("bench", "train")]
                builds.append(time.perf_counter() - t)
            store_rate = _rate(len(got), builds)
            res[str(P)] = {"patches": counts["kept"], "cells": counts["cells"], "in_process": rate,
                           "mp_s": mp / min(times), "store": store_rate, "store_patches": len(got)}
            lines.append(_line(f"{P} px, 1 core (extract_image_patches)", rate["best"], "patches/s",
                               note=f"{mp / min(times):.0f} MP/s; {counts['kept']}/{counts['cells']} cells kept"))
            lines.append(_line(f"{P} px, PatchStore (workers: {p.get('workers') or 'all cores'})",
                               store_rate["best"], "patches/s", note="cold cache, incl. writing the patch set"))
    res["lines"] = lines
    return res


def row_loader(p: dict) -> dict:
    """Cached-patch loader: ``PatchDataset`` (batched ``__getitems__``) + ``_loader`` as camsim
    builds them, one shuffled epoch per call; variants: worker processes, memory-mapped sets."""
    from omegaconf import OmegaConf

    from camsim.data import datamodules as dm
    from camsim.data.store import PatchSet

    P, n = int(p["patch"]), int(p["patches"])
    n_sets = NUM_CLASSES
    per_set = max(2, n // n_sets)
    rng = np.random.default_rng(0)
    lines, res = [], {"patch": P, "patches": per_set * n_sets, "loader": p["loader"]}
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        sets = []
        for k in range(n_sets):
            f = Path(tmp) / f"set{k}.npy"
            np.save(f, rng.integers(0, 256, (per_set, P, P), dtype=np.uint8))
            sets.append(PatchSet(f"model{k:02d}", "train", Path(tmp), np.load(f, mmap_mode="r"),
                                 np.zeros(per_set, np.int64), np.zeros((per_set, 2), np.int64), np.zeros(per_set),
                                 [], {}))
        workers = p["loader"]["num_workers"]
        variants = [("quick", f"recipe loader (workers {workers}, in memory)", workers, True)]
        for w in p["extra_workers"]:
            if w != workers:
                variants.append((f"workers{w}", f"workers {w}, in memory", w, True))
        variants.append(("mmap", f"memory-mapped sets (workers {workers})", workers, False))
        saved = dm.IN_MEMORY_BYTES
        for key, label, w, in_memory in variants:
            try:
                dm.IN_MEMORY_BYTES = saved if in_memory else -1
                ds = dm.PatchDataset(sets, range(n_sets))
            finally:
                dm.IN_MEMORY_BYTES = saved
            cfg = OmegaConf.create({**p["loader"], "num_workers": w})
            loader = dm._loader(ds, cfg, shuffle=True)

            # training loaders drop the last partial batch (one batch shape per epoch)
            per_epoch = len(ds) - len(ds) % int(cfg.batch_size) if loader.drop_last else len(ds)

            def epoch() -> None:
                seen = 0
                for xb, yb in loader:
                    seen += len(xb)
                if seen != per_epoch:
                    raise RuntimeError(f"loader gave {seen} of {per_epoch} patches")

            times = _time_calls(epoch, p["timing"], warmup=1 if w == 0 else 0)
            rate = _rate(per_epoch, times)
            res[key] = rate
            lines.append(_line(label, rate["best"], "patches/s",
                               note=f"batch {p['loader']['batch_size']}, {per_epoch} patches/epoch"
                                    + ("; worker start-up included" if w else "")))
    res["lines"] = lines
    return res


def row_decode(p: dict) -> dict:
    """``read_green`` of one large JPEG with the Pillow and simplejpeg decoders (pixels compared)."""
    from PIL import Image

    from camsim.data.io import read_green

    h, w = p["image_size"]
    res: dict[str, Any] = {"image_size": [h, w]}
    lines = []
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        path = Path(tmp) / "big.jpg"
        Image.fromarray(texture_rgb(h, w, 5)).save(path, quality=90)
        res["file_mb"] = path.stat().st_size / 1e6
        out = {}
        for dec in ("pillow", "simplejpeg", "auto"):
            times = []
            for _ in range(int(p["reps"]) + 1):
                t = time.perf_counter()
                out[dec] = read_green(path, decoder=dec)
                times.append(time.perf_counter() - t)
            times = times[1:] if len(times) > 1 else times
            res[dec] = {"mp_s": h * w / 1e6 / min(times), "mp_s_median": h * w / 1e6 / statistics.median(times)}
        res["identical"] = bool(np.array_equal(out["pillow"], out["simplejpeg"])
                                and np.array_equal(out["pillow"], out["auto"]))
    for dec in ("pillow", "simplejpeg", "auto"):
        note = f"{h * w / 1e6:.2g} MP JPEG q90 ({res['file_mb']:.2g} MB)"
        if dec == "simplejpeg":
            note += f"; pixels {'identical to' if res['identical'] else 'DIFFER from'} Pillow"
        lines.append(_line(f"read_green, decoder={dec}", res[dec]["mp_s"], "MP/s", note=note))
    res["lines"] = lines
    return res


def row_synth(p: dict) -> dict:
    """The camera simulator: ``render_catalogue`` of a small catalogue, images/s and MP/s."""
    try:
        import camsim.synth as synth

        render = getattr(synth, "render_catalogue", None)
        if render is None:
            from camsim.synth.render import render_catalogue as render
    except Exception as e:  # noqa: BLE001 - any import failure means "not available yet"
        raise SkipRow(f"camsim.synth not importable ({type(e).__name__}: {e})") from e
    s = p["synth"]
    n_img = s["num_models"] * s["images_per_model"]
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        t = time.perf_counter()
        render(Path(tmp) / "cat", s["num_models"], s["num_families"], s["images_per_model"], tuple(s["image_size"]),
               0, workers=p.get("workers"))
        dt = time.perf_counter() - t
    mp = n_img * s["image_size"][0] * s["image_size"][1] / 1e6
    label = f"render_catalogue ({n_img} images {s['image_size'][1]}x{s['image_size'][0]})"
    return {"images_s": n_img / dt, "mp_s": mp / dt, "seconds": dt, **s,
            "lines": [_line(label, n_img / dt, "images/s", note=f"{mp / dt:.2f} MP/s; workers: "
                                                                  f"{p.get('workers') or 'all cores'}")]}


def _similarity(p: dict, patch: int) -> Any:
    """An untrained ForensicSimilarity (backbone ``p['model_cfg']``, head ``p['head_cfg']``)."""
    import torch

    from camsim.lit.phase_b import ForensicSimilarity

    torch.manual_seed(0)
    phase_a = {"backbone": p["model_cfg"], "class_names": [f"model{k:02d}" for k in range(NUM_CLASSES)],
               "patch_size": patch}
    return ForensicSimilarity(phase_a, p["head_cfg"], p["model_cfg"].get("feature_layer", "fc_a2.pre"))


def _head_flops(head: Any, dim: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    f = torch.zeros(1, dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        head(f, f)
    return float(counter.get_total_flops())


def row_phase_b_train(p: dict) -> dict:
    """Phase B head training from cached features: ``PairDataset`` over an [N, d] feature
    matrix + ``_loader`` (recipe batch size), BCE on logits, the recipe's optimiser."""
    import hydra
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from camsim.data.datamodules import PairDataset, _loader

    sim = _similarity(p, 64)
    dim = sim.backbone.feature_dim(sim.feature_layer)
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (p["features"], dim)).astype(np.float32)
    labels = np.arange(p["features"]) % NUM_CLASSES
    ds = PairDataset(feats, labels, p["pairs"], seed=0)
    loader = _loader(ds, OmegaConf.create(p["loader"]), shuffle=True)
    opt = hydra.utils.instantiate(p["optimizer"], _convert_="all")(params=sim.head.parameters())
    sim.train()

    def epoch() -> None:
        for a, b, same in loader:
            opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(sim(a, b), same).backward()
            opt.step()

    times = _time_calls(epoch, p["timing"], warmup=1)
    rate = _rate(len(ds), times)
    flops = _head_flops(sim.head, dim)
    return {"pairs_per_epoch": len(ds), "feature_dim": dim, "training": rate, "flops_forward": flops,
            "lines": [_line("head training (cached features)", rate["best"], "pairs/s", 3 * flops,
                            note=f"{dim}-d features, batch {p['loader']['batch_size']}, FLOPs 3x forward")]}


def row_phase_b_eval(p: dict) -> dict:
    """Evaluation pair scoring: ``score_pairs`` (gathered feature rows, batched) and the
    all-pairs ``score_matrix`` (branch once per patch, pair terms split), cross-checked."""
    import torch

    sim = _similarity(p, 64)
    sim.eval()
    dim = sim.backbone.feature_dim(sim.feature_layer)
    rng = np.random.default_rng(1)
    feats = rng.normal(0, 1, (p["features"], dim)).astype(np.float32)
    i = rng.integers(0, len(feats), p["pairs"])
    j = rng.integers(0, len(feats), p["pairs"])
    t_pairs = _time_calls(lambda: sim.score_pairs(feats, i, j), p["timing"], warmup=1)
    fm = torch.from_numpy(feats[: p["matrix_n"]])

    def matrix() -> Any:
        with torch.no_grad():
            return sim.head.score_matrix(fm)

    t_mat = _time_calls(matrix, p["timing"], warmup=1)
    # the two paths must agree with each other (and the head's own forward)
    k = min(1000, p["pairs"])
    ii, jj = i[:k] % len(fm), j[:k] % len(fm)
    s_pairs = sim.score_pairs(feats[: p["matrix_n"]], ii, jj)
    s_mat = matrix().numpy()[ii, jj]
    diff = float(np.abs(s_pairs - s_mat).max())
    flops = _head_flops(sim.head, dim)
    n_mat = len(fm) ** 2
    r1, r2 = _rate(p["pairs"], t_pairs), _rate(n_mat, t_mat)
    return {"score_pairs": r1, "score_matrix": r2, "max_abs_diff": diff, "flops_forward": flops,
            # no ceiling share: score_pairs runs the branch once per feature row, not per pair,
            # so FLOPs of a pairwise forward would overstate the work (it showed > 100 %)
            "lines": [_line("score_pairs (random pairs, batched)", r1["best"], "pairs/s",
                            note=f"{p['pairs']} pairs of {len(feats)} {dim}-d features; branch once per row; "
                                 f"{r1['best'] * flops / 1e9:.0f} GFLOP/s pairwise-forward equivalent"),
                      _line("score_matrix (all pairs)", r2["best"], "pairs/s",
                            note=f"{len(fm)}x{len(fm)}; max |diff| to score_pairs {diff:.1e}")]}


def row_localize(p: dict) -> dict:
    """Splicing localisation of one large image in graph mode: real backbone features (once
    per patch) + ``SimilarityNet.score_matrix`` for all pairs, via ``camsim.localize``'s
    ``Localizer`` callables; features and pair scoring timed separately."""
    import torch

    from camsim.localize.engine import localize
    from camsim.localize.run import Localizer
    from camsim.models.backbone import count_flops

    P = int(p["patch"])
    sim = _similarity(p, P)
    variant = p.get("variant", "eager")
    if variant not in ("eager", "channels_last", "compile"):
        raise ValueError(f"localize variant: unknown {variant!r}")
    # the product's path: Localizer -> FeaturePass (channels_last / compile as camsim-localize's
    # feature_pass config says); eager = the default layout
    loc = Localizer(sim, channels_last=variant != "eager", compile=variant == "compile")
    h, w = p["image_size"]
    green = texture(h, w, 3)
    extract, compile_s = loc.extract, None
    if variant == "compile":
        t = time.perf_counter()
        with _inductor_cache(p.get("compile_cache", "fresh")):
            extract(np.zeros((1, P, P), np.uint8))
        compile_s = time.perf_counter() - t
    spent = {"features": 0.0, "pairs": 0.0}
    calls = {"features": 0, "pairs": 0}

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args: Any) -> Any:
            t = time.perf_counter()
            out = fn(*args)
            spent[key] += time.perf_counter() - t
            calls[key] += 1
            return out
        return wrapper

    # warm-up on a small crop (code paths, thread pools, scipy) so the timed image is steady-state
    crop = green[: min(h, 3 * P), : min(w, 4 * P)]
    localize(crop, extract, loc.score_matrix, P, mode="graph", batch=loc.batch)
    t = time.perf_counter()
    result = localize(green, timed("features", extract), timed("pairs", loc.score_matrix), P, mode="graph",
                      batch=loc.batch)
    total = time.perf_counter() - t
    n = result.n_decidable
    flops = float(count_flops(sim.backbone, P))
    other = total - spent["features"] - spent["pairs"]
    res = {"seconds": total, "features_s": spent["features"], "pairs_s": spent["pairs"], "other_s": other,
           "patches": len(result.positions), "decidable": n, "pairs": n * n, "image_size": [h, w], "patch": P,
           "stride": result.stride, "batch": loc.feature_pass.batch_size, "variant": variant,
           "compile_s": compile_s, "flops_forward": flops}
    mp = h * w / 1e6
    res["lines"] = [
        _line(f"total, {mp:.2g} MP image, {P} px / stride {result.stride}", total, "s",
              note=f"{n} decidable of {len(result.positions)} patches; graph mode"),
        _line("  feature extraction (once per patch)", spent["features"], "s",
              note=f"{n / spent['features']:.1f} patches/s, {n * flops / spent['features'] / 1e9:.1f} GFLOP/s "
                   f"(batch {loc.feature_pass.batch_size}, {variant})"),
        _line("  pair scoring (score_matrix, all pairs)", spent["pairs"], "s",
              note=f"{n * n} pairs, {n * n / max(spent['pairs'], 1e-9):.3g} pairs/s"),
        _line("  rest (grid, entropy, spectral cut, maps)", other, "s"),
    ]
    if compile_s is not None:
        res["lines"].append(_line("  compile (before, not in total)", compile_s, "s",
                                  note=f"FeaturePass compile (inductor freezing), static batch (padded); "
                                       f"{p.get('compile_cache', 'fresh')} inductor cache"))
    return res


#: row kind -> function(params) -> result dict with "lines"
ROWS: dict[str, Callable[[dict], dict]] = {
    "gemm": row_gemm, "phase_a": row_phase_a, "extract": row_extract, "loader": row_loader,
    "decode": row_decode, "synth": row_synth, "phase_b_train": row_phase_b_train,
    "phase_b_eval": row_phase_b_eval, "localize": row_localize,
}


# --------------------------------------------------------------------------- plan and runner


@dataclass
class Spec:
    """One row of the benchmark: ``name`` shown in the table, ``kind`` a key of :data:`ROWS`."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)


def build_plan(args: argparse.Namespace) -> list[Spec]:
    """The rows a run measures, from the parsed command line (``--only`` applied)."""
    sizes = dict(SMOKE if args.smoke else FULL)
    patch_sizes = list(args.patch_sizes or sizes["patch_sizes"])
    timing = {k: sizes[k] for k in ("min_time", "max_time", "min_reps")}
    batch = int(args.batch or sizes["batch"])
    model_cfg = _model_cfg("model", args.model)
    head_cfg = _model_cfg("similarity", args.head)
    quick = _recipe("quick")
    variants = list(args.variants)
    plan = [Spec("gemm", "gemm", {"n": args.gemm_n or sizes["gemm_n"], "runs": sizes["gemm_runs"]})]
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
    for v in ("eager", "channels_last", "compile"):  # channels_last: what the quick recipe trains with
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
    common = {"model_cfg": model_cfg, "head_cfg": head_cfg, "timing": timing}
    plan.append(Spec("phase_b/train", "phase_b_train", {
        **common, "features": sizes["pb_features"], "pairs": quick["train_pairs"] if not args.smoke else 512,
        "loader": quick["phase_b_loader"], "optimizer": quick["phase_b_optimizer"]}))
    plan.append(Spec("phase_b/eval", "phase_b_eval", {
        **common, "features": sizes["pb_features"], "pairs": sizes["pb_eval_pairs"], "matrix_n": sizes["pb_matrix_n"]}))
    for v in args.localize_variants:
        plan.append(Spec("phase_b/localize" + ("" if v == "channels_last" else f"/{v}"), "localize", {
            **common, "patch": sizes["loc_patch"], "image_size": sizes["loc_size"], "variant": v,
            "compile_cache": args.compile_cache}))
    # the ceiling again at the end: this VM's clock drifts (102-161 GFLOP/s in runs of one day),
    # so the ceiling is the faster of the two and every share is conservative
    plan.append(Spec("gemm/end", "gemm", dict(plan[0].params)))
    if args.only:
        plan = [s for s in plan if any(_matches(s.name, pat) for pat in args.only)]
    if not any(s.kind != "gemm" for s in plan):  # only the ceiling asked for: measure it once
        plan = plan[:1]
    return plan


def _matches(name: str, pattern: str) -> bool:
    """``--only`` patterns: a glob (``phase_a/*/64/*``) or a row-name prefix (``data``)."""
    from fnmatch import fnmatchcase

    return fnmatchcase(name, pattern) or name == pattern or name.startswith(pattern.rstrip("/") + "/")


def _execute(kind: str, params: dict, threads: int | None, in_process: bool) -> dict:
    """Run one row here; returns its result with status, wall time and peak memory."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    reset = _reset_peak_rss() if in_process else True
    rss0 = _status_kb("VmRSS")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t = time.perf_counter()
    try:
        res = ROWS[kind](params)
        res["status"] = "ok"
    except SkipRow as e:
        res = {"status": "skip", "reason": str(e), "lines": []}
    except Exception as e:  # noqa: BLE001 - one failing row must not lose the others; reported
        res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
               "lines": []}
    res["wall_s"] = time.perf_counter() - t
    hwm = _status_kb("VmHWM") if in_process and reset else None
    res["memory"] = {
        "peak_rss_mb": hwm / 1024 if hwm else _maxrss_mb(resource.RUSAGE_SELF),
        "start_rss_mb": rss0 / 1024 if rss0 else None,
        "children_peak_rss_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "method": ("fresh subprocess: ru_maxrss" if not in_process else
                   "in-process: VmHWM after reset" if reset else "in-process: cumulative ru_maxrss (no reset)"),
    }
    res["threads"] = torch.get_num_threads()
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    res["loadavg_1min"] = [load0, load1]  # before / after: above the core count means a busy machine
    return res


def _run_child(spec: Spec, threads: int | None, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"kind": spec.kind, "params": spec.params, "threads": threads}))
        env = {**os.environ, "CAMSIM_QUIET": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "camsim.bench", "--_child", str(job), str(out)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "error", "reason": f"timed out after {timeout:.0f} s", "lines": []}
        if out.is_file():
            return json.loads(out.read_text())
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        return {"status": "error", "reason": f"subprocess exited {proc.returncode}: " + " | ".join(tail), "lines": []}


def run_plan(plan: Sequence[Spec], threads: int | None = None, in_process: bool = False,
             timeout: float = 3600.0, echo: Callable[[str], None] | None = None,
             on_row: Callable[[dict[str, dict]], None] | None = None) -> dict[str, dict]:
    """Run every row (each in a fresh subprocess unless ``in_process``); name -> result.

    ``on_row(results so far)`` is called after each row (main writes a partial JSON).
    """
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="camsim-bench-ref-") as ref_cache:
        for spec in plan:
            if spec.kind == "phase_a":
                spec = Spec(spec.name, spec.kind, {**spec.params, "ref_cache": ref_cache})
            if echo:
                echo(f"[bench] {spec.name} ...")
            res = (_execute(spec.kind, spec.params, threads, True) if in_process
                   else _run_child(spec, threads, timeout))
            res["kind"] = spec.kind
            results[spec.name] = res
            if echo:
                extra = f" ({res.get('reason')})" if res["status"] != "ok" else ""
                echo(f"[bench] {spec.name}: {res['status']}{extra} in {res.get('wall_s', 0):.1f} s")
            if on_row:
                on_row(results)
    return results


# --------------------------------------------------------------------------- report


def _ceiling(results: dict[str, dict]) -> float | None:
    """The GEMM ceiling: the faster of the run's GEMM rows (start and end of the run)."""
    got = [r["gflops"] for r in results.values() if r.get("kind") == "gemm" and r.get("status") == "ok"]
    return max(got) if got else None


def annotate(results: dict[str, dict]) -> None:
    """Add achieved GFLOP/s and share of the GEMM ceiling to every line that has FLOPs."""
    ceiling = _ceiling(results)
    for res in results.values():
        for line in res.get("lines", []):
            if line.get("flops") and line.get("value") is not None and line.get("unit", "").endswith("/s"):
                line["gflops"] = line["value"] * line["flops"] / 1e9
                line["share"] = line["gflops"] / ceiling if ceiling else None


def targets(results: dict[str, dict]) -> list[dict]:
    """The issue's ratios (measured in this run) with pass / miss."""
    out: list[dict] = []
    ceiling = _ceiling(results)

    def add(name: str, value: float | None, goal: str, ok: bool | None, note: str = "") -> None:
        out.append({"target": name, "value": value, "goal": goal, "pass": ok, "note": note})

    for name, res in results.items():
        if res.get("kind") != "phase_a" or res.get("status") != "ok" or res["variant"] == "bf16":
            continue
        if not ceiling:
            continue
        label = f"{name}: {VARIANT_LABEL[res['variant']]}"
        for key, goal in (("inference", TARGETS["inference_share"]), ("training", TARGETS["training_share"])):
            f = res["flops_forward"] * (3 if key == "training" else 1)
            share = res[key]["best"] * f / 1e9 / ceiling
            add(f"{label}, {key} share of GEMM ceiling", share, f">= {goal:.0%}", share >= goal)
    quick = [r for n, r in results.items() if n.startswith("phase_a/quick/") and r.get("status") == "ok"]
    loaders = [r for r in results.values() if r.get("kind") == "loader" and r.get("status") == "ok"]
    if quick and loaders:
        train = max(r["training"]["best"] for r in quick)
        fastest = max(quick, key=lambda r: r["training"]["best"])
        loader = next((r for r in loaders if r["patch"] == fastest["patch"]), None)
        if loader is not None:
            ratio = loader["quick"]["best"] / train
            add(f"loader / quick-recipe training ({fastest['patch']} px)", ratio,
                f">= {TARGETS['loader_ratio']:.0f}x", ratio >= TARGETS["loader_ratio"],
                f"{loader['quick']['best']:.0f} vs {train:.0f} patches/s ({fastest['variant']}, fastest quick variant)")
    for name, res in results.items():
        if res.get("kind") == "localize" and res.get("status") == "ok":
            add(f"{name}: pair scoring < feature extraction", res["pairs_s"] / max(res["features_s"], 1e-12),
                "< 1 (ratio)", res["pairs_s"] < res["features_s"],
                f"{res['pairs_s']:.2f} s vs {res['features_s']:.2f} s")
    dec = results.get("data/decode", {})
    if dec.get("status") == "ok":
        ratio = dec["simplejpeg"]["mp_s"] / dec["pillow"]["mp_s"]
        add("JPEG decode: simplejpeg / Pillow, identical pixels", ratio, "> 1 and identical",
            ratio > 1 and dec["identical"], f"identical: {dec['identical']}")
    for name, res in results.items():
        a = res.get("agreement")
        if a and a["variant"] != "eager":
            goal = f"<= max({a['tolerance']:.0e}, 4x fp32 eager)"
            fwd, fwd32 = a["forward"]["vs_fp64"], a["forward"]["fp32_eager_vs_fp64"]
            add(f"{name}: logits as accurate as fp32 eager", fwd, goal, a["forward_agree"],
                f"error vs fp64; fp32 eager's: {fwd32:.1e}")
            add(f"{name}: gradients as accurate as fp32 eager", a["grads"]["vs_fp64"], goal, a["grads_agree"],
                f"error vs fp64, worst tensor; fp32 eager's: {a['grads']['fp32_eager_vs_fp64']:.1e}")
    return out


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "s":
        return f"{v:.2f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def render(report: dict, console: Any = None) -> None:
    """Print the results table and the targets table (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 180)
    meta = report["meta"]
    table = Table(title=f"camsim bench — {meta['cpu']}, torch {meta['torch']}, {meta['threads']} threads"
                        + (" (SMOKE: tiny sizes, numbers meaningless)" if meta["smoke"] else ""))
    for col, just in (("row", "left"), ("metric", "left"), ("value", "right"), ("unit", "left"),
                      ("GFLOP/s", "right"), ("% ceiling", "right"), ("peak RSS MB", "right"), ("notes", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for name, res in report["rows"].items():
        mem = res.get("memory", {})
        peak = res.get("peak_timed_mb") or mem.get("peak_rss_mb")
        rss = f"{peak:.0f}" if peak else "-"
        if mem.get("children_peak_rss_mb") and res.get("kind") in ("loader", "extract", "synth"):
            rss += f" (+{mem['children_peak_rss_mb']:.0f})"
        if res["status"] != "ok":
            table.add_row(name, res["status"].upper(), "-", "", "", "", rss, res.get("reason", ""))
            continue
        for k, line in enumerate(res["lines"]):
            share = line.get("share")
            table.add_row(name if k == 0 else "", line["metric"], _fmt(line["value"], line["unit"]), line["unit"],
                          _fmt(line.get("gflops")), f"{share:.0%}" if share is not None else "",
                          rss if k == 0 else "", line.get("note", ""))
        table.add_section()
    console.print(table)
    tt = Table(title="targets (issue 9; ratios from this run)")
    for col in ("target", "measured", "goal", "result", "notes"):
        tt.add_column(col, overflow="fold")
    for t in report["targets"]:
        v = t["value"]
        shown = f"{v:.0%}" if "share" in t["target"] else (f"{v:.1e}" if "accurate" in t["target"] else f"{v:.2f}")
        res = "[green]pass[/green]" if t["pass"] else "[red]miss[/red]"
        tt.add_row(t["target"], shown, t["goal"], res, t.get("note", ""))
    console.print(tt)
    console.print(f"[dim]{meta['flops']}. {meta['timing']}. Peak RSS: {meta['memory']}.[/dim]")
    load = meta.get("max_loadavg_1min")
    if load is not None and load > meta["cores"]:
        console.print(f"[yellow]busy machine: 1-min load average up to {load:.1f} on {meta['cores']} cores "
                      "during the run; timings are noisy (see rows' loadavg_1min in the JSON)[/yellow]")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(args: argparse.Namespace, results: dict[str, dict]) -> dict:
    import torch

    threads = next((r["threads"] for r in results.values() if "threads" in r), torch.get_num_threads())
    return {
        "command": "python -m camsim.bench " + " ".join(args.argv), "smoke": bool(args.smoke),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu": _cpu_name(),
        "cores": default_workers(), "threads": threads, "torch": torch.__version__,
        "python": platform.python_version(), "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": bool(torch.cuda.is_available()), "ceiling_gflops": _ceiling(results),
        "flops": FLOP_CONVENTION, "timing": TIMING_CONVENTION,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                           "TORCHINDUCTOR_CACHE_DIR") if k in os.environ},
        "max_loadavg_1min": max((max(r.get("loadavg_1min", [0.0])) for r in results.values()), default=None),
        "memory": ("each row in a fresh subprocess: peak = its ru_maxrss (imports included; "
                   "'+N' = peak of its worker processes)" if not args.in_process else
                   "rows in one process: peak = VmHWM after resetting it before the row"),
    }


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m camsim.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: every row in a few seconds (tests)")
    ap.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON output (default bench.json)")
    ap.add_argument("--only", nargs="+", metavar="ROWS",
                    help="rows to run: globs or prefixes of row names, e.g. gemm 'phase_a/*/64/*' data")
    ap.add_argument("--patch-sizes", nargs="+", type=int, help="Phase A patch sizes (default 64 256; smoke 32)")
    ap.add_argument("--model", default="mislnet", help="conf/model/<name>.yaml for Phase A / B rows (mislnet)")
    ap.add_argument("--head", default="paper", help="conf/similarity/<name>.yaml for Phase B rows (paper)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                    help="Phase A variants (default: all; compile = channels_last + torch.compile)")
    ap.add_argument("--batch", type=int, help="Phase A batch size (default: training 64, inference the feature "
                    "pass's batch, 32 at 64 px / 16 at 256 px; smoke 4; bf16 capped at 16)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads in every row (default: torch's)")
    ap.add_argument("--workers", type=int, help="PatchStore / simulator worker processes (default: all cores)")
    ap.add_argument("--loader-workers", nargs="*", type=int, default=[2],
                    help="extra DataLoader num_workers to try besides the recipe's (default 2)")
    ap.add_argument("--localize-variants", nargs="+", default=["channels_last"],
                    choices=("eager", "channels_last", "compile"),
                    help="feature pass of the localisation row (default channels_last, as camsim-localize; "
                         "compile: + torch.compile with inductor freezing)")
    ap.add_argument("--gemm-n", type=int, help="GEMM size (default 4096; smoke 256)")
    ap.add_argument("--compile-cache", choices=("fresh", "default"),
                    help="inductor cache for compile rows: fresh = cold compile (default), "
                         "default = the user's cache (smoke default)")
    ap.add_argument("--in-process", action="store_true",
                    help="run rows in this process (faster start; peak RSS via VmHWM reset)")
    ap.add_argument("--row-timeout", type=float, default=3600.0, help="seconds per row subprocess")
    ap.add_argument("--quiet", action="store_true", help="no progress lines, no table")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns the report written to ``--out`` (``{meta, rows, targets}``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args._child:
        job = json.loads(Path(args._child[0]).read_text())
        res = _execute(job["kind"], job["params"], job.get("threads"), in_process=False)
        Path(args._child[1]).write_text(json.dumps(res, default=float))
        return res
    args.argv = argv
    if args.compile_cache is None:
        args.compile_cache = "default" if args.smoke else "fresh"
    for name, v in (("--batch", args.batch), ("--threads", args.threads), ("--gemm-n", args.gemm_n)):
        if v is not None and v < 1:
            raise SystemExit(f"{name}: must be a positive integer, got {v}")
    if any(p < 8 for p in args.patch_sizes or []):
        raise SystemExit(f"--patch-sizes: every size must be >= 8, got {args.patch_sizes}")
    try:
        plan = build_plan(args)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not plan:
        raise SystemExit(f"--only {args.only}: matches no row")
    echo = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(results: dict[str, dict], partial: bool) -> dict:
        annotate(results)
        report = {"meta": {**_meta(args, results), "partial": partial}, "rows": results,
                  "targets": targets(results)}
        atomic_write_json(args.out, json.loads(json.dumps(report, default=float)))
        return report

    results = run_plan(plan, args.threads, args.in_process, args.row_timeout, echo,
                       on_row=lambda r: write(r, partial=True))
    report = write(results, partial=False)
    if not args.quiet:
        render(report)
        print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
