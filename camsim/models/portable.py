"""An exported similarity network, loaded with torch alone (``camsim-export``'s folder).

A folder written by ``camsim-export`` holds ``model.safetensors`` (the backbone's and the head's
tensors, the names of a Phase B checkpoint's ``state_dict``), ``config.json`` (everything that
rebuilds them, the decision threshold η, the input convention, the training record, library
versions and a sha256 of every other file) and ``README.md`` (the model card). Optionally
``features.onnx`` and ``head.onnx`` (:func:`export_onnx`).

This module imports torch, numpy, safetensors and :mod:`camsim.models` only — no Lightning, no
Hydra — so a trained network scores patches anywhere torch runs::

    net = load_exported("my-model")      # checksums verified
    s = net.score(patches_1, patches_2)  # S in [0, 1]; "same camera model" when S > net.eta

Patches are green-channel uint8 ``[N, P, P]`` (or ``[N, 1, P, P]``; a network with
``in_channels=3`` takes RGB ``[N, 3, P, P]``), cut as in training (the
training record's ``patches``: size, 8-px alignment to the JPEG grid, entropy threshold).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from camsim.models.backbone import Backbone
from camsim.models.similarity import SimilarityNet
from camsim.plain import file_sha256

__all__ = ["CONFIG", "FORMAT", "FORMAT_VERSION", "WEIGHTS", "PortableSimilarity", "check_network_spec",
           "check_onnx", "export_onnx", "file_sha256",
           "load_exported", "read_config", "read_exported", "save_weights", "weights_file"]

#: what ``config.json`` declares itself to be; a newer layout raises its version
FORMAT, FORMAT_VERSION = "camsim-similarity", 1
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
ONNX_FILES = ("features.onnx", "head.onnx")
#: the networks a config may name (``_target_``): an allow-list, nothing else is imported
NETWORKS: dict[str, type[nn.Module]] = {"camsim.models.backbone.Backbone": Backbone,
                                        "camsim.models.similarity.SimilarityNet": SimilarityNet}


def weights_file(path: str | Path) -> Path:
    """The weights file behind a network path: an exported folder's :data:`WEIGHTS`, a checkpoint
    file itself (its identity keys the feature cache)."""
    path = Path(path)
    return path / WEIGHTS if path.is_dir() else path


def save_weights(state_dict: Mapping[str, Tensor], path: str | Path) -> dict:
    """Write ``state_dict`` as safetensors (contiguous CPU copies); returns ``{"sha256", "bytes"}``."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT})
    return {"sha256": file_sha256(path), "bytes": Path(path).stat().st_size}


