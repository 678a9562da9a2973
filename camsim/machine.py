"""What else the machine is doing: other processes' use of this process's CPUs (``/proc/stat``).

On a small machine one other busy process takes a share of what the learning phases and the
feature pass get, and it decides how OpenMP threads should wait between operations
(:func:`camsim.cli.choose_omp_wait_policy`; README, "Performance"). Linux only: elsewhere the
functions answer ``None``. Nothing here imports torch — the CLI asks before torch loads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

#: /proc/stat columns that count as busy: user, nice, system, irq, softirq, steal (the
#: hypervisor's other guests); idle and iowait do not
_BUSY = (0, 1, 2, 5, 6, 7)


def busy_cpu_seconds(cpus: Iterable[int] | None = None) -> float | None:
    """CPU-seconds the machine has been busy since boot: all CPUs (``/proc/stat``'s first line),
    or only the CPUs numbered in ``cpus``; None without ``/proc/stat``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        if cpus is None:
            rows = [lines[0].split()]
        else:
            wanted = {f"cpu{c}" for c in cpus}
            rows = [ln.split() for ln in lines if ln.split(maxsplit=1)[0] in wanted]
            if not rows:
                return None
        ticks = sum(int(row[1 + i]) for row in rows for i in _BUSY)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def others_busy_cores(window_s: float = 0.15) -> float | None:
    """How many of this process's CPUs (its affinity) other processes keep busy, measured over
    ``window_s`` seconds while this process sleeps: busy CPU-seconds there minus this
    process's own, per second. None where ``/proc/stat`` or the affinity is unknown."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    start, own, t = busy_cpu_seconds(cpus), time.process_time(), time.perf_counter()
    time.sleep(window_s)
    end = busy_cpu_seconds(cpus)
    if start is None or end is None:
        return None
    return max(0.0, (end - start) - (time.process_time() - own)) / (time.perf_counter() - t)
