"""Phase A rows (docs/method.md, "Learning Phase A"): inference and training patches/s of a backbone
per variant, and whether each fast path is as accurate as fp32 eager (against fp64)."""

from __future__ import annotations

import contextlib
import copy
import io
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camsim.artefacts import atomic_write_bytes, content_hash
from camsim.bench.common import (NUM_CLASSES, VARIANTS, inductor_cache, maxrss_mb, status_kb, table_line,
                                 throughput, time_calls)
from camsim.lit.phase_a import CameraClassifier, build_backbone
from camsim.bench.ceiling import count_bytes, count_flops
from camsim.models.constrained import project_constrained_layers_
from camsim.models.feature_pass import FeaturePass, feature_batch_size

__all__ = ["AGREE_RTOL", "row_phase_a", "compare_variant", "agreement", "reference_outputs", "make_classifier",
           "random_batch"]

#: error floor (relative to fp64) below which a fast path always "agrees"; see ``agreement``
AGREE_RTOL = {"eager": 1e-4, "channels_last": 1e-4, "composed": 1e-4, "compile": 1e-4, "bf16": 5e-2}


def _rel_diff(a: Any, b: Any, norm: bool = False) -> float:
    """max |a − b| / max |b| (``norm``: ‖a − b‖ / ‖b‖); 0 for empty tensors."""
    a, b = a.detach().float(), b.detach().float()
    if not b.numel():
        return 0.0
    if norm:
        return float((a - b).norm()) / max(float(b.norm()), 1e-12)
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def _outputs(model: Any, params: Sequence[Any], x: Any, y: Any, amp: Callable) -> dict:
    """Eval-mode logits, train-mode logits and the gradients of one cross-entropy backward
    pass (float64 copies). Eval first, so both see the same batch-norm running statistics."""
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
    if variant == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def random_batch(batch: int, patch: int, seed: int = 0) -> tuple[Any, Any]:
    """Uniformly random uint8 patches ``[B, 1, P, P]`` and class labels (tensors)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 256, (batch, 1, patch, patch), dtype=np.uint8))
    return x, torch.from_numpy(rng.integers(0, NUM_CLASSES, batch))


def make_classifier(model_cfg: dict, patch: int, variant: str, seed: int = 0) -> Any:
    """A seeded ``CameraClassifier`` of :data:`NUM_CLASSES` classes set up as ``variant`` says."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; choose one of {list(VARIANTS)}")
    torch.manual_seed(seed)
    return CameraClassifier(model_cfg, [f"model{k:02d}" for k in range(NUM_CLASSES)], patch,
                            channels_last=variant in ("channels_last", "composed", "compile"),
                            compile=variant == "compile", compose_first_layers=variant == "composed",
                            fuse_batch_norm_pool=variant == "composed")


def compare_variant(model_cfg: dict, patch: int, variant: str, batch: int = 4, seed: int = 0) -> dict:
    """A Phase A fast path (channels_last | compile | bf16 | eager) vs the eager reference
    with the same weights and batch: see :func:`agreement` for the criterion."""
    clf = make_classifier(model_cfg, patch, variant, seed)
    x, y = random_batch(batch, patch, seed)
    state = copy.deepcopy(clf.backbone.state_dict())
    fast = _outputs(clf, list(clf.backbone.parameters()), x, y, _amp(variant))
    return agreement(fast, reference_outputs(model_cfg, patch, state, x, y), variant)


