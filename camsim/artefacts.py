"""Cached artefacts: content hashes, atomic directories and cross-process locks.

Every cached artefact (rendered catalogue, patch set, Phase A/B checkpoints, features)
lives in ``<artefact_dir>/<kind>-<hash>/`` where the hash covers only the settings that
determine it. Writers build it in a temporary sibling and rename it into place, so a
concurrent sweep job or an interrupted run never sees half an artefact.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _json_safe(obj: Any) -> Any:
    """JSON-able form of a hash part or metrics: containers, paths as text, NaN/inf as null."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: NaN / inf (a rate over zero pairs) are written as null
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy / torch arrays and scalars
        return _json_safe(obj.tolist())
    return obj


def content_hash(*parts: Any, length: int = 12) -> str:
    """Stable hex digest of JSON-able parts (dicts, lists, DictConfigs, paths, numbers)."""
    blob = json.dumps([_json_safe(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_identity(path: Path) -> list:
    """What identifies a file's content cheaply for cache keys: path, size, mtime."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (flock) on ``path``; blocks until it is free."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(artefact: Path) -> Path:
    """Where the lock of an artefact lives: ``<artefact_dir>/.locks/<name>.lock``."""
    artefact = Path(artefact)
    return artefact.parent / ".locks" / f"{artefact.name}.lock"


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def honour_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it: tempfile's
    helpers create 0600 files and 0700 folders whatever the umask, which kept a colleague
    (or the shared artefact cache's second account) from reading reports and artefacts."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


#: temp folders are named ``.<final name>.tmp-<host>-<pid>-<random>`` so that a later
#: run can tell a dead writer's leftovers (killed with SIGKILL, power loss) from a live one
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-)?[^.]*$")
#: leftovers of another host (or of an older camsim, whose names carry no pid) are removed
#: only by the holder of the artefact's lock and only when older than this
STALE_AGE_S = 6 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname().split(".")[0])[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_stale(entry: Path, locked: bool, now: float) -> bool:
    m = _TMP_RE.match(entry.name)
    if m is None:
        return False
    if m["pid"] is not None and m["host"] == _host():
        return not _pid_alive(int(m["pid"]))
    if not locked:
        return False
    try:
        return now - entry.lstat().st_mtime > STALE_AGE_S
    except FileNotFoundError:
        return False


def clean_stale_temps(final: Path, locked: bool = False) -> list[Path]:
    """Remove the temp folders/files ``.<final.name>.tmp-*`` left by writers that died.

    A temp of a process of this host that is gone is always removed; with ``locked=True``
    (the caller holds the artefact's lock, so no live writer can be building it) also one
    of another host or without an owner, once older than :data:`STALE_AGE_S`.
    Returns what was removed.
    """
    final = Path(final)
    removed = []
    now = time.time()
    prefix = f".{final.name}.tmp-"
    with contextlib.suppress(FileNotFoundError):
        for entry in final.parent.iterdir():
            if entry.name.startswith(prefix) and _is_stale(entry, locked, now):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                removed.append(entry)
    return removed


def clean_artefact_dir(root: Path) -> list[Path]:
    """Start-of-run housekeeping of an artefact folder: temp leftovers of dead processes
    of this host, and empty ``<name>.partial`` folders (a phase that failed before its
    first checkpoint) whose lock nobody holds. Returns what was removed."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") and ".tmp-" in entry.name and _is_stale(entry, False, now):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif entry.name.endswith(".partial") and entry.is_dir() and not any(entry.iterdir()):
            final = entry.with_name(entry.name[: -len(".partial")])
            with try_file_lock(lock_path(final)) as got:
                if got:
                    with contextlib.suppress(OSError):  # not empty any more: keep it
                        entry.rmdir()
                        removed.append(entry)
                        entry.with_name(f".{entry.name}.key.json").unlink(missing_ok=True)  # its key (phases)
    return removed


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """Like :func:`file_lock` but never waits: yields True holding the lock, False if taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def named(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` — a write that fails for want of space (``ENOSPC`` from ``write``)
    names no file, and the user must know which disk is full."""
    return type(err)(err.errno, err.strerror or str(err), str(path))


@contextlib.contextmanager
def atomic_dir(final: Path, locked: bool = False) -> Iterator[Path]:
    """Yield a fresh temp directory next to ``final``; rename it to ``final`` on success.

    On an exception the temp directory is removed and ``final`` is left untouched; temp
    directories that dead writers left behind (:func:`clean_stale_temps`; ``locked``: the
    caller holds ``final``'s lock) are removed first. The folder gets the umask's mode.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final, locked=locked)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{_host()}-{os.getpid()}-", dir=final.parent))
    try:
        honour_umask(tmp, directory=True)
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and not err.filename:
            raise named(err, final) from err
        raise
    if final.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and an atomic rename (mode as the umask gives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{_host()}-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        honour_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not err.filename:
            raise named(err, path) from err
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n").encode())


def cached_dir(root: Path, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
    """Return ``root/<kind>-<hash(key)>``, building it once with ``build(tmpdir)``.

    Safe under concurrent callers: one builds (holding a lock), the others wait and reuse.
    The key is saved beside the artefact as ``key.json`` so a user can see what it holds.
    """
    final = Path(root) / f"{kind}-{content_hash(key)}"
    if final.exists():
        return final
    with file_lock(lock_path(final)):
        if final.exists():
            return final
        with atomic_dir(final, locked=True) as tmp:
            build(tmp)
            atomic_write_json(tmp / "key.json", key)
    return final
