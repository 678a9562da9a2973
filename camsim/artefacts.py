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
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: NaN / inf (a rate over zero pairs) are written as null
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy / torch arrays and scalars
        return _plain(obj.tolist())
    return obj


def content_hash(*parts: Any, length: int = 12) -> str:
    """Stable hex digest of JSON-able parts (dicts, lists, DictConfigs, paths, numbers)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
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


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp directory next to ``final``; rename it to ``final`` on success.

    On an exception the temp directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(_plain(obj), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n").encode())


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
        with atomic_dir(final) as tmp:
            build(tmp)
            atomic_write_json(tmp / "key.json", key)
    return final
