"""Dependency-free helpers under everything: plain Python copies of config nodes, a file's sha256.

:func:`to_plain` lives here, below :mod:`camsim.config`, so that the networks
(:mod:`camsim.models`) can take config nodes without importing Hydra: a network exported with
``camsim-export`` loads with torch alone (:mod:`camsim.models.portable`). ``camsim.config``
re-exports it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def to_plain(node: Any) -> Any:
    """A resolved plain-python copy of a config node, or of nested mappings and sequences
    holding them (for hparams, hashes, JSON and constructors): dicts and lists all the way down."""
    # an OmegaConf node exists only once omegaconf is imported: no import of it here
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is not None and isinstance(node, (omegaconf.DictConfig, omegaconf.ListConfig)):
        return omegaconf.OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        return [to_plain(v) for v in node]
    return node


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
