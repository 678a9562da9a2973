"""Thin Hydra entry points: compose config → instantiate → run a pipeline stage."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

# Before torch loads its OpenMP runtime: threads that wait passively instead of spinning.
# On a quiet machine this costs little; on a busy one (other jobs, a sweep's parallel jobs)
# spinning threads made small ops 10-20x slower in camsim's benchmarks.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

import camsim.config  # noqa: F401  (registers the structured configs)

# noise from Lightning's own code under torch 2.13, nothing a user can act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

#: the config tree: <repo>/conf (camsim is installed in editable mode, see README)
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

log = logging.getLogger("camsim")


def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """``@hydra.main`` on ``conf/<config_name>.yaml``, turning camsim's input errors
    (ValueError, FileNotFoundError) into one clear line and exit status 2."""
    if not Path(CONF_DIR, f"{config_name}.yaml").is_file():
        raise SystemExit(f"camsim: config tree not found at {CONF_DIR}; install camsim from its "
                         "repository with `pip install -e .` (see README)")

    def wrap(task: Callable[[DictConfig], object]) -> Callable[[], None]:
        @functools.wraps(task)
        def job(cfg: DictConfig) -> object:
            try:
                return task(cfg)
            except (ValueError, FileNotFoundError, KeyError) as err:
                log.error("%s", err)
                print(f"camsim: error: {err}", file=sys.stderr)
                raise SystemExit(2) from err

        return hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(job)

    return wrap
