"""What else the machine is doing: other processes' use of this process's CPUs (``/proc/stat``);
how glibc's malloc keeps the large, short-lived buffers of a training step (:func:`tune_malloc`);
and numpy's and scipy's OpenBLAS held to one thread where they run between torch's operations
(:func:`single_blas_thread`).

On a small machine one other busy process takes a share of what the learning phases and the
feature pass get, and it decides how OpenMP threads should wait between operations
(:func:`camsim.cli.choose_omp_wait_policy`; docs/performance.md, "How torch's threads wait"). Linux only: elsewhere the
functions answer ``None``. Nothing here imports torch — the CLI asks before torch loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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


#: glibc malloc settings of a camsim job (docs/performance.md, "Whole-job figures"): buffers up
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


@functools.cache
def _openblas_thread_setters() -> tuple[Any, ...]:
    """``openblas_set_num_threads_local`` of the OpenBLAS copies that numpy's and scipy's wheels
    ship (``numpy.libs/``, ``scipy.libs/``); empty elsewhere (other
    BLAS builds, older OpenBLAS): :func:`single_blas_thread` then changes nothing."""
    import numpy as np
    import scipy

    setters = []
    for pkg in (np, scipy):
        for path in sorted((Path(pkg.__file__).parent.parent / f"{pkg.__name__}.libs").glob("*openblas*.so*")):
            try:
                fn = ctypes.CDLL(str(path)).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            setters.append(fn)
    return tuple(setters)


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """numpy's and scipy's OpenBLAS run one thread in the calling thread for the block: where
    small BLAS calls alternate with torch's work, their second thread only competes with torch's
    threads for the same cores. Used by the localisation graph and the difficulty check's
    logistic fits (camsim.eval.difficulty: L-BFGS's own BLAS calls between torch's products).

    The graph's BLAS calls are matrix-vector products on ≤ 2048 × 2048 (the Nyström extension,
    ARPACK's matvecs): memory-bound, and on a 2-core machine shared with other work each call
    waited for the second OpenBLAS thread (one 2048 × 2048 product 8.8 ms with two threads, 1.4 ms
    with one), whose spinning afterwards also slowed the pair scoring between the calls: "graph +
    maps" of a 12-MP photo varied 1.0–3.9 s (median 1.74 s against 1.10 s with one thread, pair
    scoring 0.62 s against 0.32 s, alternated in one process). A matrix-vector product's outputs
    are the same dot products (bitwise); LAPACK's
    ``eigh`` (≤ 1024 nodes) and ARPACK may round the last bit differently with another thread
    count (λ₂ within 1e-16; the cut the same: tests/test_localize_speed_paths.py) — as the
    results already did between machines with different core counts."""
    setters = _openblas_thread_setters()
    previous = [fn(1) for fn in setters]
    try:
        yield
    finally:
        for fn, n in zip(setters, previous):
            fn(n)
