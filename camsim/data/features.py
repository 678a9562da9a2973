"""FeatureStore: f(X) (and the classifier's softmax) per patch set, per (backbone, feature_layer).

The backbone is frozen in Phase B and in evaluation, so each patch's features are computed
once and cached in ``<artefact_dir>/features-<hash>/`` (``features.npy``, ``probs.npy``);
a Phase B epoch then costs only the similarity head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from camsim.artefacts import cached_dir, content_hash, file_identity
from camsim.data.store import PatchSet
from camsim.models.feature_pass import FeaturePass
from camsim.models.portable import weights_file


def checkpoint_backbone_id(ckpt: Path) -> str:
    """The ``backbone_id`` of a backbone loaded from a checkpoint file or an exported model
    folder (``ckpt=`` / ``model=DIR``): the identity of its :func:`~camsim.models.portable.weights_file`,
    so a retrained or replaced network never reads another's cached features."""
    return "ckpt-" + content_hash(file_identity(weights_file(ckpt)))


class FeatureStore:
    """Cached features of patch sets for one backbone (named by ``backbone_id``) and layer."""

    def __init__(self, artefact_dir: Path, backbone: torch.nn.Module, backbone_id: str, layer: str,
                 channels_last: bool = True, compile: bool = False):
        self.root, self.backbone_id, self.layer = Path(artefact_dir), backbone_id, layer
        # one pass for every patch set: a compiled pass compiles once
        self.feature_pass = FeaturePass(backbone, [layer, "logits"], channels_last=channels_last, compile=compile)

    def get(self, ps: PatchSet) -> tuple[np.ndarray, np.ndarray]:
        """``(features [n, d] float32, softmax [n, |A|] float32)`` of a patch set."""
        def build(tmp: Path) -> None:
            out = self.feature_pass.extract(ps.patches, desc=f"features {ps.model}/{ps.subset}")
            probs = torch.softmax(torch.from_numpy(out["logits"]), dim=1).numpy()
            np.save(tmp / "features.npy", out[self.layer].astype(np.float32))
            np.save(tmp / "probs.npy", probs.astype(np.float32))

        key = {"backbone": self.backbone_id, "layer": self.layer, "patches": ps.path.name}
        d = cached_dir(self.root, "features", key, build)
        return np.load(d / "features.npy"), np.load(d / "probs.npy")

    def features(self, ps: PatchSet) -> np.ndarray:
        return self.get(ps)[0]

    def extract(self, patches: np.ndarray) -> np.ndarray:
        """f(X) ``[n, d]`` float32 of uint8 patches ``[n, P, P]`` not in a patch set (not cached)."""
        return self.feature_pass.extract(patches, desc="features (re-saved twins)")[self.layer].astype(np.float32)


def drop_stale_features(root: Path, backbone_id: str) -> list[Path]:
    """Remove the feature caches of an earlier backbone named ``backbone_id``: a Phase A artefact
    deleted and trained again comes back under its name, but its weights need not be the same
    (another machine, a GPU), so features cached from the old one must not be read as its own.
    Called before a new Phase A artefact is published; returns what it removed."""
    gone = []
    for d in sorted(Path(root).glob("features-*")):
        try:
            key = json.loads((d / "key.json").read_text())
        except (OSError, ValueError):
            continue
        if key.get("backbone") == backbone_id:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone

