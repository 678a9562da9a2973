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
        return optimizers_from_config(self.backbone.parameters(), self.hparams.optimizer, self.hparams.scheduler,
                                      "phase_a")


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
    """Load a Phase A checkpoint (``weights_only=True``: tensors and plain containers only)."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"Phase A checkpoint not found: {path}")
    model = CameraClassifier.load_from_checkpoint(str(path), map_location=map_location, weights_only=True)
    model.eval()
    return model


#: batch of the feature pass: a pixel budget (16 patches of 256 px), at most 32 patches. Measured on
#: 2 CPU cores with the compiled pass (``python -m camsim.bench --batch N``): MISLnet at 256 px
#: ran ~1.5x faster in batches of 16 than of 64, at 64 px ~1.15x faster in batches of 32 than of 64.
FEATURE_BATCH_PIXELS = 16 * 256 * 256
FEATURE_BATCH_MAX = 32


def feature_batch_size(patch_size: int, pixels: int = FEATURE_BATCH_PIXELS, cap: int = FEATURE_BATCH_MAX) -> int:
    """Patches per batch of the feature pass for ``patch_size`` (1 to ``cap``)."""
    return max(1, min(int(cap), int(pixels) // (int(patch_size) ** 2)))


class FeaturePass:
    """The frozen backbone's inference: ``{layer: float32 [n, d]}`` of uint8 patches, batch by batch.

    Used for Phase B's feature cache, evaluation and localisation — everywhere the backbone is
    frozen. ``channels_last``: NHWC convolutions (same maths, ~1.3x on CPU; converts the
    backbone's weights to channels_last in place — values unchanged). ``compile``: also
    ``torch.compile`` with inductor *freezing* (weights become constants and batch norm folds
    into the convolutions — valid only because the backbone no longer changes); each batch is
    padded to ``batch_size`` so one static shape compiles once (~15 s on 2 cores). Results agree
    with the eager reference within fp32 rounding (tests/test_lit.py).
    """

    def __init__(self, backbone: torch.nn.Module, layers: Sequence[str], batch_size: int | None = None,
                 channels_last: bool = True, compile: bool = False):
        if isinstance(backbone, CameraClassifier):
            backbone = backbone.backbone
        for layer in layers:
            backbone.feature_dim(layer)  # fail before any work, naming the valid layers
        self.backbone, self.layers = backbone, list(layers)
        self.batch_size = int(batch_size or feature_batch_size(backbone.patch_size))
        self.channels_last = bool(channels_last or compile)
        self.compile = bool(compile)
        if self.channels_last:
            backbone.to(memory_format=torch.channels_last)
        self._fn = self._forward
        if self.compile:
            self._fn = torch.compile(self._forward, options={"freezing": True})

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.forward_features(x, self.layers)

    @torch.no_grad()
    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """One batch: uint8 ``[n, P, P]`` (or ``[n, C, P, P]``) with n ≤ ``batch_size``."""
        n = len(patches)
        if n > self.batch_size:
            raise ValueError(f"FeaturePass: {n} patches in one call, batch_size is {self.batch_size}")
        x = torch.from_numpy(np.ascontiguousarray(patches))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if self.compile and n < self.batch_size:  # one static shape: pad, drop the padding after
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        x = x.to(next(self.backbone.parameters()).device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            out = self._fn(x)
        finally:
            self.backbone.train(was_training)
        return {k: v[:n].float().cpu().numpy() for k, v in out.items()}

    def extract(self, patches: np.ndarray, desc: str | None = None) -> dict[str, np.ndarray]:
        """All ``patches`` ``[N, P, P]`` in batches: ``{layer: float32 [N, d]}``; a progress
        bar named ``desc`` when given."""
        n = len(patches)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.layers}
        with progress_bar(disable=desc is None) as bar:
            task = bar.add_task(desc or "", total=n)
            for start in range(0, n, self.batch_size):
                out = self(np.asarray(patches[start:start + self.batch_size]))
                for k in self.layers:
                    parts[k].append(out[k])
                bar.advance(task, min(self.batch_size, n - start))
        return {k: np.concatenate(v) if v else np.zeros((0, self.backbone.feature_dim(k)), np.float32)
                for k, v in parts.items()}


def extract_features(backbone: torch.nn.Module, patches: np.ndarray, layer: str, batch_size: int | None = None,
                     with_probs: bool = False, desc: str = "features", channels_last: bool = True,
                     compile: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """f(X) of uint8 patches ``[N, P, P]`` at ``layer``, through :class:`FeaturePass`, with a progress bar.

    ``backbone``: a :class:`~camsim.models.backbone.Backbone` or a :class:`CameraClassifier`
    (its backbone is used). Runs in eval mode (batch-norm statistics, as evaluation uses
    them) and restores the module's training flag afterwards. ``with_probs`` also returns
    the classifier's softmax outputs ``[N, |A|]`` (for the Bray–Curtis baseline), from the
    same forward pass. ``batch_size`` default: :func:`feature_batch_size`.
    """
    layers = [layer, "logits"] if with_probs else [layer]
    out = FeaturePass(backbone, layers, batch_size, channels_last=channels_last, compile=compile).extract(patches, desc)
    if not with_probs:
        return out[layer]
    return out[layer], torch.softmax(torch.from_numpy(out["logits"]), dim=1).numpy()
