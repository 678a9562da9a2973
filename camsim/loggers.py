"""The run's loggers (CSV, W&B, TensorBoard): building them, sending pictures, tables and
metrics to whichever a run has, and closing them so every job of a sweep is its own run.

Below the Lightning modules and the evaluation in the stack: both hand their results to
these functions; neither imports the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib
import numpy as np
from omegaconf import DictConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from camsim.config import to_plain  # noqa: E402
from camsim.plots import plot_confusion  # noqa: E402

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- building


def run_tags(cfg: DictConfig, feature_layer: str) -> list[str]:
    """Tags that line runs up in W&B: recipe tags, split composition, model, feature layer."""
    def size(v: Any) -> Any:
        return v if isinstance(v, (int, str)) else len(v)

    sp = cfg.split
    choices = _hydra_choices()
    return [*map(str, cfg.get("tags") or []), f"A{size(sp.a)}-B{size(sp.b)}-C{size(sp.c)}",
            f"split_seed={sp.seed}", f"model={choices.get('model', '?')}", f"layer={feature_layer}",
            f"patch={cfg.patches.size}"]


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _wandb_names() -> dict:
    """W&B ``group`` = the sweep (multirun dir), ``name`` = this job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if multirun else "single-runs"
    return {"group": group, "name": hc.job.override_dirname or hc.job.name}


def build_loggers(cfg: DictConfig, feature_layer: str) -> list:
    """The configured loggers; W&B gets tags, a group per sweep and a name per job unless set."""
    os.environ.setdefault("WANDB_MODE", "offline")  # online only when the user asks
    loggers = []
    for _, lg in (cfg.get("logger") or {}).items():
        if isinstance(lg, DictConfig) and "_target_" in lg:
            extra = {}
            if lg._target_.endswith("WandbLogger"):
                names = {**_wandb_names(), "tags": run_tags(cfg, feature_layer)}
                extra = {k: v for k, v in names.items() if lg.get(k) is None}
            loggers.append(hydra.utils.instantiate(lg, _convert_="all", **extra))
    return loggers


@contextlib.contextmanager
def job_loggers(cfg: DictConfig, feature_layer: str) -> Iterator[list]:
    """The job's loggers (:func:`build_loggers`) for the length of the ``with`` block: the
    resolved config logged first, every logger closed at the end with the job's outcome
    (:func:`finish_loggers`) — every camsim job (training, pairs, transfer, splicing) the same way."""
    loggers = build_loggers(cfg, feature_layer)
    succeeded = False
    try:
        for lg in loggers:
            lg.log_hyperparams(to_plain(cfg))
        yield loggers
        succeeded = True
    finally:
        finish_loggers(loggers, succeeded)


def finish_loggers(loggers: Sequence[Any], succeeded: bool = True) -> None:
    """Close each logger so every job of a multirun is its own, complete run (W&B: finish), with
    the job's outcome (a failed job is "failed" in W&B, not "finished"). Each logger is closed
    even when another one's close fails (that failure is logged): an open W&B run would take the
    next job's metrics."""
    status = "success" if succeeded else "failed"
    for lg in loggers:
        try:
            lg.finalize(status)
        except Exception as err:  # noqa: BLE001 - the others must still close
            log.error("logger %s failed to close (%s: %s); its last figures may be missing",
                      type(lg).__name__, type(err).__name__, err)
        finally:
            if type(lg).__name__ == "WandbLogger":
                import wandb

                try:
                    wandb.finish(exit_code=0 if succeeded else 1)
                except Exception as err:  # noqa: BLE001 - nor may W&B's own close stop the others
                    log.error("W&B run failed to finish (%s: %s)", type(err).__name__, err)


# --------------------------------------------------------------------------- sending


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


def log_images(loggers: Sequence[Any], images: Mapping[str, Path]) -> None:
    """Log PNG files (matrix, ROC, ...) to W&B / TensorBoard; files stay in the run dir."""
    for lg in loggers:
        name = type(lg).__name__
        if name == "WandbLogger":
            import wandb

            lg.experiment.log({k: wandb.Image(str(p)) for k, p in images.items()})
        elif name == "TensorBoardLogger":
            from PIL import Image

            for k, p in images.items():
                lg.experiment.add_image(k, np.asarray(Image.open(p).convert("RGB")), dataformats="HWC")


def log_table(loggers: Sequence[Any], key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table for W&B (``wandb.Table``); other loggers keep it in metrics.json / report.md."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            lg.experiment.log({key: wandb.Table(columns=columns, data=rows)})


def log_evaluation(loggers: Sequence[Any], flat: Mapping[str, Any], out_dir: Path,
                   table: tuple[str, list[str], list[list[Any]]] | None = None) -> None:
    """An evaluation's scalar metrics, the run dir's PNG pictures and an optional table
    ``(key, columns, rows)`` to the run's loggers."""
    scalars = {k: float(v) for k, v in flat.items()
               if "/pairs/" not in k and isinstance(v, (int, float)) and np.isfinite(v)}
    for lg in loggers:
        lg.log_metrics(scalars)
    log_images(loggers, {f"eval/{p.stem}": p for p in sorted(Path(out_dir).glob("*.png"))})
    if table is not None:
        log_table(loggers, *table)


class ConfusionFigures(L.Callback):
    """Phase A's confusion matrix as a picture at the end of each validation and test
    (the module keeps the numbers in ``last_confusion``; one picture, not one per rank).
    Loggers that keep a history (W&B, TensorBoard) get every validation's; loggers that keep
    one file per key (CSV) only the last validation's, at the end of training — each epoch's
    picture would overwrite the one before (drawing it cost ~0.3 s an epoch)."""

    _HISTORY = ("WandbLogger", "TensorBoardLogger")

    def __init__(self) -> None:
        self._pending: dict | None = None

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, conf: dict | None, loggers: Sequence[Any]) -> None:
        if conf is None or trainer.sanity_checking or not trainer.is_global_zero or not loggers:
            return
        fig = plot_confusion(conf["matrix"], pl_module.class_names, None)
        log_figure(loggers, f"phase_a/{conf['stage']}/confusion", fig, trainer.global_step)

    def _split(self, trainer: L.Trainer) -> tuple[list, list]:
        history = [lg for lg in trainer.loggers if type(lg).__name__ in self._HISTORY]
        return history, [lg for lg in trainer.loggers if type(lg).__name__ not in self._HISTORY]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conf = getattr(pl_module, "last_confusion", None)
        history, files = self._split(trainer)
        self._log(trainer, pl_module, conf, history)
        if files and not trainer.sanity_checking:
            self._pending = conf

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, self._pending, self._split(trainer)[1])
        self._pending = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, getattr(pl_module, "last_confusion", None), trainer.loggers)
