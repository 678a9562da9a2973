"""Progress bars and parallel maps for long data work (rendering, patch extraction)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
R = TypeVar("R")


def progress_bar(disable: bool = False) -> Progress:
    """The one rich progress bar style used for data work (quiet when CAMSIM_QUIET=1 or ``disable``)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disable or os.environ.get("CAMSIM_QUIET") == "1",
        transient=False,
    )


def default_workers() -> int:
    """The cores this process may run on (all CPUs where affinity is unknown, e.g. macOS)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


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
            with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
                for r in pool.map(fn, items, chunksize=chunksize):
                    yield r
                    bar.advance(task)


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


__all__: list[Any] = ["progress_bar", "parallel_iter", "parallel_map", "track", "default_workers"]
