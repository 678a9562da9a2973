"""Structured configs of the data: the sources (``data`` group), the camera-model sets and image
split (``split``), the patches (``patches``) and ``camsim-data difficulty``'s settings.

Part of the schema of :mod:`camsim.config.schema`, which registers them in Hydra's ConfigStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from camsim.config.synth import SynthTraitsConfig

# --------------------------------------------------------------------------- data sources


@dataclass
class SynthDataConfig:
    """Simulated cameras rendered to the folder layout (``camsim.synth``)."""

    _target_: str = "camsim.data.sources.SynthSource"
    num_models: int = 30
    num_families: int = 6
    images_per_model: int = 120
    image_size: list[int] = field(default_factory=lambda: [256, 384])  # H, W
    seed: int = 0
    #: render processes; null: the cores this process may use (at most a container's CPU quota)
    workers: Optional[int] = None
    cache_dir: str = "${paths.artefact_dir}"
    jpeg_presets: int = 1  # deprecated alias of synth.jpeg.presets_per_model (FutureWarning)
    synth: SynthTraitsConfig = field(default_factory=SynthTraitsConfig)  # realism traits, all off (config/synth.py)


@dataclass
class FolderDataConfig:
    """``root/<camera_model>/*`` photo folders (Dresden / VISION layout)."""

    _target_: str = "camsim.data.sources.FolderSource"
    root: str = MISSING
    extensions: list[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".tif", ".tiff"])
    min_images: int = 1


@dataclass
class ExifDataConfig:
    """A flat folder grouped by EXIF Make + Model."""

    _target_: str = "camsim.data.layouts.ExifSource"
    root: str = MISSING
    extensions: list[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".tif", ".tiff"])
    recursive: bool = False
    min_images: int = 1


@dataclass
class DresdenDataConfig(FolderDataConfig):
    """The Dresden Image Database: one flat folder, model in the file name (``camsim.data.layouts``)."""

    _target_: str = "camsim.data.layouts.DresdenSource"


@dataclass
class VisionDataConfig(FolderDataConfig):
    """The VISION data set: ``Dxx_Make_Model/images/<variant>/`` (``camsim.data.layouts``)."""

    _target_: str = "camsim.data.layouts.VisionSource"
    #: image folders to read: flat, nat (camera originals), natFBH, natFBL (Facebook), natWA (WhatsApp)
    variants: list[str] = field(default_factory=lambda: ["flat", "nat"])



# --------------------------------------------------------------------------- splits / patches


@dataclass
class SplitConfig:
    """Camera-model sets (docs/method.md, "Camera-model sets") and the per-model image split.

    ``a``, ``b``, ``c``: a count drawn with ``seed`` from the source's models, or an explicit
    list of model names; ``a`` may also be ``rest`` (every model not in B or C).
    ``known``: a count drawn from A, or a list (⊂ A). C is drawn first, with ``c_seed``
    (default: ``seed``), so a sweep over ``seed`` can vary A and B at a fixed C.
    """

    a: Any = 10
    b: Any = 15
    c: Any = 5
    known: Any = 5
    #: models of B held out of Phase B's training and used for its validation (early stopping,
    #: checkpoint choice, eval.eta=auto), so those see models Phase B never trained on: a count
    #: drawn from B with ``seed``, or a list ⊂ B; 0: validate on B's own models (the paper)
    b_val: Any = 0
    seed: int = 0
    c_seed: Optional[int] = None
    #: train / val / test shares of each model's images (images, never patches, are split)
    image_fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    image_seed: int = 0


@dataclass
class PatchCountsConfig:
    """Patches per model and image subset (docs/method.md: 50k for A, 20k for B, 10k for eval)."""

    train_a: int = 1500
    val_a: int = 200
    train_b: int = 1500
    val_b: int = 200
    #: from test images: Phase A test accuracy (A) and the evaluation (known ⊂ A, and C)
    test: int = 300


@dataclass
class PatchConfig:
    size: int = 64
    #: patch corners are multiples of this (8 keeps the JPEG grid and the 2-px CFA phase)
    align: int = 8
    #: h = −Σ p_k ln p_k in nats; patches with h ≤ min_entropy are dropped (docs/method.md)
    min_entropy: float = 4.0
    per_model: PatchCountsConfig = field(default_factory=PatchCountsConfig)
    seed: int = 0
    #: images with more pixels are refused (decompression-bomb guard)
    max_pixels: int = 200_000_000
    workers: Optional[int] = None



# --------------------------------------------------------------------------- camsim-data difficulty


@dataclass
class DifficultyConfig:
    """``camsim-data difficulty``: hand-made-statistics classifiers on any source's photos."""

    #: camera models used (a seeded draw; null: all) — compare sources at the same count
    max_models: Optional[int] = None
    #: photos per model (null: all); alternate photos go to train and test
    photos_per_model: Optional[int] = None
    patches_per_photo: int = 20
    seed: int = 0


