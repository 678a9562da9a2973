"""Localisation with a trained similarity network: one image, or a folder in batch mode.

Features are computed once per patch by the frozen backbone; every pair is scored from
them by the similarity head (:meth:`SimilarityNet.score_matrix`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camsim.data.io import ImageReadError, read_green, read_rgb
from camsim.localize.engine import LocalizationResult, localize
from camsim.localize.grid import LocalizationError
from camsim.localize.outputs import write_outputs
from camsim.progress import track

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
CSV_COLUMNS = ["image", "status", "decision", "score", "mode", "decidable_patches", "patches", "suspect_share",
               "out_dir", "message"]


class Localizer:
    """A similarity checkpoint turned into the engine's ``extract`` / ``score_matrix`` callables."""

    def __init__(self, sim: Any, batch: int = 256, channels_last: bool = True, compile: bool = False):
        from camsim.lit.phase_a import FeaturePass

        self.sim = sim.eval()
        self.batch = batch
        self.patch = sim.patch_size
        self.feature_pass = FeaturePass(sim.backbone, [sim.feature_layer], channels_last=channels_last,
                                        compile=compile)

    def extract(self, patches: np.ndarray) -> np.ndarray:
        """f(X) of uint8 patches ``[N, P, P]`` (the frozen backbone's feature pass)."""
        return self.feature_pass.extract(patches)[self.sim.feature_layer]

    @torch.no_grad()
    def score_matrix(self, F: np.ndarray, G: np.ndarray | None) -> np.ndarray:
        f = torch.from_numpy(F).to(self.sim.device)
        g = None if G is None else torch.from_numpy(G).to(self.sim.device)
        return self.sim.head.score_matrix(f, g).cpu().numpy()

    def run(self, green: np.ndarray, opts: Any, progress: bool = False) -> LocalizationResult:
        ref = opts.reference
        if ref is not None and not isinstance(ref, str):
            ref = (int(ref[0]), int(ref[1]))
        return localize(green, self.extract, self.score_matrix, self.patch,
                        stride=opts.stride, min_entropy=float(opts.min_entropy), mode=str(opts.mode),
                        reference=ref, eta=float(opts.eta), batch=self.batch,
                        decision_threshold=opts.decision_threshold, progress=progress)


def localize_file(loc: Localizer, path: Path, out_dir: Path, opts: Any, max_pixels: int) -> tuple[LocalizationResult, str]:
    """Localise one image file; write overlay/heatmap/scores/mask into ``out_dir``."""
    green = read_green(path, max_pixels=max_pixels)
    result = loc.run(green, opts, progress=True)
    rgb = read_rgb(path, max_pixels=max_pixels)
    line = write_outputs(result, out_dir, rgb=rgb)
    return result, f"{path.name}: {line}"


def localize_folder(loc: Localizer, folder: Path, out_dir: Path, opts: Any, max_pixels: int) -> Path:
    """Batch mode: every image of ``folder``; one CSV row per image (failures say why)."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    rows = []
    for path in track(images, desc=f"localising {len(images)} images"):
        row = {"image": str(path), "out_dir": "", "mode": opts.mode}
        try:
            result, _ = localize_file(loc, path, out_dir / path.stem, opts, max_pixels)
            row.update(status="ok", decision="spliced" if result.decision else "not spliced",
                       score=f"{result.score:.4f}", decidable_patches=result.n_decidable, patches=len(result.positions),
                       suspect_share=f"{float(result.mask.mean()):.4f}", out_dir=str(out_dir / path.stem),
                       message=result.message)
        except (ImageReadError, LocalizationError) as err:
            row.update(status="error", message=str(err))
            log.warning("%s: %s", path, err)
        rows.append(row)
    out = out_dir / "localize.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return out


def check_reference(ref: Any) -> Sequence[int] | str | None:
    if ref is None or ref == "auto":
        return ref
    if isinstance(ref, str) or len(ref) != 2:
        raise ValueError(f"localize.reference must be 'auto' or [y, x] pixel coordinates, got {ref!r}")
    return ref
