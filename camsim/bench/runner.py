"""Running the plan: every row in a fresh process (``python -m camsim.bench.runner JOB OUT``)
or, with ``--in-process``, here; each result gets its status, wall time and peak memory."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from camsim.bench.common import SkipRow, maxrss_mb, reset_peak_rss, status_kb

if TYPE_CHECKING:
    from camsim.bench.plan import Spec

__all__ = ["ROWS", "row_function", "execute", "run_plan"]

#: row kind -> "module:function(params) -> result dict with 'lines'". The row's module is
#: imported by the row's own process when the row starts (see ``row_function``), so that
#: process's peak memory holds what that row needs, not Lightning and the simulator for all.
ROWS: dict[str, str] = {
    "gemm": "camsim.bench.ceiling:row_gemm", "stream": "camsim.bench.ceiling:row_stream",
    "phase_a": "camsim.bench.rows_model:row_phase_a",
    "extract": "camsim.bench.rows_data:row_extract", "loader": "camsim.bench.rows_data:row_loader",
    "decode": "camsim.bench.rows_data:row_decode", "synth": "camsim.bench.synth:row_synth",
    "phase_b_train": "camsim.bench.rows_similarity:row_phase_b_train",
    "phase_b_eval": "camsim.bench.rows_similarity:row_phase_b_eval",
    "localize": "camsim.bench.rows_similarity:row_localize",
    "localize_photo": "camsim.bench.rows_localize:row_localize_photo",
    "job": "camsim.bench.rows_job:row_job",
}
#: kinds whose module may be unimportable here (shown as SKIP with the reason): what they need
OPTIONAL = {"synth": "camsim.synth"}


def row_function(kind: str) -> Callable[[dict], dict]:
    """The function measuring rows of ``kind`` (its module imported now)."""
    module, name = ROWS[kind].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:
        if kind in OPTIONAL:
            raise SkipRow(f"{OPTIONAL[kind]} not importable ({type(e).__name__}: {e})") from e
        raise


def _loadavg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def execute(kind: str, params: dict, threads: int | None, in_process: bool) -> dict:
    """Run one row here; returns its result with status, wall time and peak memory."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(int(threads))  # the rows that run camsim in a child process
    reset = reset_peak_rss() if in_process else True
    rss0 = status_kb("VmRSS")
    load0 = _loadavg()
    t = time.perf_counter()
    try:
        res = row_function(kind)(params)
        res["status"] = "ok"
    except SkipRow as e:
        res = {"status": "skip", "reason": str(e), "lines": []}
    except Exception as e:  # noqa: BLE001 - one failing row must not lose the others; reported
        res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
               "lines": []}
    res["wall_s"] = time.perf_counter() - t
    hwm = status_kb("VmHWM") if in_process and reset else None
    res["memory"] = {
        "peak_rss_mb": hwm / 1024 if hwm else maxrss_mb(resource.RUSAGE_SELF),
        "start_rss_mb": rss0 / 1024 if rss0 else None,
        "children_peak_rss_mb": maxrss_mb(resource.RUSAGE_CHILDREN),
        "method": ("fresh subprocess: ru_maxrss" if not in_process else
                   "in-process: VmHWM after reset" if reset else "in-process: cumulative ru_maxrss (no reset)"),
    }
    res["threads"] = torch.get_num_threads()
    res["loadavg_1min"] = [load0, _loadavg()]  # before / after: above the core count means a busy machine
    return res


def _run_child(spec: Spec, threads: int | None, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"kind": spec.kind, "params": spec.params, "threads": threads}))
        env = {**os.environ, "CAMSIM_QUIET": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "camsim.bench.runner", str(job), str(out)],
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
                spec = dataclasses.replace(spec, params={**spec.params, "ref_cache": ref_cache})
            if echo:
                echo(f"[bench] {spec.name} ...")
            res = (execute(spec.kind, spec.params, threads, True) if in_process
                   else _run_child(spec, threads, timeout))
            res["kind"] = spec.kind
            results[spec.name] = res
            if echo:
                extra = f" ({res.get('reason')})" if res["status"] != "ok" else ""
                echo(f"[bench] {spec.name}: {res['status']}{extra} in {res.get('wall_s', 0):.1f} s")
            if on_row:
                on_row(results)
    return results


def _child(job_path: str, out_path: str) -> None:
    """A row's own process: run the job written by ``_run_child``, write its result."""
    job = json.loads(Path(job_path).read_text())
    res = execute(job["kind"], job["params"], job.get("threads"), in_process=False)
    Path(out_path).write_text(json.dumps(res, default=float))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m camsim.bench.runner JOB.json RESULT.json (a row of python -m camsim.bench)")
    _child(sys.argv[1], sys.argv[2])
