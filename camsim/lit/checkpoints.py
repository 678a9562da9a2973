"""Checkpoints of the learning phases: telling their kinds apart, loading them with one clear
error, writing them atomically and choosing a sound one to resume from.

A checkpoint cut short (disk full, a killed job) must never be taken for a good one: files are
written to a temporary name beside the destination and renamed into place
(:class:`AtomicCheckpointIO`), and :func:`resume_from` verifies a checkpoint before a phase
resumes from it.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from camsim.models.portable import check_network_spec

log = logging.getLogger("camsim")


#: what each kind of checkpoint holds in its hyper-parameters, to tell them apart
CHECKPOINT_KINDS = {
    "phase_b": ("Phase B similarity network", ("phase_a", "head", "feature_layer"),
                "outputs/artefacts/phase_b-<hash>/model.ckpt"),
    "phase_a": ("Phase A camera-model classifier", ("backbone", "class_names", "patch_size"),
                "outputs/artefacts/phase_a-<hash>/model.ckpt"),
}


def _hyper_parameters(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters") or {}
    except Exception as err:  # zip/pickle errors of a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(err).__name__}); "
                         "restore it or train it again") from err


def _kind(path: Path, hp: dict) -> str:
    for kind, (_, keys, _) in CHECKPOINT_KINDS.items():
        if all(k in hp for k in keys):
            return kind
    raise ValueError(f"{path}: not a camsim checkpoint (its hyper-parameters hold none of a Phase A or B network)")


def checkpoint_kind(ckpt: str | Path) -> str:
    """``"phase_a"`` or ``"phase_b"`` for a camsim checkpoint; ValueError naming the file for a
    truncated, corrupt or foreign one (read with ``weights_only=True``)."""
    path = Path(ckpt)
    return _kind(path, _hyper_parameters(path))


def load_checkpoint(cls: type[L.LightningModule], ckpt: str | Path, kind: str,
                    map_location: str = "cpu") -> L.LightningModule:
    """A checkpoint of ``kind`` loaded as ``cls`` (``weights_only=True``: tensors and plain
    containers only) in eval mode; one clear line when the file is missing, unreadable or of
    the other kind. The networks its hyper-parameters name are checked before they are built
    (:func:`~camsim.models.portable.check_network_spec`): a checkpoint from elsewhere runs no code."""
    path = Path(ckpt)
    hp = _hyper_parameters(path)
    got = _kind(path, hp)
    if got != kind:
        what, _, example = CHECKPOINT_KINDS[kind]
        raise ValueError(f"{ckpt} is a {CHECKPOINT_KINDS[got][0]} checkpoint; a {what} checkpoint is needed "
                         f"(e.g. {example})")
    specs = {"backbone": hp["backbone"]} if kind == "phase_a" else \
        {"phase_a.backbone": (hp["phase_a"] or {}).get("backbone"), "head": hp["head"]}
    for field, spec in specs.items():
        check_network_spec(spec, field, path, any_module=True)
    model = cls.load_from_checkpoint(str(ckpt), map_location=map_location, weights_only=True)
    model.eval()
    return model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic on the destination's file system: the checkpoint
    goes to ``.<name>.tmp-<pid>`` in the same folder, is flushed to disk, then renamed over
    ``<name>`` — a full disk or a killed job leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO: storage_options are not supported")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class RandomState(L.Callback):
    """The random generators' state (torch's, CUDA's, Python's, numpy's) saved in every checkpoint
    and restored when a phase resumes from it: epoch k+1 of a resumed phase draws the shuffles,
    dropout masks and augmentations epoch k+1 of an uninterrupted one draws — Lightning itself
    restores the weights, optimiser, scheduler and counters, not these. Plain tensors and ints, so
    checkpoints still load with ``weights_only=True``."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, next_gauss = random.getstate()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": [version, list(internal), next_gauss],
                "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            return  # rank 0's state only was saved: the ranks keep the generators they were seeded with
        torch.set_rng_state(state["torch"])
        if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        version, internal, next_gauss = state["python"]
        random.setstate((version, tuple(internal), next_gauss))
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def resume_from(candidates: Sequence[Path]) -> Path | None:
    """The first of ``candidates`` (e.g. last.ckpt, then best.ckpt) that exists and reads as a
    checkpoint with its training state; each unusable one is named in a warning. ``None``: start
    the phase afresh."""
    for k, path in enumerate(candidates):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not {"state_dict", "optimizer_states", "epoch"} <= set(state):
                raise ValueError("no training state in it")
        except Exception as err:  # a truncated zip, a foreign file
            log.warning("  cannot resume from %s (%s: %s): %s", path, type(err).__name__, err,
                        "trying the next checkpoint" if any(p.exists() for p in candidates[k + 1:])
                        else "starting this phase afresh")
            continue
        return path
    return None
