"""Phase B rows (docs/method.md, "Learning Phase B", "Splicing demonstration"): head training from
cached features, evaluation pair scoring, and graph-mode localisation of one large image, all
on an untrained ``ForensicSimilarity`` built from the ``--model`` backbone and ``--head``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from camsim.bench.common import NUM_CLASSES, inductor_cache, table_line, texture, throughput, time_calls
from camsim.data.datamodules import PairDataset, _loader
from camsim.lit.phase_b import ForensicSimilarity
from camsim.localize.engine import localize
from camsim.localize.run import Localizer
from camsim.bench.ceiling import count_flops

__all__ = ["row_phase_b_train", "row_phase_b_eval", "row_localize"]


def _similarity(p: dict, patch: int) -> Any:
    """An untrained ForensicSimilarity (backbone ``p['model_cfg']``, head ``p['head_cfg']``, features
    of ``p['feature_layer']``)."""
    torch.manual_seed(0)
    phase_a = {"backbone": p["model_cfg"], "class_names": [f"model{k:02d}" for k in range(NUM_CLASSES)],
               "patch_size": patch}
    return ForensicSimilarity(phase_a, p["head_cfg"], p["feature_layer"])


def _head_flops(head: Any, dim: int) -> float:
    f = torch.zeros(1, dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        head(f, f)
    return float(counter.get_total_flops())


def row_phase_b_train(p: dict) -> dict:
    """Phase B head training from cached features: ``PairDataset`` over an [N, d] feature
    matrix + ``_loader`` (recipe batch size), BCE on logits, the recipe's optimiser."""
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

    times = time_calls(epoch, p["timing"], warmup=1)
    rate = throughput(len(ds), times)
    flops = _head_flops(sim.head, dim)
    return {"pairs_per_epoch": len(ds), "feature_dim": dim, "training": rate, "flops_forward": flops,
            "lines": [table_line("head training (cached features)", rate["best"], "pairs/s", 3 * flops,
                                 note=f"{dim}-d features, batch {p['loader']['batch_size']}, FLOPs 3x forward")]}


def row_phase_b_eval(p: dict) -> dict:
    """Evaluation pair scoring: ``score_pairs`` (gathered feature rows, batched) and the
    all-pairs ``score_matrix`` (branch once per patch, pair terms split), cross-checked."""
    sim = _similarity(p, 64)
    sim.eval()
    dim = sim.backbone.feature_dim(sim.feature_layer)
    rng = np.random.default_rng(1)
    feats = rng.normal(0, 1, (p["features"], dim)).astype(np.float32)
    i = rng.integers(0, len(feats), p["pairs"])
    j = rng.integers(0, len(feats), p["pairs"])
    t_pairs = time_calls(lambda: sim.score_pairs(feats, i, j), p["timing"], warmup=1)
    fm = torch.from_numpy(feats[: p["matrix_n"]])

    def matrix() -> Any:
        with torch.no_grad():
            return sim.head.score_matrix(fm)

    t_mat = time_calls(matrix, p["timing"], warmup=1)
    # the two paths must agree with each other (and the head's own forward)
    k = min(1000, p["pairs"])
    ii, jj = i[:k] % len(fm), j[:k] % len(fm)
    s_pairs = sim.score_pairs(feats[: p["matrix_n"]], ii, jj)
    s_mat = matrix().numpy()[ii, jj]
    diff = float(np.abs(s_pairs - s_mat).max())
    flops = _head_flops(sim.head, dim)
    n_mat = len(fm) ** 2
    r1, r2 = throughput(p["pairs"], t_pairs), throughput(n_mat, t_mat)
    return {"score_pairs": r1, "score_matrix": r2, "max_abs_diff": diff, "flops_forward": flops,
            # no ceiling share: score_pairs runs the branch once per feature row, not per pair,
            # so FLOPs of a pairwise forward would overstate the work (it showed > 100 %)
            "lines": [table_line("score_pairs (random pairs, batched)", r1["best"], "pairs/s",
                                 note=f"{p['pairs']} pairs of {len(feats)} {dim}-d features; branch once per row; "
                                      f"{r1['best'] * flops / 1e9:.0f} GFLOP/s pairwise-forward equivalent"),
                      table_line("score_matrix (all pairs)", r2["best"], "pairs/s",
                                 note=f"{len(fm)}x{len(fm)}; max |diff| to score_pairs {diff:.1e}")]}


def row_localize(p: dict) -> dict:
    """Splicing localisation of one large image in graph mode: real backbone features (once
    per patch) + ``SimilarityNet.score_matrix`` for all pairs, via ``camsim.localize``'s
    ``Localizer`` callables; features and pair scoring timed separately."""
    P = int(p["patch"])
    sim = _similarity(p, P)
    variant = p.get("variant", "eager")
    if variant not in ("eager", "channels_last", "compile"):
        raise ValueError(f"localize variant: unknown {variant!r}")
    # the product's path: Localizer -> FeaturePass (channels_last / compile as camsim-localize's
    # feature_pass config says; eager = the default layout), pairs by the compiled kernel as for a
    # folder (compile_scoring; compiled in the warm-up below)
    loc = Localizer(sim, channels_last=variant != "eager", compile=variant == "compile", compile_scoring=True)
    h, w = p["image_size"]
    green = texture(h, w, 3)
    extract, compile_s = loc.extract, None
    if variant == "compile":
        t = time.perf_counter()
        with inductor_cache(p.get("compile_cache", "fresh")):
            extract(np.zeros((1, P, P), np.uint8))
        compile_s = time.perf_counter() - t
    spent = {"features": 0.0, "pairs": 0.0}
    calls = {"features": 0, "pairs": 0}
    scored = [0]  # pairs the engine scored: all of them up to max_graph_nodes, landmark blocks above

    def timed(key: str, fn: Callable) -> Callable:
        def wrapper(*args: Any) -> Any:
            t = time.perf_counter()
            out = fn(*args)
            spent[key] += time.perf_counter() - t
            calls[key] += 1
            if key == "pairs":
                scored[0] += int(np.asarray(out).size)
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
           "patches": len(result.positions), "decidable": n, "pairs": scored[0], "image_size": [h, w], "patch": P,
           "stride": result.stride, "batch": loc.feature_pass.batch_size, "variant": variant,
           "compile_s": compile_s, "flops_forward": flops}
    mp = h * w / 1e6
    res["lines"] = [
        table_line(f"total, {mp:.2g} MP image, {P} px / stride {result.stride}", total, "s",
                   note=f"{n} decidable of {len(result.positions)} patches; graph mode"),
        table_line("  feature extraction (once per patch)", spent["features"], "s",
                   note=f"{n / spent['features']:.1f} patches/s, {n * flops / spent['features'] / 1e9:.1f} GFLOP/s "
                        f"(batch {loc.feature_pass.batch_size}, {variant})"),
        table_line("  pair scoring (score_matrix)", spent["pairs"], "s",
                   note=f"{scored[0]} pairs scored, {scored[0] / max(spent['pairs'], 1e-9):.3g} pairs/s "
                        f"(compiled kernel: {'yes' if loc.sim.head.fusable() else 'no, eager'})"),
        table_line("  rest (grid, entropy, spectral cut, maps)", other, "s"),
    ]
    if compile_s is not None:
        res["lines"].append(table_line("  compile (before, not in total)", compile_s, "s",
                                       note=f"FeaturePass compile (inductor freezing), static batch (padded); "
                                            f"{p.get('compile_cache', 'fresh')} inductor cache"))
    return res
