"""Learning Phase B: the similarity network S(f(X1), f(X2)) on a frozen backbone (docs/method.md).

The backbone comes from a Phase A checkpoint and stays frozen: eval mode (batch-norm
statistics do not move), ``requires_grad=False``, not in the optimiser. Batches are either
cached features ``(f1, f2, same)`` (``phase_b.cache_features``) or uint8 patches
``(x1, x2, same)``; both go through the same head. The checkpoint holds backbone + head +
everything needed to rebuild them, so one file serves evaluation and localisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from camsim.config import to_plain
from camsim.lit.checkpoints import load_checkpoint
from camsim.lit.phase_a import build_backbone, load_classifier, optimizers_from_config


class ForensicSimilarity(L.LightningModule):
    """Frozen Phase A backbone → ``feature_layer`` → similarity head → 1 logit; S = sigmoid."""

    def __init__(self, phase_a: dict, head: dict, feature_layer: str, eta: float = 0.5,
                 optimizer: dict | None = None, scheduler: dict | None = None, training: dict | None = None):
        """``phase_a``: the Phase A hyper-parameters (backbone config, class names, patch size),
        as saved in its checkpoint; ``head``: the ``similarity`` config (a ``_target_`` dict);
        ``training``: what the network was trained on, kept in the checkpoint for later
        evaluations — ``{"sets": {"a": [...], "b": [...]}, "data": {...}, "patches": {...}}``
        (see :attr:`training_sets`, :attr:`patch_settings`)."""
        super().__init__()
        # plain containers in the checkpoint (a Hydra DictConfig there would not load with
        # weights_only=True); save_hyperparameters reads these locals
        phase_a, head = to_plain(phase_a), to_plain(head)
        optimizer, scheduler, training = to_plain(optimizer), to_plain(scheduler), to_plain(training)
        self.save_hyperparameters()
        self._quiet: warnings.catch_warnings | None = None
        self.backbone = build_backbone(phase_a["backbone"], len(phase_a["class_names"]), phase_a["patch_size"])
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        dim = self.backbone.feature_dim(feature_layer)  # raises for an unknown layer, naming the valid ones
        self.head = hydra.utils.instantiate(head, in_features=dim, _convert_="all")
        self.val_acc = BinaryAccuracy(threshold=eta)
        self.val_auc = BinaryAUROC()
        self.train_acc = BinaryAccuracy(threshold=eta)

    @classmethod
    def from_phase_a(cls, phase_a_ckpt: str | Path, head: dict, feature_layer: str, **kwargs: Any) -> ForensicSimilarity:
        """A new (untrained) similarity network on the frozen backbone of a Phase A checkpoint."""
        clf = load_classifier(phase_a_ckpt)
        phase_a = {k: clf.hparams[k] for k in ("backbone", "class_names", "patch_size")}
        model = cls(phase_a, head, feature_layer, **kwargs)
        model.backbone.load_state_dict(clf.backbone.state_dict())
        model.backbone.eval()
        return model

    @property
    def patch_size(self) -> int:
        return int(self.hparams.phase_a["patch_size"])

    @property
    def feature_layer(self) -> str:
        return self.hparams.feature_layer

    @property
    def training_sets(self) -> dict:
        """Camera models the network was trained on: ``{"a": [...], "b": [...] or None}`` (set A
        from the Phase A classes; set B is ``None`` for checkpoints saved before it was recorded)."""
        sets = (self.hparams.get("training") or {}).get("sets") or {}
        return {"a": list(sets.get("a") or self.hparams.phase_a["class_names"]),
                "b": None if sets.get("b") is None else list(sets["b"])}

    @property
    def patch_settings(self) -> dict | None:
        """The training recipe's patch settings (``size``, ``align``, ``min_entropy``), or ``None``
        for checkpoints saved before they were recorded."""
        return (self.hparams.get("training") or {}).get("patches")

    @property
    def data_fingerprint(self) -> dict | None:
        """What identifies the training data (source kind, root or simulator settings), or ``None``."""
        return (self.hparams.get("training") or {}).get("data")

    def train(self, mode: bool = True) -> ForensicSimilarity:
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics must not move
        return self

    def on_fit_start(self) -> None:
        # Lightning warns "Found N module(s) in eval mode at the start of training" when the
        # fit loop starts (after the sanity check). The frozen backbone is in eval mode on
        # purpose, so that warning is silenced for exactly its N modules (a head left in
        # eval mode still warns), from here until on_train_start.
        self._end_quiet()
        n = sum(1 for _ in self.backbone.modules())
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.filterwarnings("ignore", message=rf"Found {n} module\(s\) in eval mode at the start of training",
                                category=PossibleUserWarning)

    def on_train_start(self) -> None:
        self._end_quiet()

    def on_fit_end(self) -> None:
        self._end_quiet()  # when the fit loop never started (e.g. resumed from a finished run)

    def _end_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.__exit__(None, None, None)
            self._quiet = None

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(X) of uint8 patches ``[B, 1, P, P]`` (or ``[B, P, P]``) at the configured layer."""
        return self.backbone.features(x, self.feature_layer)

    def _as_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) if x.dtype == torch.uint8 else x

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logit of "same camera model" for patches or features ``a``, ``b``; S = sigmoid(logit)."""
        return self.head(self._as_features(a), self._as_features(b))

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        a, b, same = batch
        logits = self(a, b)
        loss = F.binary_cross_entropy_with_logits(logits, same)
        s = torch.sigmoid(logits)
        n = len(same)
        self.log(f"phase_b/{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=stage == "train",
                 batch_size=n, sync_dist=stage != "train")
        if stage == "train":
            self.train_acc(s, same.int())
            self.log("phase_b/train/acc", self.train_acc, on_epoch=True, on_step=False, batch_size=n)
        else:
            self.val_acc(s, same.int())
            self.val_auc(s, same.int())
            self.log("phase_b/val/acc", self.val_acc, prog_bar=True, on_epoch=True, batch_size=n)
            self.log("phase_b/val/auc", self.val_auc, prog_bar=True, on_epoch=True, batch_size=n)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return optimizers_from_config(self.head.parameters(), self.hparams.optimizer, self.hparams.scheduler, "phase_b")

    @torch.no_grad()
    def score_pairs(self, f: np.ndarray, i: np.ndarray, j: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """S for pairs (i, j) of rows of a feature matrix ``f`` [N, d] (no backbone): the head's
        branch runs once per row, not per pair (:meth:`SimilarityNet.score_pairs`).

        The head runs in eval mode (no dropout); the module's training flags are restored after.
        """
        if len(i) != len(j):
            raise ValueError(f"i/j: pair index arrays differ in length ({len(i)} vs {len(j)})")
        was_training = self.head.training
        self.head.eval()
        try:
            ft = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(self.device)
            ii = torch.from_numpy(np.asarray(i, dtype=np.int64)).to(self.device)
            jj = torch.from_numpy(np.asarray(j, dtype=np.int64)).to(self.device)
            return self.head.score_pairs(ft, ii, jj, batch=batch_size).float().cpu().numpy()
        finally:
            self.head.train(was_training)


def load_similarity(ckpt: str | Path, map_location: str = "cpu") -> ForensicSimilarity:
    """Load a Phase B checkpoint in eval mode (:func:`~camsim.lit.checkpoints.load_checkpoint`)."""
    return load_checkpoint(ForensicSimilarity, ckpt, "phase_b", map_location)
