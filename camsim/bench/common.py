"""What every benchmark row shares: timing, result lines, memory readings, synthetic images, a
command run in its own process. Light on purpose (numpy and the stdlib-only camsim.machine): every
row's process imports it before the row starts, so it counts in each row's start-up memory."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camsim.machine import busy_cpu_seconds

__all__ = ["NUM_CLASSES", "VARIANTS", "SkipRow", "texture", "texture_rgb", "time_calls", "throughput",
           "table_line", "status_kb", "maxrss_mb", "reset_peak_rss", "inductor_cache", "run_timed"]

#: classes of the Phase A classifiers the rows build (and of their synthetic labels)
NUM_CLASSES = 10
#: Phase A variants: eager, channels_last, composed (= channels_last + the constrained layer and conv1
#: trained as one convolution, ``phase_a.compose_first_layers``, + each block's batch norm and max
#: pooling trained as one step, ``phase_a.fuse_batch_norm_pool``: what Phase A trains with; the others
#: train them apart), compile (= channels_last + torch.compile), bf16 autocast
VARIANTS = ("eager", "channels_last", "composed", "compile", "bf16")


class SkipRow(Exception):
    """A row that cannot run here (e.g. the simulator is not importable); the reason is shown."""


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A random-textured uint8 ``[H, W]`` image: blocky noise at three scales plus per-pixel
    Gaussian noise, mid-grey centred; ≥ 99.9 % of its 32-px patches have entropy > 4 nats
    (a few touch clipped pixels)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 128.0, np.float32)
    for scale, amp in ((64, 24.0), (16, 16.0), (4, 15.0)):
        small = rng.normal(0.0, amp, (height // scale + 1, width // scale + 1)).astype(np.float32)
        img += np.repeat(np.repeat(small, scale, axis=0), scale, axis=1)[:height, :width]
    img += rng.normal(0.0, 12.0, (height, width)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def texture_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a shared :func:`texture` plus a little per-channel noise."""
    base = texture(height, width, seed).astype(np.int16)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        out[..., c] = np.clip(base + rng.integers(-6, 7, (height, width), dtype=np.int16), 0, 255)
    return out


def time_calls(fn: Callable[[], Any], cfg: dict, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls: at least ``min_reps`` calls and
    ``min_time`` seconds, stopping early once ``max_time`` is spent (with ≥ 2 calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        spent = time.perf_counter() - start
        if len(times) >= cfg["min_reps"] and spent >= cfg["min_time"]:
            break
        if spent >= cfg["max_time"] and len(times) >= min(2, cfg["min_reps"]):
            break
    return times


def throughput(items: float, times: Sequence[float]) -> dict:
    """``{"best", "median"}`` items per second of per-call ``times``."""
    return {"best": items / min(times), "median": items / statistics.median(times), "calls": len(times)}


def table_line(metric: str, value: float | None, unit: str, flops: float | None = None, **extra: Any) -> dict:
    """One display line of a row: ``value`` in ``unit``; ``flops`` per item gives GFLOP/s."""
    return {"metric": metric, "value": value, "unit": unit, "flops": flops, **extra}


def status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(*who: int) -> float:
    """User + system CPU-seconds so far of ``who`` (``resource.RUSAGE_SELF`` / ``RUSAGE_CHILDREN``), summed."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, who))


def run_timed(name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float, float | None]:
    """Run the camsim command ``name`` (``cmd``, its output captured) in a fresh process, timed from outside:
    ``(wall seconds, its CPU seconds, others_cores)`` — ``others_cores`` the CPU the rest of the
    machine used meanwhile (busy CPU-seconds from ``/proc/stat`` minus the command's, per second;
    None without ``/proc/stat``). ``env``: added to this process's environment, with
    ``CAMSIM_QUIET=1``. RuntimeError with the command's last lines if it fails."""
    busy, kids, t = busy_cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, "CAMSIM_QUIET": "1", **(env or {})})
    wall = time.perf_counter() - t
    busy_end, own = busy_cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN) - kids
    others = None if busy is None or busy_end is None else max(0.0, busy_end - busy - own) / wall
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{name} exited {proc.returncode}: {tail}")
    return wall, own, others


def maxrss_mb(who: int) -> float:
    """``ru_maxrss`` in MB (KiB on Linux, bytes on macOS)."""
    return resource.getrusage(who).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ≥ 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def inductor_cache(mode: str) -> Iterator[None]:
    """``fresh``: an empty temporary inductor cache (cold compile, as on a new machine);
    ``default``: the user's cache (warm after the first run)."""
    if mode == "default":
        yield
        return
    from torch._inductor import utils  # deferred: inductor is heavy and only compile rows need it

    fresh = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache
    with fresh():
        yield