def _cached_references(p: dict, init: dict, x: Any, y: Any) -> dict:
    """fp32 / fp64 references at the initial weights ``init``, shared through ``p['ref_cache']``
    by the rows of a run with the same model, size and batch."""
    P, B = int(p["patch"]), int(p["batch"])
    state = {k[len("backbone."):]: v for k, v in init.items() if k.startswith("backbone.")}
    key = content_hash(p["model_cfg"], P, B, sorted((k, float(v.double().sum())) for k, v in state.items()))
    cache = Path(p["ref_cache"]) / f"ref-{key}.pt" if p.get("ref_cache") else None
    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=True)
    refs = reference_outputs(p["model_cfg"], P, state, x, y)
    if cache is not None:  # whole or not at all: a row killed while writing leaves no truncated file
        buf = io.BytesIO()
        torch.save(refs, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return refs


def _warm_compile_s(p: dict, B_inf: int, x_inf: np.ndarray, x: Any, y: Any) -> tuple[float, float]:
    """First inference / training call of the same compile after dynamo's in-memory caches are
    dropped: what a later run pays once the on-disk inductor cache holds this model."""
    import torch._dynamo  # deferred: heavy, and only the compile variant needs it

    torch._dynamo.reset()
    again = make_classifier(p["model_cfg"], int(p["patch"]), "compile")
    t = time.perf_counter()
    FeaturePass(again.backbone, ["logits"], B_inf, compile=True)(x_inf)
    warm_inf = time.perf_counter() - t
    again.train()
    t = time.perf_counter()
    F.cross_entropy(again(x), y).backward()
    return warm_inf, time.perf_counter() - t


def row_phase_a(p: dict) -> dict:
    """Phase A inference and training patches/s of one backbone, patch size and variant.

    Inference: eval mode, ``no_grad``, ``CameraClassifier.forward`` (logits, as counted by
    ``count_flops``). Training: forward, cross-entropy, backward, SGD step, constrained-layer
    projection — the work of ``training_step`` + ``optimizer_step`` without logging. After
    the timing (and the peak-memory reading), the outputs at the initial weights are checked
    against fp32 / fp64 eager references (cached per run for rows sharing model, size, batch).
    """
    variant, P = p["variant"], int(p["patch"])
    B = int(p["batch"])
    amp = _amp(variant)
    x, y = random_batch(B, P)
    # inference = the product's frozen-backbone feature pass (FeaturePass: batch by pixel budget,
    # channels_last / compile with inductor freezing as the variant says); bf16 = autocast eager
    B_inf = int(p.get("infer_batch") or feature_batch_size(P))
    x_inf = random_batch(B_inf, P, seed=1)[0]
    res: dict[str, Any] = {"model": p["model_name"], "patch": P, "batch": B, "infer_batch": B_inf, "variant": variant}
    with inductor_cache(p.get("compile_cache", "fresh") if variant == "compile" else "default"):
        clf = make_classifier(p["model_cfg"], P, variant)
        init = copy.deepcopy(clf.state_dict())
        flops = float(count_flops(clf.backbone, P))
        # weights are read once per batch: inference and training batches differ
        nbytes = {"inference": count_bytes(clf.backbone, P, batch=B_inf), "training": count_bytes(clf.backbone, P, batch=B)}
        opt = torch.optim.SGD(clf.backbone.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        fp = None if variant == "bf16" else FeaturePass(
            clf.backbone, ["logits"], B_inf, channels_last=variant in ("channels_last", "composed", "compile"),
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
        t_inf = time_calls(infer, p["timing"], warmup=0)
        clf.train()
        t = time.perf_counter()
        train_step()
        first["train"] = time.perf_counter() - t
        t_tr = time_calls(train_step, p["timing"], warmup=0)
        res["first_call_s"] = first
        hwm = status_kb("VmHWM")  # peak so far: before the reference models below are built
        res["peak_timed_mb"] = hwm / 1024 if hwm else maxrss_mb(resource.RUSAGE_SELF)

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
        res["agreement"] = agreement(fast, _cached_references(p, init, x, y), variant)

        if variant == "compile":
            warm_inf, warm_tr = _warm_compile_s(p, B_inf, x_inf_np, x, y)
            res["compile_s"] = {"infer_cold": first["infer"] - min(t_inf), "train_cold": first["train"] - min(t_tr),
                                "infer_warm": warm_inf - min(t_inf), "train_warm": warm_tr - min(t_tr),
                                "cache": p.get("compile_cache", "fresh")}
    inf, tr = throughput(B_inf, t_inf), throughput(B, t_tr)
    res.update(flops_forward=flops, bytes_forward=nbytes["inference"], bytes_forward_training=nbytes["training"],
               inference=inf, training=tr)
    res["lines"] = _lines(res, flops, nbytes, B, B_inf)
    return res


def _lines(res: dict, flops: float, nbytes: dict[str, float], B: int, B_inf: int) -> list[dict]:
    """The table lines of a Phase A row: patches/s with the agreement verdicts, compile time."""
    a, variant = res["agreement"], res["variant"]
    fwd, fwd32 = a["forward"]["vs_fp64"], a["forward"]["fp32_eager_vs_fp64"]
    if variant == "eager":
        n_inf = f"logits vs fp64 {fwd32:.1e}"
        n_tr = f"grads vs fp64 {a['grads']['fp32_eager_vs_fp64']:.1e}"
    else:
        n_inf = f"logits vs fp64 {fwd:.1e} (eager {fwd32:.1e}): {'agree' if a['forward_agree'] else 'DIFFER'}"
        n_tr = (f"grads vs fp64 {a['grads']['vs_fp64']:.1e} (eager {a['grads']['fp32_eager_vs_fp64']:.1e}): "
                f"{'agree' if a['grads_agree'] else 'DIFFER'}")
    lines = [table_line("inference", res["inference"]["best"], "patches/s", flops, bytes=nbytes["inference"],
                        note=f"batch {B_inf}; {n_inf}"),
             table_line("training", res["training"]["best"], "patches/s", 3 * flops, bytes=3 * nbytes["training"],
                        note=f"batch {B}, FLOPs and bytes 3x fwd; {n_tr}")]
    if "compile_s" in res:
        c = res["compile_s"]
        lines.append(table_line("compile time (paid once)", c["infer_cold"] + c["train_cold"], "s",
                                note=f"cold: infer {c['infer_cold']:.1f} s + train {c['train_cold']:.1f} s; "
                                     f"warm cache: {c['infer_warm'] + c['train_warm']:.1f} s"))
    return lines
