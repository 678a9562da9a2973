"""Learning Phase B: the similarity network S(f(X1), f(X2)) on a frozen backbone (docs/method.md).

The backbone comes from a Phase A checkpoint and stays frozen: eval mode (batch-norm
statistics do not move), ``requires_grad=False``, not in the optimiser. Batches are either
cached features ``(f1, f2, same)`` (``phase_b.cache_features``) or uint8 patches
``(x1, x2, same)``; both go through the same head. The checkpoint holds backbone + head +
everything needed to rebuild them, so one file serves evaluation and localisation.

End-to-end fine-tuning (``phase_b.finetune``; Mayer & Stamm, TIFS 2019, train the whole
network after the similarity head): :meth:`ForensicSimilarity.for_finetuning` takes the
trained network and unfreezes the backbone from a named stage (:func:`finetune_modules`) with
its own learning rate; patch pairs then flow through it and the constrained layer is
projected after every optimiser step, as in Phase A. Batch norm stays in eval mode: the head
learned on features made with Phase A's running statistics, evaluation uses them too, and a
batch of B's pairs is not Phase A's class mix, so batch statistics would shift f(X) between
training and evaluation and drift the running averages towards set B; the batch-norm scale
and shift parameters still learn.
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
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from camsim.config import to_plain
from camsim.lit.checkpoints import load_checkpoint
from camsim.lit.phase_a import build_backbone, load_classifier, log_train_step, optimizers_from_config
from camsim.models.constrained import project_constrained_layers_
from camsim.models.portable import CONFIG, WEIGHTS, check_network_spec, load_state, read_exported


def finetune_modules(backbone: torch.nn.Module, from_layer: str | None, feature_layer: str) -> list[torch.nn.Module]:
    """The backbone modules that fine-tuning trains: stage ``from_layer`` (a stage such as
    ``conv3`` / ``fc_a1`` or one of its layer names such as ``fc_a1.pre``; ``None``: the first
    stage, i.e. the whole network) and every stage after it in ``layer_names()`` order, up to
    the stage of ``feature_layer`` (later ones never reach f(X)). ValueError, one line, naming
    the valid stages otherwise."""
    names = backbone.layer_names()
    stages = list(dict.fromkeys(n.split(".")[0] for n in names))
    usable = stages[: stages.index(feature_layer.split(".")[0]) + 1]
    start = usable[0] if from_layer is None else str(from_layer).split(".")[0]
    if from_layer is not None and from_layer not in names and from_layer not in stages:
        raise ValueError(f"phase_b.finetune.from_layer={from_layer!r}: not a layer of this backbone; one of "
                         f"{usable} (or a layer name of one, or null for the whole network)")
    if start not in usable:
        raise ValueError(f"phase_b.finetune.from_layer={from_layer!r} comes after phase_b.feature_layer="
                         f"{feature_layer!r}: nothing it unfreezes reaches f(X); one of {usable}")
    modules = {"constrained": [backbone.constrained], "jpeg": [backbone.jpeg, getattr(backbone, "jpeg_norm", None)],
               "logits": [backbone.classifier], **{k: [v] for k, v in backbone.blocks.items()},
               **{k: [v, backbone.fc_acts[k]] for k, v in backbone.fcs.items()}}
    return [m for st in usable[usable.index(start):] for m in modules[st] if m is not None]


class ForensicSimilarity(L.LightningModule):
    """Frozen Phase A backbone (from a stage on learning when fine-tuned) → ``feature_layer`` →
    similarity head → 1 logit; S = sigmoid."""

    def __init__(self, phase_a: dict, head: dict, feature_layer: str, eta: float = 0.5,
                 optimizer: dict | None = None, scheduler: dict | None = None, training: dict | None = None,
                 finetune: dict | None = None):
        """``phase_a``: the Phase A hyper-parameters (backbone config, class names, patch size),
        as saved in its checkpoint; ``head``: the ``similarity`` config (a ``_target_`` dict);
        ``training``: what the network was trained on, kept in the checkpoint for later
        evaluations — ``{"sets": {"a": [...], "b": [...]}, "data": {...}, "patches": {...}}``
        (see :attr:`training_sets`, :attr:`patch_settings`); ``finetune``: ``None`` (frozen
        backbone) or the ``phase_b.finetune`` settings (``from_layer``, ``optimizer``,
        ``backbone_lr``, ``scheduler``, ``channels_last``): see :meth:`for_finetuning`."""
        super().__init__()
        # plain containers in the checkpoint (a Hydra DictConfig there would not load with
        # weights_only=True); save_hyperparameters reads these locals
        phase_a, head = to_plain(phase_a), to_plain(head)
        optimizer, scheduler, training = to_plain(optimizer), to_plain(scheduler), to_plain(training)
        finetune = to_plain(finetune)
        self.save_hyperparameters(logger=False)  # the loggers get the run's whole config (pipeline)
        self._quiet: warnings.catch_warnings | None = None
        self.backbone = build_backbone(phase_a["backbone"], len(phase_a["class_names"]), phase_a["patch_size"])
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        dim = self.backbone.feature_dim(feature_layer)  # raises for an unknown layer, naming the valid ones
        if finetune is not None:  # still in eval mode (see the module's docstring), but learning
            for m in finetune_modules(self.backbone, finetune.get("from_layer"), feature_layer):
                m.requires_grad_(True)
        self.head = hydra.utils.instantiate(head, in_features=dim, _convert_="all")
        self.val_acc = BinaryAccuracy(threshold=eta)
        self.val_auc = BinaryAUROC()
        self.train_acc = BinaryAccuracy(threshold=eta)
        self.train_loss = MeanMetric()

    @classmethod
    def from_phase_a(cls, phase_a_ckpt: str | Path, head: dict, feature_layer: str, **kwargs: Any) -> ForensicSimilarity:
        """A new (untrained) similarity network on the frozen backbone of a Phase A checkpoint."""
        clf = load_classifier(phase_a_ckpt)
        phase_a = {k: clf.hparams[k] for k in ("backbone", "class_names", "patch_size")}
        model = cls(phase_a, head, feature_layer, **kwargs)
        model.backbone.load_state_dict(clf.backbone.state_dict())
        model.backbone.eval()
        return model

    @classmethod
    def for_finetuning(cls, ckpt: str | Path, finetune: dict) -> ForensicSimilarity:
        """The trained Phase B network of ``ckpt`` (head on the frozen backbone), set up to be
        fine-tuned end to end with ``finetune`` (the ``phase_b.finetune`` node)."""
        trained = load_similarity(ckpt)
        ft = {k: v for k, v in to_plain(finetune).items() if k not in ("enabled", "max_epochs", "train_pairs", "loader")}
        hp = {k: v for k, v in trained.hparams.items() if k != "finetune"}
        if ft.get("with_a"):  # its training record says the end-to-end pairs came from A's models too
            training = to_plain(hp.get("training")) or {}  # (b_with_a stays the head's: phase_b.with_a)
            hp["training"] = {**training, "sets": {**(training.get("sets") or {}), "b_finetune_with_a": True}}
        model = cls(**hp, finetune=ft)
        model.load_state_dict(trained.state_dict())
        return model

    @property
    def finetuning(self) -> bool:
        """Whether the backbone learns (a fine-tuned network; :meth:`for_finetuning`)."""
        return self.hparams.get("finetune") is not None

    @property
    def patch_size(self) -> int:
        return int(self.hparams.phase_a["patch_size"])

    @property
    def feature_layer(self) -> str:
        return self.hparams.feature_layer

    @property
    def training_sets(self) -> dict:
        """Camera models the network was trained on: ``{"a": [...], "b": [...] or None, "b_val": [...]}``
        (set A from the Phase A classes; set B ``None`` for checkpoints saved before it was recorded;
        ``b_val``: B's models only validated on, which chose the checkpoint)."""
        sets = (self.hparams.get("training") or {}).get("sets") or {}
        return {"a": list(sets.get("a") or self.hparams.phase_a["class_names"]),
                "b": None if sets.get("b") is None else list(sets["b"]), "b_val": list(sets.get("b_val") or [])}

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
        if self.finetuning:
            project_constrained_layers_(self.backbone)
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
        """Logit of "same camera model" for patches or features ``a``, ``b``; S = sigmoid(logit).
        Fine-tuning: patches of both sides pass the backbone in one batch, with gradients."""
        if self.finetuning and a.dtype == torch.uint8:
            x = torch.cat([a, b])
            if self.hparams.finetune.get("channels_last") and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)  # NHWC kernels for the convolutions
            f = self.backbone.features(x, self.feature_layer)
            return self.head(f[: len(a)], f[len(a):])
        return self.head(self._as_features(a), self._as_features(b))

    def _step(self, batch: Any, stage: str, batch_idx: int = 0) -> torch.Tensor:
        a, b, same = batch
        logits = self(a, b)
        loss = F.binary_cross_entropy_with_logits(logits, same)
        s = torch.sigmoid(logits)
        n = len(same)
        if stage == "train":
            log_train_step(self, "phase_b/train", batch_idx, loss, self.train_loss, self.train_acc, s, same.int(),
                           acc_bar=False)
            return loss
        self.log(f"phase_b/{stage}/loss", loss, prog_bar=True, on_epoch=True, batch_size=n, sync_dist=True)
        self.val_acc(s, same.int())
        self.val_auc(s, same.int())
        self.log("phase_b/val/acc", self.val_acc, prog_bar=True, on_epoch=True, batch_size=n)
        self.log("phase_b/val/auc", self.val_auc, prog_bar=True, on_epoch=True, batch_size=n)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.finetuning:
            project_constrained_layers_(self.backbone)  # Bayar & Stamm: after every step, as in Phase A

    def configure_optimizers(self) -> Any:
        ft = self.hparams.get("finetune")
        if ft is None:
            return optimizers_from_config(self.head.parameters(), self.hparams.optimizer, self.hparams.scheduler,
                                          "phase_b")
        lr = {} if ft.get("backbone_lr") is None else {"lr": float(ft["backbone_lr"])}
        groups = [{"params": list(self.head.parameters())},
                  {"params": [p for p in self.backbone.parameters() if p.requires_grad], **lr}]
        return optimizers_from_config(groups, ft.get("optimizer"), ft.get("scheduler"), "phase_b.finetune")

    @torch.no_grad()
    def score_pairs(self, f: np.ndarray, i: np.ndarray, j: np.ndarray, batch_size: int = 65536,
                    logits: bool = False) -> np.ndarray:
        """S (``logits``: its logit) for pairs (i, j) of rows of a feature matrix ``f`` [N, d] (no
        backbone): the head's branch runs once per row, not per pair (:meth:`SimilarityNet.score_pairs`).

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
            return self.head.score_pairs(ft, ii, jj, batch=batch_size, logits=logits).float().cpu().numpy()
        finally:
            self.head.train(was_training)


def load_similarity(ckpt: str | Path, map_location: str = "cpu") -> ForensicSimilarity:
    """Load a Phase B checkpoint in eval mode (:func:`~camsim.lit.checkpoints.load_checkpoint`),
    or a ``camsim-export`` folder (``config.json`` + ``model.safetensors``, checksums verified:
    :func:`~camsim.models.portable.read_exported`) rebuilt as the same module."""
    if not Path(ckpt).is_dir():
        return load_checkpoint(ForensicSimilarity, ckpt, "phase_b", map_location)
    cfg, state = read_exported(ckpt)
    arch = cfg["architecture"]
    for field in ("backbone", "head"):
        check_network_spec(arch[field], f"architecture.{field}", Path(ckpt) / CONFIG)
    model = ForensicSimilarity({k: arch[k] for k in ("backbone", "class_names", "patch_size")}, arch["head"],
                               arch["feature_layer"], eta=float(cfg["eta"]["value"]), training=cfg.get("training"),
                               finetune=cfg.get("finetune"))
    load_state(model, state, Path(ckpt) / WEIGHTS)
    return model.to(map_location).eval()
