"""What else the machine is doing: other processes' use of this process's CPUs (``/proc/stat``);
and how glibc's malloc keeps the large, short-lived buffers of a training step (:func:`tune_malloc`).

On a small machine one other busy process takes a share of what the learning phases and the
feature pass get, and it decides how OpenMP threads should wait between operations
(:func:`camsim.cli.choose_omp_wait_policy`; README, "Performance"). Linux only: elsewhere the
functions answer ``None``. Nothing here imports torch — the CLI asks before torch loads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
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


#: glibc malloc settings of a camsim job (README, "Performance", "Whole-job figures"): buffers up
#: to 32 MiB come from the heap instead of fresh ``mmap`` pages, and freed memory stays for the next
#: step (up to 1 GiB at the heap's top) — a step's activations and gradients (7–30 MB each) are then
#: not page-faulted in, zeroed by the kernel, and handed back, batch after batch
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_TOP_PAD_": 256 << 20}
_MALLOPT_PARAM = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}


def tune_malloc(environ: dict | None = None) -> str:
    """Apply :data:`MALLOC_SETTINGS` to this process (``mallopt``) and put them in ``environ`` for
    the processes it starts (simulator workers, data loaders), unless the user set any of them
    (theirs win). glibc only; elsewhere nothing changes. Returns the sentence the job logs."""
    env = os.environ if environ is None else environ
    mine = [f"{k}={env[k]}" for k in MALLOC_SETTINGS if k in env]
    if mine:
        return f"malloc: {' '.join(mine)} (set by you)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "malloc: the C library's own settings (not glibc)"
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return "malloc: the C library's own settings (mallopt not found)"
    for key, value in MALLOC_SETTINGS.items():
        if mallopt(_MALLOPT_PARAM[key], value) != 1:
            return f"malloc: the C library's own settings ({key}={value} refused)"
        env[key] = str(value)
    return ("malloc: a step's large buffers stay in the heap between batches ("
            + " ".join(f"{k}={v}" for k, v in MALLOC_SETTINGS.items()) + "; set any of them to choose yourself)")
