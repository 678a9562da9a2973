"""Shared fixtures: composing camsim's config the way its entry points do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from camsim.cli import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
CAMERAS = REPO.parent / "shared" / "data" / "cameras"
SPLICES = REPO.parent / "shared" / "data" / "splices"

os.environ.setdefault("CAMSIM_QUIET", "1")  # no progress bars in test logs
os.environ.setdefault("WANDB_MODE", "offline")


def compose_cfg(overrides: list[str] = (), config_name: str = "config"):
    """The composed config of ``camsim-run <overrides>`` (with Hydra's own node resolved)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a console entry point (``camsim-run`` …) of this venv as a user would."""
    exe = Path(sys.executable).parent / args[0]
    full_env = {**os.environ, "CAMSIM_QUIET": "1", **(env or {})}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they lose a lot."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory to launch from (outputs/ and artefacts land under it)."""
    return tmp_path


@pytest.fixture
def cameras() -> Path:
    if not CAMERAS.is_dir():
        pytest.skip(f"real photo set not present at {CAMERAS}")
    return CAMERAS


@pytest.fixture
def real_jpeg(tmp_path: Path, cameras: Path) -> Path:
    """A copy of one real camera JPEG (safe to corrupt)."""
    src = sorted((cameras / "NIKON_D70").glob("*.jpg"))[0]
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    return dst


#: a backbone small enough to train in seconds: constrained 3x5x5 -> 2 conv blocks -> fc 16, 16
#: (32 px: 28 -> 14 -> 7 -> 7 -> 3)
TINY = {
    "_target_": "camsim.models.backbone.Backbone",
    "constrained": {"kernels": 3, "kernel_size": 5, "padding": "valid"},
    "blocks": [
        {"out_channels": 8, "kernel_size": 3, "stride": 2, "padding": "same", "pool": {"type": "max", "kernel": 2}},
        {"out_channels": 8, "kernel_size": 3, "padding": "same", "pool": {"type": "avg", "kernel": 2}},
    ],
    "fc": [16, 16],
}
