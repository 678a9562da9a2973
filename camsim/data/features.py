"""FeatureStore: f(X) (and the classifier's softmax) per patch set, per (backbone, feature_layer).

The backbone is frozen in Phase B and in evaluation, so each patch's features are computed
once and cached in ``<artefact_dir>/features-<hash>/`` (``features.npy``, ``probs.npy``);
a Phase B epoch then costs only the similarity head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from camsim.artefacts import cached_dir
from camsim.data.store import PatchSet


class FeatureStore:
    """Cached features of patch sets for one backbone (named by ``backbone_id``) and layer."""

    def __init__(self, artefact_dir: Path, backbone: torch.nn.Module, backbone_id: str, layer: str,
                 batch_size: int = 512):
        self.root, self.backbone, self.backbone_id = Path(artefact_dir), backbone, backbone_id
        self.layer, self.batch_size = layer, batch_size
        backbone.feature_dim(layer)  # fail early, naming the valid layers

    def get(self, ps: PatchSet) -> tuple[np.ndarray, np.ndarray]:
        """``(features [n, d] float32, softmax [n, |A|] float32)`` of a patch set."""
        from camsim.lit.phase_a import extract_features

        def build(tmp: Path) -> None:
            f, p = extract_features(self.backbone, ps.patches, self.layer, self.batch_size, with_probs=True,
                                    desc=f"features {ps.model}/{ps.subset}")
            np.save(tmp / "features.npy", f.astype(np.float32))
            np.save(tmp / "probs.npy", p.astype(np.float32))

        key = {"backbone": self.backbone_id, "layer": self.layer, "patches": ps.path.name}
        d = cached_dir(self.root, "features", key, build)
        return np.load(d / "features.npy"), np.load(d / "probs.npy")

    def features(self, ps: PatchSet) -> np.ndarray:
        return self.get(ps)[0]
