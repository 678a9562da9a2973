"""The frozen backbone's inference: features f(X) of uint8 patches, batch by batch.

One path for every place where the backbone no longer changes — Phase B's feature cache,
evaluation, localisation and the bench — so speed settings (channels_last, compile with
freezing) and batch sizing are decided here once.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from camsim.progress import progress_bar


#: batch of the feature pass: a pixel budget (16 patches of 256 px), at most 128 patches — chosen
#: on 2 CPU cores (docs/experiments.md, "Feature-pass batch"; 32 until 2026-12-05).
FEATURE_BATCH_PIXELS = 16 * 256 * 256
FEATURE_BATCH_MAX = 128


def feature_batch_size(patch_size: int, pixels: int = FEATURE_BATCH_PIXELS, cap: int = FEATURE_BATCH_MAX) -> int:
    """Patches per batch of the feature pass for ``patch_size`` (1 to ``cap``)."""
    return max(1, min(int(cap), int(pixels) // (int(patch_size) ** 2)))


def fold_batch_norm(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of ``backbone`` whose conv blocks have their batch norm folded into the
    convolution: ``bn(conv(x)) = conv'(x)`` with ``w' = w·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``
    (running statistics, as evaluation uses them) — the same affine map up to fp32 rounding,
    one pass over the activations fewer. ``backbone`` itself is not changed."""
    folded = copy.deepcopy(backbone).eval()
    for block in getattr(folded, "blocks", {}).values():
        bn, conv = getattr(block, "bn", None), getattr(block, "conv", None)
        if not (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)) or bn.running_var is None:
            continue
        with torch.no_grad():
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
        block.bn = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


class FeaturePass:
    """The frozen backbone's inference: ``{layer: float32 [n, d]}`` of uint8 patches, batch by batch.

    Used for Phase B's feature cache, evaluation and localisation — everywhere the backbone is
    frozen. ``channels_last=False`` (and no compile) is the exact reference: the backbone's own
    forward. ``channels_last``: NHWC convolutions (same maths, faster on CPU; converts the
    backbone's weights to channels_last in place — values unchanged) on
    :func:`fold_batch_norm`'s copy of the backbone (batch norm folded into the convolutions: one
    pass over the activations fewer, ~1.1× on the quick model), refolded whenever a parameter
    or buffer of the backbone changed in place since (``Tensor._version``), so it never reads
    stale weights. ``compile``: also
    ``torch.compile`` with inductor *freezing* (weights become constants and batch norm folds
    into the convolutions — valid only because the backbone no longer changes); each batch is
    padded to ``batch_size`` so one static shape compiles once (~15 s on 2 cores). Results agree
    with the eager reference within fp32 rounding (tests/test_lit.py).
    """

    def __init__(self, backbone: torch.nn.Module, layers: Sequence[str], batch_size: int | None = None,
                 channels_last: bool = True, compile: bool = False):
        backbone = getattr(backbone, "backbone", backbone)  # a CameraClassifier: its backbone
        for layer in layers:
            backbone.feature_dim(layer)  # fail before any work, naming the valid layers
        self.backbone, self.layers = backbone, list(layers)
        self.batch_size = int(batch_size or feature_batch_size(backbone.patch_size))
        self.channels_last = bool(channels_last or compile)
        self.compile = bool(compile)
        if self.channels_last:
            backbone.to(memory_format=torch.channels_last)
        self._fold: tuple[tuple, nn.Module] | None = None
        self._fn = self._forward_folded if self.channels_last else self._forward
        if self.compile:
            self._fn = torch.compile(self._forward, options={"freezing": True})

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.backbone.forward_features(x, self.layers)

    def _folded(self) -> nn.Module:
        """:func:`fold_batch_norm` of the backbone, rebuilt when any of its tensors changed."""
        stamp = tuple((id(t), t._version) for t in itertools.chain(self.backbone.parameters(),
                                                                    self.backbone.buffers()))
        if self._fold is None or self._fold[0] != stamp:
            self._fold = (stamp, fold_batch_norm(self.backbone))
        return self._fold[1]

    def _forward_folded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._folded().forward_features(x, self.layers)

    @torch.no_grad()
    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """One batch: uint8 ``[n, P, P]`` (or ``[n, C, P, P]``) with n ≤ ``batch_size``."""
        n = len(patches)
        if n > self.batch_size:
            raise ValueError(f"FeaturePass: {n} patches in one call, batch_size is {self.batch_size}")
        arr = np.ascontiguousarray(patches)
        if not arr.flags.writeable:  # a read-only (e.g. memory-mapped) set: torch wants to own writable memory
            arr = arr.copy()         # one batch, a few MB at most
        x = torch.from_numpy(arr)
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

    ``backbone``: a :class:`~camsim.models.backbone.Backbone` or a module holding one as
    ``.backbone`` (a CameraClassifier). Runs in eval mode (batch-norm statistics, as evaluation uses
    them) and restores the module's training flag afterwards. ``with_probs`` also returns
    the classifier's softmax outputs ``[N, |A|]`` (for the Bray–Curtis baseline), from the
    same forward pass. ``batch_size`` default: :func:`feature_batch_size`.
    """
    layers = [layer, "logits"] if with_probs else [layer]
    out = FeaturePass(backbone, layers, batch_size, channels_last=channels_last, compile=compile).extract(patches, desc)
    if not with_probs:
        return out[layer]
    return out[layer], torch.softmax(torch.from_numpy(out["logits"]), dim=1).numpy()
