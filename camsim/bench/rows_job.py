"""The ``job/quick`` row: the main job as a user starts it (``camsim-run``, the quick recipe; smoke:
``debug=fast``) from an empty artefact directory in a fresh process, timed from outside — issue
21's "the quick main job ≤ 2.5 minutes" measured in the same run as the GEMM ceiling."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from camsim.bench.common import run_timed, table_line

__all__ = ["row_job"]


def row_job(p: dict) -> dict:
    """``python -m camsim.cli.run <overrides>`` with fresh ``paths.artefact_dir`` and
    ``hydra.run.dir`` (nothing cached: the simulator renders, both phases train); the stages'
    seconds come from its ``run.json``, start-up and exit = wall time − their sum.
    ``others_cores``: CPU the rest of the machine used meanwhile (as the photo row's)."""
    overrides = [str(o) for o in p.get("overrides", [])]
    with tempfile.TemporaryDirectory(prefix="camsim-bench-job-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "camsim.cli.run", *overrides, f"paths.artefact_dir={Path(tmp) / 'artefacts'}",
               f"hydra.run.dir={run_dir}"]
        wall, job_cpu, others = run_timed("camsim-run", cmd, {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")})
        timings = json.loads((run_dir / "run.json").read_text())["timings_s"]
        overall = json.loads((run_dir / "metrics.json").read_text())["eval"]["acc"]["overall"]
    order = ("data", "Phase A", "Phase B", "fine-tun", "evaluation")  # the job's order; others after
    stages = sorted(timings.items(), key=lambda kv: next((i for i, w in enumerate(order) if w in kv[0]), len(order)))
    # fine-tuning runs inside Phase B's stage (its seconds are in both): counted once
    startup = wall - sum(seconds for name, seconds in stages if "fine-tun" not in name)
    what = " ".join(overrides) or "the quick recipe"
    # job_s, not wall_s (the runner's, for the whole row); stages a list: JSON keeps its order
    res: dict[str, Any] = {"job_s": wall, "stages": [list(st) for st in stages], "startup_s": startup,
                           "cpu_s": job_cpu, "others_cores": others, "overrides": overrides, "overall": overall}
    res["lines"] = [
        table_line("main job from an empty directory, end to end", wall, "s",
                   note=f"camsim-run {what}; CPU {job_cpu:.0f} s ({job_cpu / wall:.1f} cores); overall {overall:.1%}"),
        table_line("  start-up and exit (imports, config, report)", startup, "s"),
        *[table_line(f"  {name}", seconds, "s", note=f"{seconds / wall:.0%} of the job") for name, seconds in stages],
        table_line("other processes' CPU use during the run", others, "cores",
                   note="~0 on a quiet machine: only then is the job's time a quiet machine's"),
    ]
    return res
