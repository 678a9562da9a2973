"""Phase A backbone: constrained layer -> conv blocks -> fc_a* -> class logits.

docs/method.md, "Learning Phase A". The architecture is data (a ``model`` config file,
``conf/model/*.yaml``), not code: channel widths, depth, kernel sizes, strides,
paddings, pooling, activation, batch norm and the constrained layer are all arguments.

Input convention (CONVENTIONS.md): green-channel patches ``[N, P, P]`` or
``[N, C, P, P]``, uint8 or float, on the 0..255 scale whatever the dtype. The model
normalises itself: ``x.to(param dtype) / 255``. (A float input already in [0, 1] would
be divided again: feed raw pixel values.)

Named layers (``layer_names()``), usable as ``feature_layer``:

- ``constrained``: constrained-conv output;
- ``convK.pre`` (after batch norm, before the activation), ``convK.post`` (after the
  activation), ``convK.pool`` (after pooling), K = 1..number of blocks;
- ``jpeg``: the JPEG branch's block-DCT histograms (``camsim.models.jpeg``), when configured;
- ``fc_aJ.pre`` / ``fc_aJ.post`` (before / after the activation), J = 1..len(fc);
- ``logits``.

Conv outputs are spatially averaged to ``[N, C]`` when read as features. The paper's
feature f(X) is ``fc_a2.pre`` (the default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camsim.plain import to_plain
from camsim.models.batch_norm_pool import batch_norm_max_pool, fusable
from camsim.models.constrained import ConstrainedConv2d, check_composable, constrained_then_conv
from camsim.models.jpeg import DCTHistogram

__all__ = ["Backbone", "make_activation"]

_ACTIVATIONS = ("tanh", "relu", "gelu")
_INITS = ("xavier", "xavier_normal", "kaiming", "torch")
_POOL_TYPES = ("max", "avg", "none")
_BLOCK_KEYS = {"out_channels", "kernel_size", "stride", "padding", "pool"}
_POOL_KEYS = {"type", "kernel", "stride", "padding"}
_JPEG_KEYS = {"coefficients", "half_range", "dropout"}
_CONSTRAINED_KEYS = {"kernels", "kernel_size", "padding"}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by config name (tanh | relu | gelu)."""
    key = str(name).lower()
    if key == "tanh":
        return nn.Tanh()
    if key == "relu":
        return nn.ReLU()
    if key == "gelu":
        return nn.GELU()
    raise ValueError(f"activation: unknown {name!r}; choose one of {list(_ACTIVATIONS)}")


