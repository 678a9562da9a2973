"""Progress bars and parallel maps for long data work (rendering, patch extraction)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
R = TypeVar("R")


def progress_bar(disable: bool = False) -> Progress:
    """The one rich progress bar style used for data work (quiet when CAMSIM_QUIET=1 or ``disable``),
    on stderr beside the log, so that a command's output on stdout (a table, markdown) stays clean."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disable or os.environ.get("CAMSIM_QUIET") == "1",
        transient=False,
    )


#: where a container's CPU quota lives: cgroup v2 ("<quota> <period>" or "max <period>"), v1
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cpu_quota() -> int | None:
    """The CPUs a container's quota allows (rounded up), or ``None`` without one (a VM, bare
    metal, macOS): Docker's ``--cpus=4`` on a 64-core host leaves 64 cores in the affinity mask."""
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = (Path(f).read_text().strip() for f in CGROUP_V1_QUOTA)
        except (OSError, ValueError):
            return None
    try:
        q, per = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return max(1, -(-q // per)) if q > 0 and per > 0 else None


def default_workers() -> int:
    """The cores this process may run on: its affinity (all CPUs where that is unknown, e.g.
    macOS), at most its container's CPU quota (:func:`cpu_quota`)."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    quota = cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


#: Linux prctl option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1
#: how often a worker checks that its owner is still alive where prctl is not available
_OWNER_POLL_S = 1.0


def _owner_gone(owner: int, parent: int) -> bool:
    """The process that owns the pool (``owner``) has died: this worker was re-parented
    (its parent ``parent`` is gone) or ``owner`` no longer exists."""
    if os.getppid() != parent:
        return True
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _watch_owner(owner: int, parent: int) -> None:
    while not _owner_gone(owner, parent):
        time.sleep(_OWNER_POLL_S)
    os._exit(1)


def worker_init(owner: int) -> None:
    """Initializer of every pool worker: die with the process that started the pool.

    Without it, a pool owner killed with SIGKILL (OOM killer, ``kill -9``, a cluster's
    time limit) left its workers running (hundreds of MB each) for ever. On Linux the
    kernel signals the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere
    a daemon thread also polls the owner every second (covering forkserver/spawn, whose
    workers are not the owner's children). Ctrl-C is left to the owner, which stops the pool;
    its SIGTERM unwinds a running task first (:func:`_on_terminate`).
    """
    parent = os.getppid()
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _on_terminate)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if _owner_gone(owner, parent):  # the owner died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_owner, args=(owner, parent), name="camsim-owner-watch", daemon=True).start()


class _Terminated(BaseException):
    """Raised in a pool worker's task when the owner stops the pool (SIGTERM, :func:`_stop_pool`)."""


#: a pool worker is running a task (:func:`_run_task`), which SIGTERM unwinds rather than cuts
_in_task = False


def _on_terminate(signum: int, frame: Any) -> None:
    """SIGTERM in a pool worker: unwind a running task, so that its atomic writes remove their
    temp files and folders (a Ctrl-C of a render left a half-written ``.<image>.tmp-…`` behind
    when the stop cut a write); an idle worker exits at once."""
    if _in_task:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop (the pool's own, as it breaks) must not cut the unwinding
        raise _Terminated
    os._exit(128 + signum)


def _run_task(fn: Callable[[T], R], x: T) -> R:
    """``fn(x)`` in a pool worker; exits the worker once a SIGTERM has unwound it."""
    global _in_task
    try:
        try:
            _in_task = True
            return fn(x)
        finally:
            _in_task = False
    except _Terminated:  # also one raised as the task ends
        os._exit(128 + signal.SIGTERM)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now (an exception or Ctrl-C in the owner): drop queued work and end
    the running workers instead of waiting for every queued item to finish."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def parallel_iter(fn: Callable[[T], R], items: Sequence[T], desc: str, workers: int | None = None,
                  chunksize: int = 1) -> Iterator[R]:
    """Yield ``fn(x)`` for each item, in order, computed in worker processes, with a progress bar.

    ``workers=0`` or 1 runs in-process (easier to debug, and used by tests). Results are
    consumed as they arrive, so the caller can write them out without holding them all.
    """
    workers = default_workers() if workers is None else workers
    with progress_bar() as bar:
        task = bar.add_task(desc, total=len(items))
        if workers <= 1 or len(items) <= 1:
            for x in items:
                yield fn(x)
                bar.advance(task)
        else:
            pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=worker_init,
                                       initargs=(os.getpid(),))
            try:
                for r in pool.map(partial(_run_task, fn), items, chunksize=chunksize):
                    yield r
                    bar.advance(task)
            except BaseException:  # an error, Ctrl-C, or the consumer stopped early: stop now
                _stop_pool(pool)
                raise
            pool.shutdown(wait=True)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], desc: str, workers: int | None = None,
                 chunksize: int = 1) -> list[R]:
    """``[fn(x) for x in items]`` through :func:`parallel_iter`."""
    return list(parallel_iter(fn, items, desc, workers, chunksize))


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(desc, total=total if total is not None else (len(items) if hasattr(items, "__len__") else None))
        for x in items:
            yield x
            bar.advance(task)


__all__: list[Any] = ["progress_bar", "parallel_iter", "parallel_map", "track", "default_workers", "worker_init"]
