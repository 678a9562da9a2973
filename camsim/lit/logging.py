"""Sending pictures and tables to whichever loggers a run has (W&B, TensorBoard, CSV)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


def log_figure(loggers: Sequence[Any], key: str, fig: Any, step: int) -> None:
    """Log a matplotlib figure: W&B image, TensorBoard figure; loggers that keep files
    (CSV) get ``<log_dir>/<key with / as _>.png``. Closes the figure."""
    try:
        for lg in loggers:
            name = type(lg).__name__
            if name == "WandbLogger":
                import wandb

                lg.experiment.log({key: wandb.Image(fig), "trainer/global_step": step})
            elif name == "TensorBoardLogger":
                lg.experiment.add_figure(key, fig, global_step=step, close=False)
            elif getattr(lg, "log_dir", None):
                out = Path(lg.log_dir) / (key.replace("/", "_") + ".png")
                out.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(out, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def log_images(loggers: Sequence[Any], images: dict[str, Path]) -> None:
    """Log PNG files (matrix, ROC, ...) to W&B / TensorBoard; files stay in the run dir."""
    for lg in loggers:
        name = type(lg).__name__
        if name == "WandbLogger":
            import wandb

            lg.experiment.log({k: wandb.Image(str(p)) for k, p in images.items()})
        elif name == "TensorBoardLogger":
            import numpy as np
            from PIL import Image

            for k, p in images.items():
                lg.experiment.add_image(k, np.asarray(Image.open(p).convert("RGB")), dataformats="HWC")


def log_table(loggers: Sequence[Any], key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table for W&B (``wandb.Table``); other loggers keep it in metrics.json / report.md."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            lg.experiment.log({key: wandb.Table(columns=columns, data=rows)})
