"""Benchmarks against the hardware's limit (issue 9): ``python -m camsim.bench``.

The command line: options → plan → rows (``runner``) → report written to JSON after every
row (``meta.partial`` until the run ends) and printed as tables. See :mod:`camsim.bench`
for the conventions and ``benchmarks/README.md`` for every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from camsim.artefacts import atomic_write_json
from camsim.bench.ceiling import bandwidth_gbs, ceiling_gflops
from camsim.bench.common import VARIANTS
from camsim.bench.plan import build_plan
from camsim.bench.report import annotate, render, targets
from camsim.bench.runner import run_plan
from camsim.machine import tune_malloc
from camsim.progress import default_workers

__all__ = ["main"]

FLOP_CONVENTION = ("FLOPs = torch FlopCounterMode (2 per multiply-add; conv + matmul only) of one "
                   "forward pass per item; bytes = every layer's inputs + outputs + parameters of that "
                   "pass (count_bytes, unfused); a training step counts 3x forward for both; "
                   "% roofline = achieved / min(GEMM ceiling, triad bandwidth x FLOPs/bytes)")
TIMING_CONVENTION = ("throughput of the fastest timed call (best of several, after warm-up); "
                     "median in the JSON")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(args: argparse.Namespace, results: dict[str, dict]) -> dict:
    threads = next((r["threads"] for r in results.values() if "threads" in r), torch.get_num_threads())
    return {
        "command": "python -m camsim.bench " + " ".join(args.argv), "smoke": bool(args.smoke),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu": _cpu_name(),
        "cores": default_workers(), "threads": threads, "torch": torch.__version__,
        "python": platform.python_version(), "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": bool(torch.cuda.is_available()), "ceiling_gflops": ceiling_gflops(results),
        "bandwidth_gbs": bandwidth_gbs(results),
        "flops": FLOP_CONVENTION, "timing": TIMING_CONVENTION,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                           "TORCHINDUCTOR_CACHE_DIR", "MALLOC_MMAP_THRESHOLD_",
                                           "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_") if k in os.environ},
        "malloc": args.malloc,
        "max_loadavg_1min": max((max(r.get("loadavg_1min", [0.0])) for r in results.values()), default=None),
        "memory": ("each row in a fresh subprocess: peak = its ru_maxrss (imports included; "
                   "'+N' = peak of its worker processes)" if not args.in_process else
                   "rows in one process: peak = VmHWM after resetting it before the row"),
    }


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
                    help="Phase A variants (default: all; composed = channels_last + the constrained layer and "
                         "conv1 trained as one convolution, the recipe's; compile = channels_last + torch.compile)")
    ap.add_argument("--batch", type=int, help="Phase A batch size (default: training 64, inference the feature "
                    "pass's batch, 128 at 64 px / 16 at 256 px; smoke 4; bf16 capped at 16)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads in every row (default: torch's)")
    ap.add_argument("--workers", type=int, help="PatchStore / simulator worker processes (default: all cores)")
    ap.add_argument("--loader-workers", nargs="*", type=int, default=[2],
                    help="extra DataLoader num_workers to try besides the recipe's (default 2)")
    ap.add_argument("--localize-variants", nargs="+", default=["channels_last"],
                    choices=("eager", "channels_last", "compile"),
                    help="feature pass of the localisation row (default channels_last, as camsim-localize; "
                         "compile: + torch.compile with inductor freezing)")
    ap.add_argument("--localize-ckpt", type=Path, metavar="CKPT",
                    help="Phase B checkpoint for the camsim-localize photo row (default: an untrained network "
                         "of the quick recipe: the same compute)")
    ap.add_argument("--localize-folder", type=Path, metavar="DIR",
                    help="photos for the camsim-localize photo row (default: 2 random-textured 12-MP JPEGs, q90)")
    ap.add_argument("--gemm-n", type=int, help="GEMM size (default 4096; smoke 256)")
    ap.add_argument("--compile-cache", choices=("fresh", "default"),
                    help="inductor cache for compile rows: fresh = cold compile (default), "
                         "default = the user's cache (smoke default)")
    ap.add_argument("--in-process", action="store_true",
                    help="run rows in this process (faster start; peak RSS via VmHWM reset)")
    ap.add_argument("--row-timeout", type=float, default=3600.0, help="seconds per row subprocess")
    ap.add_argument("--quiet", action="store_true", help="no progress lines, no table")
    return ap


def _check(args: argparse.Namespace) -> None:
    """Reject values no row could run with (``SystemExit`` naming the option)."""
    for name, v in (("--batch", args.batch), ("--threads", args.threads), ("--gemm-n", args.gemm_n)):
        if v is not None and v < 1:
            raise SystemExit(f"{name}: must be a positive integer, got {v}")
    if any(p < 8 for p in args.patch_sizes or []):
        raise SystemExit(f"--patch-sizes: every size must be >= 8, got {args.patch_sizes}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns the report written to ``--out`` (``{meta, rows, targets}``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    args.malloc = tune_malloc()  # as every camsim job does; the rows' subprocesses inherit it
    if args.compile_cache is None:
        args.compile_cache = "default" if args.smoke else "fresh"
    _check(args)
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
