"""Learning Phase A: the camera-model classifier on set A (method.md), and feature extraction.

The backbone's constrained layer is projected back onto its constraint after every
optimiser step (:meth:`CameraClassifier.optimizer_step`) — so it holds under gradient
accumulation (no step, no change) and DDP (every rank takes the same step).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from camsim.config import to_plain
from camsim.models.constrained import project_constrained_layers_
from camsim.progress import progress_bar


def build_backbone(backbone: dict, num_classes: int, patch_size: int) -> torch.nn.Module:
    """Instantiate a backbone from its ``model`` config (a ``_target_`` dict)."""
    return hydra.utils.instantiate(backbone, num_classes=num_classes, patch_size=patch_size, _convert_="all")


class CameraClassifier(L.LightningModule):
    """Constrained-conv backbone + softmax over the camera models of set A.

    Everything needed to rebuild it (backbone config, class names, patch size) is saved in
    the checkpoint's hyper-parameters, so ``CameraClassifier.load_from_checkpoint(path)``
    needs no Hydra config. Logs ``phase_a/{train,val,test}/{loss,acc}``, per-class accuracy
    and a confusion-matrix picture at the end of validation.
    """

    def __init__(self, backbone: dict, class_names: Sequence[str], patch_size: int,
                 optimizer: dict | None = None, scheduler: dict | None = None,
                 channels_last: bool = False, compile: bool = False):
        super().__init__()
        # plain containers in the checkpoint (a Hydra DictConfig there would not load with
        # weights_only=True); save_hyperparameters reads these locals
        backbone, optimizer, scheduler = to_plain(backbone), to_plain(optimizer), to_plain(scheduler)
        class_names = [str(c) for c in class_names]
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.backbone = build_backbone(backbone, len(self.class_names), patch_size)
        project_constrained_layers_(self.backbone)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # not a registered submodule: the checkpoint holds the backbone's weights once
        object.__setattr__(self, "_forward", torch.compile(self.backbone) if compile else self.backbone)
        k = len(self.class_names)
        # keyed "<stage>_" ("train" would shadow nn.Module.train)
        self.acc = torch.nn.ModuleDict({f"{s}_": MulticlassAccuracy(k, average="micro") for s in ("train", "val", "test")})
        self.per_class = torch.nn.ModuleDict({f"{s}_": MulticlassAccuracy(k, average="none") for s in ("val", "test")})
        self.confusion = torch.nn.ModuleDict({f"{s}_": MulticlassConfusionMatrix(k) for s in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and x.dim() == 4:  # [N, P, P] batches are fine as they are
            x = x.contiguous(memory_format=torch.channels_last)
        # the compiled graph serves training (one batch shape: the train loader drops its last
        # partial batch); evaluation runs eager, so odd-sized last batches never recompile
        return self._forward(x) if self.training else self.backbone(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.acc[f"{stage}_"](logits, y)
        self.log(f"phase_a/{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True,
                 on_step=stage == "train", batch_size=len(y), sync_dist=stage != "train")
        self.log(f"phase_a/{stage}/acc", self.acc[f"{stage}_"], prog_bar=True, on_epoch=True, on_step=False,
                 batch_size=len(y))
        if f"{stage}_" in self.per_class:
            self.per_class[f"{stage}_"].update(logits, y)
            self.confusion[f"{stage}_"].update(logits, y)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

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
        self.last_confusion = {"stage": stage, "matrix": confusion, "per_class": per_class.cpu().numpy()}
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:  # one picture, not one per rank
            from camsim.eval.plots import plot_confusion
            from camsim.lit.logging import log_figure

            fig = plot_confusion(confusion, self.class_names, None)
            log_figure(self.loggers, f"phase_a/{stage}/confusion", fig, self.global_step)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        project_constrained_layers_(self.backbone)  # Bayar & Stamm: after every step

    def on_fit_start(self) -> None:
        project_constrained_layers_(self.backbone)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if hp.optimizer is None:
            raise ValueError("phase_a.optimizer is not set")
        opt = hydra.utils.instantiate(hp.optimizer, _convert_="all")(params=self.backbone.parameters())
        if not hp.scheduler:
            return opt
        sched = hydra.utils.instantiate(hp.scheduler, _convert_="all")(optimizer=opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def load_classifier(ckpt: str | Path, map_location: str = "cpu") -> CameraClassifier:
    """Load a Phase A checkpoint (``weights_only=True``: tensors and plain containers only)."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"Phase A checkpoint not found: {path}")
    model = CameraClassifier.load_from_checkpoint(str(path), map_location=map_location, weights_only=True)
    model.eval()
    return model


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, patches: np.ndarray, layer: str, batch_size: int = 512,
                     with_probs: bool = False, desc: str = "features") -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """f(X) of uint8 patches ``[N, P, P]`` at ``layer`` in batches, with a progress bar.

    ``backbone``: a :class:`~camsim.models.backbone.Backbone` or a :class:`CameraClassifier`
    (its backbone is used). Runs in eval mode (batch-norm statistics, as evaluation uses
    them) and restores the module's training flag afterwards. ``with_probs`` also returns
    the classifier's softmax outputs ``[N, |A|]`` (for the Bray–Curtis baseline), from the
    same forward pass.
    """
    if isinstance(backbone, CameraClassifier):
        backbone = backbone.backbone
    backbone.feature_dim(layer)  # fail before any work, naming the valid layers
    feats, probs = [], []
    n = len(patches)
    device = next(backbone.parameters()).device
    layers = [layer, "logits"] if with_probs else [layer]
    was_training = backbone.training
    backbone.eval()
    try:
        with progress_bar() as bar:
            task = bar.add_task(desc, total=n)
            for start in range(0, n, batch_size):
                x = torch.from_numpy(np.array(patches[start:start + batch_size])).unsqueeze(1).to(device)
                out = backbone.forward_features(x, layers)
                feats.append(out[layer].float().cpu().numpy())
                if with_probs:
                    probs.append(torch.softmax(out["logits"].float(), dim=1).cpu().numpy())
                bar.advance(task, len(x))
    finally:
        backbone.train(was_training)
    f = np.concatenate(feats) if feats else np.zeros((0, backbone.feature_dim(layer)), np.float32)
    if not with_probs:
        return f
    return f, (np.concatenate(probs) if probs else np.zeros((0, backbone.feature_dim("logits")), np.float32))