def read_config(folder: str | Path) -> dict:
    """``config.json`` of an exported folder, its format checked; one clear error naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder} (camsim-export ckpt=... out={folder} writes one)")
    path = folder / CONFIG
    if not path.is_file():
        hint = f"; it holds a checkpoint: ckpt={folder / 'model.ckpt'}" if (folder / "model.ckpt").is_file() else ""
        raise FileNotFoundError(f"{path}: missing — {folder} is not a camsim-export folder "
                                f"(it needs {CONFIG} and {WEIGHTS}){hint}")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); export the network again with camsim-export") from err
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{path}: not a camsim-export config (format is {cfg.get('format') if isinstance(cfg, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {cfg.get('format_version')!r} is not {FORMAT_VERSION} "
                         "(written by another camsim version: upgrade camsim or export again)")
    for key in ("architecture", "files"):
        if not isinstance(cfg.get(key), dict):
            raise ValueError(f"{path}: no {key!r} section (truncated or edited by hand?)")
    return cfg


def verify_file(folder: str | Path, name: str, cfg: dict) -> Path:
    """``folder/name`` after checking it exists and matches the sha256 that ``config.json`` records."""
    path = Path(folder) / name
    want = (cfg["files"].get(name) or {}).get("sha256")
    if want is None:
        raise ValueError(f"{Path(folder) / CONFIG}: records no checksum for {name}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (config.json lists it); copy the whole exported folder")
    got = file_sha256(path)
    if got != want:
        raise ValueError(f"{path}: sha256 {got[:16]}… does not match config.json's {want[:16]}… "
                         "(changed, truncated or from another export); copy or export it again")
    return path


def read_exported(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """``(config, state_dict)`` of an exported folder, the weights' checksum verified."""
    cfg = read_config(folder)
    path = verify_file(folder, WEIGHTS, cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    return cfg, state


def _nested_targets(obj: Any, where: str) -> list[str]:
    """Where ``obj`` names a ``_target_`` (dotted paths below ``where``)."""
    found: list[str] = []
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        sub = f"{where}.{k}" if isinstance(obj, Mapping) else f"{where}[{k}]"
        found += [sub] if k == "_target_" else _nested_targets(v, sub)
    return found


def check_network_spec(spec: Any, field: str, where: str | Path, any_module: bool = False) -> None:
    """Refuse a network config (``_target_`` dict) from a file before anything is built from it:
    instantiating it imports and calls what it names, so a shared checkpoint or folder could
    otherwise run any code on load. Its ``_target_`` must be a camsim network (:data:`NETWORKS`)
    or, with ``any_module`` (a checkpoint trained from a researcher's own backbone), a class
    deriving from ``torch.nn.Module``; no setting inside it may name a ``_target_``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: {field} is not a network config ({type(spec).__name__})")
    nested = _nested_targets({k: v for k, v in spec.items() if k != "_target_"}, field)
    if nested:
        raise ValueError(f"{where}: {nested[0]} names a class inside a network's settings; refused "
                         "(only the network itself may name one: a file from elsewhere must not run code)")
    target = spec.get("_target_")
    if target in NETWORKS:
        return
    if any_module and isinstance(target, str):
        # a module this process has already imported (torch.nn, the researcher's own, imported before
        # loading): importing one a file names would run its top-level code
        module, _, name = target.rpartition(".")
        cls = getattr(sys.modules.get(module), name, None) if module else None
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return
    raise ValueError(f"{where}: {field}._target_ {target!r} is not a camsim network (known: {sorted(NETWORKS)})"
                     + ("" if not any_module else " nor a torch.nn.Module class of a module already imported (a "
                        "backbone of your own: import its module before loading the checkpoint)"))


def build_network(spec: Mapping[str, Any], field: str, **kwargs: Any) -> nn.Module:
    """A network from a ``_target_`` config (the allow-list :data:`NETWORKS`) and extra arguments."""
    check_network_spec(spec, field, CONFIG)
    args = {k: v for k, v in spec.items() if k != "_target_"}
    return NETWORKS[spec["_target_"]](**args, **kwargs)


def load_state(module: nn.Module, state: Mapping[str, Tensor], where: str | Path) -> None:
    """``module.load_state_dict(state)`` (strict) with one clear error naming ``where``."""
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise ValueError(f"{where}: its tensors do not fit the architecture in {CONFIG} ({first})") from None


class PortableSimilarity(nn.Module):
    """Backbone → ``feature_layer`` → similarity head, rebuilt from ``config.json``'s
    ``architecture`` (the Phase B network of docs/method.md without its training machinery).

    ``forward(a, b)``: logits of "same camera model" for uint8 patches; :meth:`score`: S = sigmoid(logit);
    the decision is S > :attr:`eta`, for patches on the :attr:`align`-px grid with entropy above
    :attr:`min_entropy` (``camsim.data.patches.patch_entropy``)."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        arch = config["architecture"]
        self.patch_size = int(arch["patch_size"])
        self.feature_layer = str(arch["feature_layer"])
        self.eta = float(config.get("eta", {}).get("value", 0.5))
        inp = config.get("input") or {}
        #: the training recipe's patch filter: patches of entropy ≤ this (nats) are undecidable
        #: (flat sky, dark frames; 4.0 where the checkpoint recorded none, as camsim-localize)
        self.min_entropy = float(inp["min_entropy"]) if inp.get("min_entropy") is not None else 4.0
        #: the grid patches were cut on (8: the JPEG grid)
        self.align = int(inp.get("align") or 8)
        self.backbone = build_network(arch["backbone"], "architecture.backbone",
                                      num_classes=len(arch["class_names"]), patch_size=self.patch_size)
        self.head = build_network(arch["head"], "architecture.head",
                                  in_features=self.backbone.feature_dim(self.feature_layer))
        self.eval()

    def _patches(self, x: Tensor | np.ndarray, name: str) -> Tensor:
        x = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if x.dtype != torch.uint8 or x.dim() not in (3, 4) or tuple(x.shape[-2:]) != (self.patch_size,) * 2:
            c, p = self.backbone.in_channels, self.patch_size
            want = f"[N, {p}, {p}] (green channel) or [N, 1, {p}, {p}]" if c == 1 else f"[N, {c}, {p}, {p}] (RGB)"
            raise ValueError(f"{name}: expected uint8 patches {want}, 0..255, got {x.dtype} {tuple(x.shape)}")
        return (x.unsqueeze(1) if x.dim() == 3 else x).to(next(self.parameters()).device)

    def features(self, x: Tensor | np.ndarray) -> Tensor:
        """f(X) of uint8 patches at the feature layer, ``[N, d]``."""
        return self.backbone.features(self._patches(x, "x"), self.feature_layer)

    def forward(self, a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor:
        """Logits ``[N]`` of "same camera model" for two batches of N uint8 patches."""
        return self.head(self.backbone.features(self._patches(a, "a"), self.feature_layer),
                         self.backbone.features(self._patches(b, "b"), self.feature_layer))

    @torch.no_grad()
    def score(self, a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor:
        """S = sigmoid(logit) in [0, 1] for each pair (eval mode: no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(a, b))
        finally:
            self.train(was_training)


def load_exported(folder: str | Path, map_location: str = "cpu") -> PortableSimilarity:
    """The network of a ``camsim-export`` folder in eval mode, its files checked against ``config.json``."""
    cfg, state = read_exported(folder)
    net = PortableSimilarity(cfg)
    load_state(net, state, Path(folder) / WEIGHTS)
    return net.to(map_location).eval()


class _Features(nn.Module):
    def __init__(self, net: PortableSimilarity):
        super().__init__()
        self.backbone, self.layer = net.backbone, net.feature_layer

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.features(x, self.layer)


def export_onnx(net: PortableSimilarity, folder: str | Path, opset: int = 18) -> dict[str, dict]:
    """``features.onnx`` (uint8 ``[N, C, P, P]``, C the backbone's ``in_channels`` → f(X) ``[N, d]``) and ``head.onnx`` (f1, f2 → logits
    ``[N]``) of ``net`` in ``folder``, batch size dynamic; returns ``{name: {"sha256", "bytes"}}``.
    Needs the ``onnx`` extra (``pip install camsim[onnx]``: onnx, onnxscript)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before torch does)
        import onnxruntime  # noqa: F401  (check_onnx runs the graphs written)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError(f"onnx=true needs the onnx extra ({err.name} is not installed): "
                         "pip install 'camsim[onnx]'") from None
    folder = Path(folder)
    net = net.eval().to("cpu")
    p = net.patch_size
    x = torch.zeros(2, net.backbone.in_channels, p, p, dtype=torch.uint8)
    f = _Features(net)(x)
    batch = torch.export.Dim("batch", min=1)
    jobs = {"features.onnx": (_Features(net), (x,), ("patches",), ("features",), {"x": {0: batch}}),
            "head.onnx": (net.head, (f, f.clone()), ("f1", "f2"), ("logits",), {"f1": {0: batch}, "f2": {0: batch}})}
    out = {}
    # the exporter's own chatter (skipped torchvision ops, graph passes) is no news to a user
    loggers = {n: logging.getLogger(n) for n in ("torch.onnx", "onnx_ir", "onnxscript")}
    levels = {n: lg.level for n, lg in loggers.items()}
    try:
        for lg in loggers.values():
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, (module, args, inputs, outputs, shapes) in jobs.items():
                path = folder / name
                program = torch.onnx.export(module, args, dynamo=True, input_names=list(inputs),
                                            output_names=list(outputs), dynamic_shapes=shapes, opset_version=opset,
                                            verbose=False)
                program.save(str(path))
                out[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    finally:
        for n, lg in loggers.items():
            lg.setLevel(levels[n])
    return out


#: largest relative difference (of the largest value) check_onnx accepts: onnxruntime's kernels sum in
#: other orders than torch's (measured on the quick recipe's network: ~2e-7 features, ~1e-6 logits); an
#: operator exported wrong is off by far more
ONNX_TOLERANCE = 1e-4


def check_onnx(net: PortableSimilarity, folder: str | Path, n: int = 5, seed: int = 0) -> dict:
    """Run the graphs :func:`export_onnx` wrote (onnxruntime) on ``n`` random uint8 patch pairs — a
    batch size other than the export's — against ``net``: ``{"features", "logits"}`` max abs
    errors, relative to the largest value, with the onnxruntime version. ValueError naming the file
    when one is off by more than :data:`ONNX_TOLERANCE` (an operator exported wrong)."""
    import onnxruntime as ort

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 256, (n, net.backbone.in_channels, net.patch_size, net.patch_size), dtype=np.uint8)
            for _ in range(2))
    feats = ort.InferenceSession(str(folder / "features.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(folder / "head.onnx"), providers=["CPUExecutionProvider"])
    fa, fb = (feats.run(None, {"patches": x})[0] for x in (a, b))
    logits = head.run(None, {"f1": fa, "f2": fb})[0]
    with torch.no_grad():
        ref_f, ref = net.features(a).numpy(), net(a, b).numpy()
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "pairs": n}
    for name, got, want, file in (("features", fa, ref_f, "features.onnx"), ("logits", logits, ref, "head.onnx")):
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))
        out[f"{name}_relative_error"] = err
        if err > ONNX_TOLERANCE:
            raise ValueError(f"{folder / file}: its {name} differ from the PyTorch network's by {err:.2e} of their "
                             f"largest value (more than {ONNX_TOLERANCE:g}): an operator did not export right")
    return out