def _int(value: Any, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _padding(value: Any, kernel: int, field: str) -> int:
    """int | 'valid' (0) | 'same' (k // 2, odd k: output = ceil(input / stride), as TF 'SAME')."""
    if isinstance(value, str):
        key = value.lower()
        if key == "valid":
            return 0
        if key == "same":
            if kernel % 2 == 0:
                raise ValueError(f"{field}: 'same' needs an odd kernel size, got {kernel}")
            return kernel // 2
        raise ValueError(f"{field}: expected an int, 'same' or 'valid', got {value!r}")
    return _int(value, field)


def _unknown_keys(given: Mapping, allowed: set[str], field: str) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise ValueError(f"{field}: unknown key(s) {extra}; allowed {sorted(allowed)}")


def _out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


#: activations that never decrease: max pooling commutes with them (max(act(x)) = act(max(x)))
_MONOTONE = (nn.Tanh, nn.ReLU)


class ConvBlock(nn.Module):
    """conv -> batch norm (or identity) -> activation -> pooling (or identity).

    With max pooling and a non-decreasing activation (tanh, ReLU) the block pools *before* the
    activation when nobody reads the un-pooled activation (``convK.post``): the same values and
    gradients (up to fp32 rounding), with the activation evaluated on a quarter of the elements
    after a 3×3/2 pool (``benchmarks/pool_order.py``: training steps 1.0–1.2×, inference
    1.1–1.4× on 2 CPU cores).
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, act: nn.Module, pool: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = act
        self.pool = pool
        self.pool_first = isinstance(pool, nn.MaxPool2d) and isinstance(act, _MONOTONE)


class Backbone(nn.Module):
    """Camera-model classifier of Phase A whose named layers give the feature f(X).

    Args (all but ``num_classes``/``patch_size`` come from ``conf/model/*.yaml``):
        num_classes: number of camera models of set A (class logits).
        patch_size: P of the square input patches; fixes the flatten size of fc_a1.
        in_channels: 1 for the green channel (the paper's), 3 for RGB patches (``model.in_channels=3``).
        constrained: None (no constrained layer) or ``{kernels, kernel_size, padding}``
            (padding int | 'same' | 'valid', default 'valid'; no bias).
        blocks: list of ``{out_channels, kernel_size, stride=1, padding=0, pool}``,
            padding int | 'same' | 'valid'; pool None or ``{type: max|avg|none, kernel,
            stride=kernel, padding=0}`` (avg pooling excludes padded cells).
        fc: widths of fc_a1, fc_a2, ... (e.g. [200, 200]).
        activation: tanh (paper) | relu | gelu, used after every conv block and fc_a*.
        batch_norm: BatchNorm2d after every block's conv (the conv then has no bias).
        init: xavier (uniform, as the authors' code) | xavier_normal | kaiming | torch
            (PyTorch defaults); biases start at 0 except with ``torch``.
        feature_layer: default layer of ``features()`` (None: fc_a2.pre, the paper's f(X)).
        fit_pools: when a pooling window is larger than its (padded) input -- small
            patches, e.g. the 3x3 pool after conv4 at 64 px -- shrink the window to the
            input size instead of raising ValueError. Decided once at construction from
            ``patch_size``; sizes where every window fits are unaffected.
        jpeg: None (the paper's network) or ``{coefficients=27, half_range=15, dropout=0}``: a fixed
            branch of block-DCT coefficient histograms (:class:`~camsim.models.jpeg.DCTHistogram`,
            layer ``jpeg``) that, batch-normalised, join the flattened conv output before ``fc_a1``.
            ``dropout`` (branch dropout, training only): the share of training patches whose
            batch-normalised histograms are set to zero (the normalisation's output; its mean is the
            learnt shift β, which starts at zero), so that the fc layers must name those patches'
            models from the conv tower's pixel traces alone.
    """

    def __init__(
        self,
        num_classes: int,
        patch_size: int,
        in_channels: int = 1,
        constrained: Mapping[str, Any] | None = None,
        blocks: Sequence[Mapping[str, Any]] = (),
        fc: Sequence[int] = (200, 200),
        activation: str = "tanh",
        batch_norm: bool = True,
        init: str = "xavier",
        feature_layer: str | None = "fc_a2.pre",
        fit_pools: bool = False,
        jpeg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        feature_layer = feature_layer or "fc_a2.pre"
        constrained = to_plain(constrained)
        jpeg = to_plain(jpeg)
        blocks = to_plain(blocks)
        fc = to_plain(fc)
        self.num_classes = _int(num_classes, "num_classes", 1)
        self.patch_size = _int(patch_size, "patch_size", 1)
        self.in_channels = _int(in_channels, "in_channels", 1)
        if str(init).lower() not in _INITS:
            raise ValueError(f"init: unknown {init!r}; choose one of {list(_INITS)}")
        make_activation(activation)  # validates the name
        if not isinstance(blocks, list):
            raise ValueError(f"blocks: expected a list of block dicts, got {blocks!r}")
        if not isinstance(fc, list):
            raise ValueError(f"fc: expected a list of widths, got {fc!r}")
        self.config: dict[str, Any] = {
            "in_channels": self.in_channels,
            "constrained": constrained,
            "blocks": blocks,
            "fc": fc,
            "activation": activation,
            "batch_norm": bool(batch_norm),
            "init": init,
            "feature_layer": feature_layer,
            "fit_pools": bool(fit_pools),
            "jpeg": jpeg,
        }

        # shapes[name] = (C, H, W) after that stage, computed here, checked by the tests
        self.shapes: dict[str, tuple[int, int, int]] = {}
        c, h = self.in_channels, self.patch_size
        self.shapes["input"] = (c, h, h)
        dims: dict[str, int] = {}

        self.constrained: ConstrainedConv2d | None = None
        if constrained is not None:
            if not isinstance(constrained, dict):
                raise ValueError(f"constrained: expected null or a dict, got {constrained!r}")
            _unknown_keys(constrained, _CONSTRAINED_KEYS, "constrained")
            if "kernels" not in constrained or "kernel_size" not in constrained:
                raise ValueError("constrained: needs 'kernels' and 'kernel_size'")
            kernels = _int(constrained["kernels"], "constrained.kernels", 1)
            k = _int(constrained["kernel_size"], "constrained.kernel_size", 3)
            pad = _padding(constrained.get("padding", "valid"), k, "constrained.padding")
            self.constrained = ConstrainedConv2d(c, kernels, k, padding=pad)
            h = self._conv_out(h, k, 1, pad, "constrained")
            c = kernels
            self.shapes["constrained"] = (c, h, h)
            dims["constrained"] = c

        self.blocks = nn.ModuleDict()
        for i, spec in enumerate(blocks, start=1):
            name = f"conv{i}"
            if not isinstance(spec, dict):
                raise ValueError(f"blocks[{i - 1}] ({name}): expected a dict, got {spec!r}")
            _unknown_keys(spec, _BLOCK_KEYS, f"blocks[{i - 1}] ({name})")
            for key in ("out_channels", "kernel_size"):
                if key not in spec:
                    raise ValueError(f"blocks[{i - 1}] ({name}): missing '{key}'")
            out_c = _int(spec["out_channels"], f"{name}.out_channels", 1)
            k = _int(spec["kernel_size"], f"{name}.kernel_size", 1)
            stride = _int(spec.get("stride", 1), f"{name}.stride", 1)
            pad = _padding(spec.get("padding", 0), k, f"{name}.padding")
            conv = nn.Conv2d(c, out_c, k, stride=stride, padding=pad, bias=not batch_norm)
            h = self._conv_out(h, k, stride, pad, name)
            c = out_c
            self.shapes[name] = (c, h, h)
            pool, h = self._make_pool(spec.get("pool"), h, name, bool(fit_pools))
            self.shapes[f"{name}.pool"] = (c, h, h)
            bn = nn.BatchNorm2d(c) if batch_norm else nn.Identity()
            self.blocks[name] = ConvBlock(conv, bn, make_activation(activation), pool)
            for part in ("pre", "post", "pool"):
                dims[f"{name}.{part}"] = c

        self.flat_features = c * h * h
        self.jpeg: DCTHistogram | None = None
        if jpeg is not None:
            if not isinstance(jpeg, dict):
                raise ValueError(f"jpeg: expected null or a dict, got {jpeg!r}")
            _unknown_keys(jpeg, _JPEG_KEYS, "jpeg")
            if self.patch_size % 8:
                raise ValueError(f"jpeg: needs a patch size that is a multiple of 8, got {self.patch_size}")
            dropout = jpeg.get("dropout", 0.0)
            if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
                raise ValueError(f"jpeg.dropout: expected a share in [0, 1), got {dropout!r}")
            self.jpeg_dropout = float(dropout)
            self.jpeg = DCTHistogram(self.in_channels, **{k: _int(v, f"jpeg.{k}", 1) for k, v in jpeg.items()
                                                          if k != "dropout"})
            # histogram shares are tiny next to the conv features: standardised, the fc layers
            # weigh both from the start (docs/experiments.md, "What the JPEG branch changed")
            self.jpeg_norm = nn.BatchNorm1d(self.jpeg.out_features)
            dims["jpeg"] = self.jpeg.out_features
            self.flat_features += self.jpeg.out_features
        self.fcs = nn.ModuleDict()
        self.fc_acts = nn.ModuleDict()
        width = self.flat_features
        for j, w in enumerate(fc, start=1):
            name = f"fc_a{j}"
            w = _int(w, f"fc[{j - 1}]", 1)
            self.fcs[name] = nn.Linear(width, w)
            self.fc_acts[name] = make_activation(activation)
            width = w
            dims[f"{name}.pre"] = dims[f"{name}.post"] = w
        self.classifier = nn.Linear(width, self.num_classes)
        dims["logits"] = self.num_classes
        self._dims = dims

        self._check_layers([feature_layer])
        self.feature_layer = feature_layer
        self._init_weights(str(init).lower())
        self._compose = self.fuse_batch_norm_pool = False

    @property
    def compose_first_layers(self) -> bool:
        """In training on CPU, the constrained layer and conv1 as one convolution
        (:func:`constrained_then_conv`): the same maths up to fp32 rounding, a faster backward.
        Evaluation (faster so on CPU), GPUs (not measured) and mixed precision run the two
        layers. A speed setting: ``config`` does not hold it (``phase_a.compose_first_layers`` does)."""
        return self._compose

    @compose_first_layers.setter
    def compose_first_layers(self, on: bool) -> None:
        if on:
            check_composable(self.constrained, next(iter(self.blocks.values())).conv if self.blocks else None)
        self._compose = bool(on)

    # fuse_batch_norm_pool (a plain attribute): in training on CPU, each block that pools before its
    # activation runs batch norm and max pooling as one step (camsim.models.batch_norm_pool): the
    # same maths up to fp32 rounding, one full-size pass instead of five. A speed setting like
    # compose_first_layers (``phase_a.fuse_batch_norm_pool``); blocks it cannot fuse run as they are.

    def _constrained_then_conv1(self, x: Tensor, conv: nn.Conv2d) -> Tensor:
        pad = self.constrained.padding[0]
        x = F.pad(x, (pad,) * 4) if pad else x
        y = constrained_then_conv(x, self.constrained.weight, conv.weight, conv.stride[0], conv.padding[0])
        return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)

    # ------------------------------------------------------------------ construction
    def _conv_out(self, h: int, k: int, stride: int, pad: int, name: str) -> int:
        out = _out_size(h, k, stride, pad)
        if out < 1:
            raise ValueError(
                f"{name}: a {k}x{k} kernel (padding {pad}) does not fit its {h}x{h} input at "
                f"patch_size={self.patch_size}; use a larger patch or more padding"
            )
        return out

    def _make_pool(self, spec: Any, h: int, name: str, fit: bool) -> tuple[nn.Module, int]:
        if spec is None:
            return nn.Identity(), h
        if not isinstance(spec, dict):
            raise ValueError(f"{name}.pool: expected null or a dict, got {spec!r}")
        _unknown_keys(spec, _POOL_KEYS, f"{name}.pool")
        kind = str(spec.get("type", "max")).lower()
        if kind not in _POOL_TYPES:
            raise ValueError(f"{name}.pool.type: unknown {spec.get('type')!r}; choose one of {list(_POOL_TYPES)}")
        if kind == "none":
            return nn.Identity(), h
        if "kernel" not in spec:
            raise ValueError(f"{name}.pool: missing 'kernel'")
        k = _int(spec["kernel"], f"{name}.pool.kernel", 1)
        stride = _int(spec.get("stride", k), f"{name}.pool.stride", 1)
        pad = _int(spec.get("padding", 0), f"{name}.pool.padding")
        if 2 * pad > k:
            raise ValueError(f"{name}.pool.padding: at most half the kernel ({k}), got {pad}")
        if h + 2 * pad < k:
            if not fit:
                raise ValueError(
                    f"{name}.pool: a {k}x{k} window does not fit its {h}x{h} input at "
                    f"patch_size={self.patch_size}; use a larger patch, pool padding, or "
                    f"fit_pools: true (shrinks the window to the input)"
                )
            k = h + 2 * pad
        out = _out_size(h, k, stride, pad)
        if kind == "max":
            return nn.MaxPool2d(k, stride=stride, padding=pad), out
        return nn.AvgPool2d(k, stride=stride, padding=pad, count_include_pad=False), out

    def _init_weights(self, init: str) -> None:
        if init == "torch":
            return
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                elif init == "xavier_normal":
                    nn.init.xavier_normal_(m.weight)
                else:  # kaiming
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.constrained is not None:
            self.constrained.project_()

    # ------------------------------------------------------------------ names
    def layer_names(self) -> list[str]:
        """All valid layer names, in forward order."""
        return list(self._dims)

    def feature_dim(self, layer: str | None = None) -> int:
        """Width d of ``features(x, layer)`` (default: ``self.feature_layer``)."""
        layer = self.feature_layer if layer is None else layer
        self._check_layers([layer])
        return self._dims[layer]

    def _check_layers(self, layers: Sequence[str]) -> None:
        if isinstance(layers, str):
            raise ValueError(f"layers: expected a list of layer names, got the string {layers!r}")
        bad = [name for name in layers if name not in self._dims]
        if bad:
            raise ValueError(f"unknown layer name(s) {bad}; valid names: {self.layer_names()}")

    # ------------------------------------------------------------------ forward
    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            if self.in_channels != 1:
                raise ValueError(
                    f"x: a 3-D batch [N, P, P] needs in_channels=1, model has {self.in_channels}"
                )
            x = x.unsqueeze(1)
        elif x.dim() != 4:
            raise ValueError(f"x: expected [N, P, P] or [N, C, P, P], got shape {tuple(x.shape)}")
        return x.to(self.classifier.weight.dtype) / 255.0

    def _run(self, x: Tensor, wanted: Sequence[str]) -> dict[str, Tensor]:
        """One pass; records the ``wanted`` layers and stops after the last of them."""
        out: dict[str, Tensor] = {}
        n_wanted = len(set(wanted))
        x = inp = self._prepare(x)
        if self.jpeg is not None and "jpeg" in wanted:
            out["jpeg"] = self.jpeg(inp)
            if len(out) == n_wanted:
                return out
        cpu_training = self.training and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        composed = self._compose and cpu_training and "constrained" not in wanted
        fuse = self.fuse_batch_norm_pool and cpu_training
        if self.constrained is not None and not composed:
            x = self.constrained(x)
            if "constrained" in wanted:
                out["constrained"] = x.mean(dim=(2, 3))
                if len(out) == n_wanted:
                    return out
        for k, (name, block) in enumerate(self.blocks.items()):
            x = self._constrained_then_conv1(x, block.conv) if composed and k == 0 else block.conv(x)
            if (fuse and block.pool_first and fusable(block.bn, block.pool)
                    and f"{name}.pre" not in wanted and f"{name}.post" not in wanted):
                x = block.act(batch_norm_max_pool(x, block.bn, block.pool))
            else:
                x = block.bn(x)
                if f"{name}.pre" in wanted:
                    out[f"{name}.pre"] = x.mean(dim=(2, 3))
                if block.pool_first and f"{name}.post" not in wanted:
                    x = block.act(block.pool(x))
                else:
                    x = block.act(x)
                    if f"{name}.post" in wanted:
                        out[f"{name}.post"] = x.mean(dim=(2, 3))
                    x = block.pool(x)
            if f"{name}.pool" in wanted:
                out[f"{name}.pool"] = x.mean(dim=(2, 3))
            if len(out) == n_wanted:
                return out
        x = torch.flatten(x, 1)
        if self.jpeg is not None:  # the histograms only now, so conv-layer features never pay for them
            hist = self.jpeg_norm(out["jpeg"] if "jpeg" in out else self.jpeg(inp))
            if self.training and self.jpeg_dropout:  # branch dropout: some patches without histograms
                keep = torch.rand(hist.shape[0], 1, device=hist.device) >= self.jpeg_dropout
                hist = hist * keep.to(hist.dtype)
            x = torch.cat([x, hist], dim=1)
        for name, fc in self.fcs.items():
            x = fc(x)
            if f"{name}.pre" in wanted:
                out[f"{name}.pre"] = x
            x = self.fc_acts[name](x)
            if f"{name}.post" in wanted:
                out[f"{name}.post"] = x
            if len(out) == n_wanted:
                return out
        out["logits"] = self.classifier(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[N, num_classes]`` of uint8/float patches ``[N, (C,) P, P]``."""
        return self._run(x, ("logits",))["logits"]

    def forward_features(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """``{layer: [N, feature_dim(layer)]}`` for all ``layers`` (may include 'logits') in one pass.

        Stops after the deepest requested layer, so layers after it get no gradient:
        use ``forward`` for DDP training, this for feature extraction.
        """
        layers = list(layers)
        self._check_layers(layers)
        if not layers:
            return {}
        out = self._run(x, layers)
        return {name: out[name] for name in layers}

    def features(self, x: Tensor, layer: str | None = None) -> Tensor:
        """Feature f(X) ``[N, d]`` at ``layer`` (default ``self.feature_layer``, paper: fc_a2.pre)."""
        layer = self.feature_layer if layer is None else layer
        return self.forward_features(x, [layer])[layer]

