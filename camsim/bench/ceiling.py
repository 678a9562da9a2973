"""The yardstick of every share: the fp32 GEMM ceiling, measured (row ``gemm``) and read back."""

from __future__ import annotations

import statistics
import time

import torch

from camsim.bench.common import table_line

__all__ = ["row_gemm", "ceiling_gflops"]


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
