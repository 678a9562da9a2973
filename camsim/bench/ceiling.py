"""The yardsticks of every share: the fp32 GEMM ceiling (row ``gemm``) and the memory bandwidth
(row ``stream``, a STREAM-like triad), measured and read back; together the roofline bound
min(ceiling, bandwidth × arithmetic intensity) of a row whose FLOPs and bytes are known."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from camsim.bench.common import table_line

__all__ = ["row_gemm", "row_stream", "ceiling_gflops", "bandwidth_gbs", "roofline_gflops", "count_bytes", "count_flops"]


def row_gemm(p: dict) -> dict:
    """fp32 GEMM ceiling: best of ``runs`` timed ``n x n @ n x n`` products (2 n^3 FLOPs)."""
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
    return {"lines": [table_line(f"fp32 GEMM {n}x{n}, {torch.get_num_threads()} threads", best, "GFLOP/s")],
            "gflops": best, "gflops_median": flops / statistics.median(times) / 1e9, "n": n,
            "threads": torch.get_num_threads(), "runs": len(times)}


def ceiling_gflops(results: dict[str, dict]) -> float | None:
    """The GEMM ceiling: the faster of the run's GEMM rows (start and end of the run)."""
    got = [r["gflops"] for r in results.values() if r.get("kind") == "gemm" and r.get("status") == "ok"]
    return max(got) if got else None


def row_stream(p: dict) -> dict:
    """Memory bandwidth: best of ``runs`` timed triads ``a = b + s·c`` on fp32 vectors of
    ``n`` elements each (far larger than the caches), with the run's threads; 12 bytes per
    element move (read b and c, write a)."""
    n = int(p["n"])
    g = torch.Generator().manual_seed(0)
    b, c = torch.randn(n, generator=g), torch.randn(n, generator=g)
    a = torch.empty(n)
    torch.add(b, c, alpha=3.0, out=a)  # warm-up: pages touched, threads up
    times = []
    for _ in range(int(p["runs"])):
        t = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        times.append(time.perf_counter() - t)
    moved = 3.0 * 4 * n
    best = moved / min(times) / 1e9
    return {"lines": [table_line(f"memory bandwidth, triad of {n * 4 / 2**20:.0f} MiB vectors", best, "GB/s")],
            "gbs": best, "gbs_median": moved / statistics.median(times) / 1e9, "n": n, "runs": len(times)}


def bandwidth_gbs(results: dict[str, dict]) -> float | None:
    """The memory bandwidth: the faster of the run's stream rows."""
    got = [r["gbs"] for r in results.values() if r.get("kind") == "stream" and r.get("status") == "ok"]
    return max(got) if got else None


def roofline_gflops(flops: float, nbytes: float, ceiling: float | None, bandwidth: float | None) -> float | None:
    """The roofline bound in GFLOP/s of work with ``flops`` per ``nbytes`` moved:
    min(ceiling, bandwidth × intensity); None without both yardsticks."""
    if not ceiling or not bandwidth or not flops or not nbytes:
        return None
    return min(ceiling, bandwidth * flops / nbytes)


def count_flops(model: nn.Module, patch_size: int, in_channels: int | None = None) -> int:
    """Forward FLOPs of ``model`` on one ``[1, C, P, P]`` patch (torch FlopCounterMode).

    Counts the matmul/conv FLOPs (2 per multiply-add) that FlopCounterMode tracks;
    pooling, batch norm and activations are not counted. Runs in eval mode under
    ``no_grad`` (batch-norm statistics untouched) and restores the training flag.
    """
    from torch.utils.flop_counter import FlopCounterMode

    patch_size = int(patch_size)
    c = in_channels if in_channels is not None else int(getattr(model, "in_channels", 1))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, c, patch_size, patch_size, dtype=torch.uint8, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_bytes(model: nn.Module, patch_size: int, in_channels: int | None = None, batch: int = 1) -> float:
    """Bytes per patch that a forward pass of ``model`` on a batch of ``batch`` ``[C, P, P]``
    patches moves, layer by layer: for every leaf module, the tensors it reads and writes
    (inputs + outputs, at their dtypes) per patch, plus its parameters and buffers read once per
    batch (so ``1 / batch`` of them per patch) — the memory traffic of an unfused pass, the
    roofline's bandwidth side as :func:`count_flops` is its compute side. Fused or cached
    execution moves less.
    """
    patch_size = int(patch_size)
    c = in_channels if in_channels is not None else int(getattr(model, "in_channels", 1))
    total = [0.0]
    batch = max(1, int(batch))

    def nbytes(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, (list, tuple)):
            return sum(nbytes(o) for o in obj)
        if isinstance(obj, dict):
            return sum(nbytes(o) for o in obj.values())
        return 0

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        total[0] += nbytes(inputs) + nbytes(output) + sum(t.numel() * t.element_size() for t in own) / batch

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, patch_size, patch_size, dtype=torch.uint8, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return float(total[0])
