"""Learning Phase A: the camera-model classifier on set A (docs/method.md, "Learning Phase A").

The backbone's constrained layer is projected back onto its constraint after every
optimiser step (:meth:`CameraClassifier.optimizer_step`) — so it holds under gradient
accumulation (no step, no change) and DDP (every rank takes the same step).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from camsim.config import to_plain
from camsim.lit.checkpoints import load_checkpoint
from camsim.models.constrained import project_constrained_layers_


def build_backbone(backbone: dict, num_classes: int, patch_size: int) -> torch.nn.Module:
    """Instantiate a backbone from its ``model`` config (a ``_target_`` dict)."""
    return hydra.utils.instantiate(backbone, num_classes=num_classes, patch_size=patch_size, _convert_="all")


def log_train_step(module: L.LightningModule, key: str, batch_idx: int, loss: torch.Tensor, mean: MeanMetric,
                   acc: Metric, preds: torch.Tensor, target: torch.Tensor, acc_bar: bool) -> None:
    """A training step's loss and accuracy, accumulated into ``mean`` / ``acc`` every step; the
    step's loss logged (``<key>/loss_step``, progress bar) only on the steps whose metrics the
    loggers write (``trainer.log_every_n_steps``), the epoch's means (``<key>/loss_epoch``, weighted
    by batch size, and ``<key>/acc``) from the epoch's last batch — the keys and values that
    ``self.log(on_step=True, on_epoch=True)`` every step gave, at a tenth of its cost: each
    ``self.log`` call costs ~0.4 ms, with a metric object ~0.75 ms (Lightning's result collection)."""
    mean.update(loss.detach(), len(target))
    acc.update(preds, target)
    trainer = module._trainer  # None outside a fit (self.log would only warn there)
    if trainer is None:
        return
    every = trainer.log_every_n_steps
    if every and (module.global_step + 1) % every == 0:
        module.log(f"{key}/loss_step", loss, prog_bar=True, on_step=True, on_epoch=False)
    last = (batch_idx + 1 >= trainer.num_training_batches or not math.isfinite(trainer.num_training_batches)
            or 0 < trainer.max_steps <= module.global_step + 1)  # the epoch's last batch, or the fit's
    if last:  # Lightning computes and resets them at the epoch's end
        module.log(f"{key}/loss_epoch", mean, prog_bar=True, on_step=False, on_epoch=True)
        module.log(f"{key}/acc", acc, prog_bar=acc_bar, on_step=False, on_epoch=True)


class CameraClassifier(L.LightningModule):
    """Constrained-conv backbone + softmax over the camera models of set A.

    Everything needed to rebuild it (backbone config, class names, patch size) is saved in
    the checkpoint's hyper-parameters, so ``CameraClassifier.load_from_checkpoint(path)``
    needs no Hydra config. Logs ``phase_a/{train,val,test}/{loss,acc}`` and per-class accuracy;
    keeps the last confusion matrix in ``last_confusion``.
    """

    def __init__(self, backbone: dict, class_names: Sequence[str], patch_size: int,
                 optimizer: dict | None = None, scheduler: dict | None = None,
                 channels_last: bool = False, compile: bool = False, compose_first_layers: bool = False,
                 fuse_batch_norm_pool: bool = False, average_from: int | None = None):
        super().__init__()
        # plain containers in the checkpoint (a Hydra DictConfig there would not load with
        # weights_only=True); save_hyperparameters reads these locals
        backbone, optimizer, scheduler = to_plain(backbone), to_plain(optimizer), to_plain(scheduler)
        class_names = [str(c) for c in class_names]
        self.save_hyperparameters(logger=False)  # the loggers get the run's whole config (pipeline)
        self.class_names = list(class_names)
        self.backbone = build_backbone(backbone, len(self.class_names), patch_size)
        project_constrained_layers_(self.backbone)
        if compose_first_layers:  # where the model has the pair (a speed setting, never an error)
            with contextlib.suppress(ValueError):
                self.backbone.compose_first_layers = True
        self.backbone.fuse_batch_norm_pool = fuse_batch_norm_pool
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # not a registered submodule: the checkpoint holds the backbone's weights once
        object.__setattr__(self, "_forward", torch.compile(self.backbone) if compile else self.backbone)
        k = len(self.class_names)
        # keyed "<stage>_" ("train" would shadow nn.Module.train)
        self.acc = torch.nn.ModuleDict({f"{s}_": MulticlassAccuracy(k, average="micro") for s in ("train", "val", "test")})
        self.per_class = torch.nn.ModuleDict({f"{s}_": MulticlassAccuracy(k, average="none") for s in ("val", "test")})
        self.confusion = torch.nn.ModuleDict({f"{s}_": MulticlassConfusionMatrix(k) for s in ("val", "test")})
        self.train_loss = MeanMetric()
        if average_from is not None and int(average_from) < 0:
            raise ValueError(f"phase_a.average_from: {average_from} is not an epoch index (null, 0, 1, ...)")
        self.average = WeightAverage()
        self._raw: dict[str, torch.Tensor] | None = None  # the trained weights while the average is in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and x.dim() == 4:  # [N, P, P] batches are fine as they are
            x = x.contiguous(memory_format=torch.channels_last)
        # the compiled graph serves training (one batch shape: the train loader drops its last
        # partial batch); evaluation runs eager, so odd-sized last batches never recompile
        return self._forward(x) if self.training else self.backbone(x)

    def _step(self, batch: Any, stage: str, batch_idx: int = 0) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if stage == "train":
            log_train_step(self, "phase_a/train", batch_idx, loss, self.train_loss, self.acc["train_"], logits, y,
                           acc_bar=True)
            return loss
        self.acc[f"{stage}_"](logits, y)
        self.log(f"phase_a/{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True, batch_size=len(y),
                 sync_dist=True)
        self.log(f"phase_a/{stage}/acc", self.acc[f"{stage}_"], prog_bar=True, on_epoch=True, on_step=False,
                 batch_size=len(y))
        if f"{stage}_" in self.per_class:
            self.per_class[f"{stage}_"].update(logits, y)
            self.confusion[f"{stage}_"].update(logits, y)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        per_class = self.per_class[f"{stage}_"].compute()
        confusion = self.confusion[f"{stage}_"].compute().cpu().numpy()
        self.per_class[f"{stage}_"].reset()
        self.confusion[f"{stage}_"].reset()
        for name, acc in zip(self.class_names, per_class.tolist()):
            self.log(f"phase_a/{stage}/acc_per_class/{name}", acc)
        # the picture is drawn by camsim.loggers.ConfusionFigures, which reads this
        self.last_confusion = {"stage": stage, "matrix": confusion, "per_class": per_class.cpu().numpy()}

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        project_constrained_layers_(self.backbone)  # Bayar & Stamm: after every step
        start = self.hparams.get("average_from")
        if start is not None and self.current_epoch >= int(start):
            self.average.update(self.backbone)  # projected weights: their mean meets the constraint too

    # weight averaging (phase_a.average_from): validation and every checkpoint — hence the kept
    # network, its test and everything downstream — see the average; training goes on from the
    # trained weights. In at a validation's start and at the epoch's end (before the checkpoint
    # callbacks, also in epochs without validation), out at the next training batch.
    def _average_in(self) -> None:
        if self.average.count and self._raw is None:
            self._raw = self.average.swap_in(self.backbone)
            project_constrained_layers_(self.backbone)  # the mean of projected kernels, up to fp32 rounding

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._average_in()

    def on_train_epoch_end(self) -> None:
        self._average_in()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._raw is not None:
            self.average.swap_out(self.backbone, self._raw)
            self._raw = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.average.count:  # to resume: the running mean, and the trained weights while the average is in
            checkpoint["weight_average"] = {"count": self.average.count, "mean": self.average.mean, "raw": self._raw}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("weight_average")
        if saved:  # with "raw", the state dict about to be loaded is the average: training resumes from "raw"
            self.average.count, self.average.mean, self._raw = int(saved["count"]), saved["mean"], saved["raw"]

    def on_fit_start(self) -> None:
        project_constrained_layers_(self.backbone)

    def configure_optimizers(self) -> Any:
        return optimizers_from_config(self.backbone.parameters(), self.hparams.optimizer, self.hparams.scheduler,
                                      "phase_a")


class WeightAverage:
    """The uniform average of a module's floating-point parameters and buffers (batch-norm
    statistics included), updated after every optimiser step: stochastic weight averaging
    (Izmailov et al., UAI 2018) taken densely, per step (Cha et al., SWAD, NeurIPS 2021)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict(keep_vars=True).items() if v.is_floating_point()}

    def _mean(self, k: str, like: torch.Tensor) -> torch.Tensor:
        """The running mean of ``k`` on ``like``'s device (a resumed DDP rank loads it where rank 0
        saved it), kept in float32 whatever the weights' precision."""
        m = self.mean[k]
        if m.device != like.device:
            m = self.mean[k] = m.to(like.device)
        return m

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        now = self._tensors(module)
        self.count += 1
        if self.mean is None or self.count == 1:
            self.mean = {k: v.detach().to(torch.float32, copy=True) for k, v in now.items()}
            return
        for k, v in now.items():
            self._mean(k, v).lerp_(v.detach().float(), 1.0 / self.count)  # mean += (v - mean) / count

    @torch.no_grad()
    def swap_in(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Put the average into ``module``; returns its own tensors (for :meth:`swap_out`)."""
        if self.mean is None:
            raise RuntimeError("WeightAverage.swap_in: nothing averaged yet")
        raw = {}
        for k, v in self._tensors(module).items():
            raw[k] = v.detach().clone()
            v.copy_(self._mean(k, v))
        return raw

    @torch.no_grad()
    def swap_out(self, module: torch.nn.Module, raw: dict[str, torch.Tensor]) -> None:
        for k, v in self._tensors(module).items():
            v.copy_(raw[k])


def optimizers_from_config(params: Any, optimizer: dict | None, scheduler: dict | None, phase: str) -> Any:
    """Lightning's ``configure_optimizers`` result from ``<phase>.optimizer`` / ``.scheduler``
    (``_target_`` + ``_partial_`` dicts; the scheduler steps once per epoch). A key set to null
    is left out, so a recipe can swap the class and drop the default's arguments (e.g. StepLR's
    ``step_size`` for CosineAnnealingLR)."""
    if optimizer is None:
        raise ValueError(f"{phase}.optimizer is not set")

    def build(node: dict) -> Any:
        return hydra.utils.instantiate({k: v for k, v in node.items() if v is not None}, _convert_="all")

    opt = build(optimizer)(params=params)
    if not scheduler:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": build(scheduler)(optimizer=opt), "interval": "epoch"}}


def load_classifier(ckpt: str | Path, map_location: str = "cpu") -> CameraClassifier:
    """Load a Phase A checkpoint in eval mode (:func:`load_checkpoint`)."""
    return load_checkpoint(CameraClassifier, ckpt, "phase_a", map_location)
