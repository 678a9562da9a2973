"""The ``data.synth`` node: simulator realism, one sub-node per trait family (schema only; the
simulator validates and applies it in :mod:`camsim.synth.settings`).

Every default leaves its trait off, so the default render is the simulator's original one byte
for byte; ``conf/data/synth_real.yaml`` (``data=synth_real``) turns the realistic set on, and
each trait can be switched alone (e.g. ``data.synth.white_balance.per_photo=true``).
Fixed per model: CFA, demosaicing, colour matrix, tone curve, denoising, sharpening, chroma
subsampling, lens and sensor patterns; drawn per photo: JPEG preset / adaptive quality,
exposure, ISO, auto white balance, reduced image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the demosaicing algorithms the original catalogue draws from (camsim.synth.params.DEMOSAIC_METHODS)
DEFAULT_DEMOSAIC = ("bilinear", "malvar", "hamilton_adams")
#: JPEG qualities many makes share (camsim.synth.params.SHARED_JPEG_PRESETS)
DEFAULT_SHARED_QUALITIES = (75, 80, 85, 90, 95)


@dataclass
class SynthJpegConfig:
    #: qualities each model saves at, one drawn per photo: its own + presets_per_model - 1 from shared_qualities
    presets_per_model: int = 1
    #: the preset qualities several makes share (IJG scale 1..100)
    shared_qualities: list[int] = field(default_factory=lambda: list(DEFAULT_SHARED_QUALITIES))
    #: share of models whose quality adapts per photo to its content (busier photo -> lower quality)
    adaptive_share: float = 0.0
    #: share of models whose own quality is a fine one, 96–100 (as many real cameras save: steps of
    #: 1–2, the JPEG lattice nearly gone, so only pixel traces tell such models apart)
    fine_share: float = 0.0
    #: fine-quality models (own quality 96–100) never adapt their quality per photo (siblings included):
    #: adaptive_share is then the share of the other models that adapt (fixed-table cameras at Fine
    #: vs. file-size-controlled ones)
    fine_fixed: bool = False
    #: 0: IJG standard tables scaled by quality for every model; k >= 1: each family uses the IJG
    #: tables or one of k makers' own table shapes (several families may share one)
    table_families: int = 0


@dataclass
class SynthExposureConfig:
    #: auto-exposure error per photo, σ in EV (each model 0.5–1.5 × this)
    ev_sigma: float = 0.0
    #: ISO per photo around auto-ISO, σ in stops (noise level varies photo to photo)
    iso_sigma: float = 0.0


@dataclass
class SynthWhiteBalanceConfig:
    #: auto white balance per photo: gains move from the preset towards the photo's grey-world estimate
    per_photo: bool = False
    #: mean adaptation strength 0..1 (each model ±0.3 around it)
    strength: float = 0.6


@dataclass
class SynthNoiseConfig:
    #: row and column fixed-pattern offsets, σ as a multiple of the model's read noise (each model 0.5–1.5 ×)
    fixed_pattern: float = 0.0
    #: PRNU: σ of the per-pixel gain pattern (e.g. 0.01 = 1 %; each model 0.5–1.5 ×)
    prnu: float = 0.0


@dataclass
class SynthLensConfig:
    #: largest relative illumination loss at the frame corner (each model 0.3–1 × this)
    vignetting: float = 0.0
    #: largest lateral chromatic aberration: R/B shift against G at the corner, sensor px
    chromatic_aberration: float = 0.0


@dataclass
class SynthDemosaicConfig:
    #: algorithms families draw from: bilinear, malvar, hamilton_adams, ahd, frequency
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_DEMOSAIC))


@dataclass
class SynthResampleConfig:
    #: share of photos a (non-resampling) model saves at a reduced image size (its 0.7 or 0.8 setting)
    downscale_share: float = 0.0


@dataclass
class SynthFamilyConfig:
    #: 0: every model draws its own numbers around the family style; n >= 1: siblings copy the
    #: family's reference model and differ in exactly n trait groups (recorded as differs_in)
    differ_in: int = 0


@dataclass
class SynthScenesConfig:
    #: share of scenes with photo-like textures (sky gradient, foliage, text, skin) instead of
    #: dead leaves / bundled photos
    texture_share: float = 0.0
    #: scenes out of focus (depth of field, motion, haze): each scene blurred by a Gaussian of σ drawn
    #: uniformly in [0, defocus] output px, the same for every camera. Without it the simulator's
    #: scenes are sharp at pixel scale everywhere, so scene detail, not the camera, fills the residual;
    #: with it, the quick recipe's budget learns the simulated cameras far less well (docs/experiments.md,
    #: "Scene defocus"); 0 = none
    defocus: float = 0.0
    #: cast shadows: each scene has a region (20–60 % of the frame, edges 0.5–4 output px soft) lit
    #: less by a depth drawn uniformly in [0, shadow_ev] EV, the same for every camera. Real photos
    #: hold sunlit and shaded parts side by side (their patches' mean grey levels span 1.5-1.9 times the
    #: simulator's without it: docs/experiments.md, "Cast shadows"); 0 = none
    shadow_ev: float = 0.0


@dataclass
class SynthProcessingConfig:
    #: full-resolution smoothing after demosaicing (the ISP's noise reduction / demosaic refinement
    #: at full resolution), Gaussian σ in px, each model 0.7–1.3 × this; 0 = none. Real camera JPEGs
    #: show almost no difference in residual energy between the two green CFA lattices; without
    #: it the simulator's green does (docs/experiments.md, "What the simulator's pixels look like")
    smoothing: float = 0.0


@dataclass
class SynthTraitsConfig:
    """Simulator realism (``data.synth``); see the module docstring."""

    jpeg: SynthJpegConfig = field(default_factory=SynthJpegConfig)
    exposure: SynthExposureConfig = field(default_factory=SynthExposureConfig)
    white_balance: SynthWhiteBalanceConfig = field(default_factory=SynthWhiteBalanceConfig)
    noise: SynthNoiseConfig = field(default_factory=SynthNoiseConfig)
    lens: SynthLensConfig = field(default_factory=SynthLensConfig)
    demosaic: SynthDemosaicConfig = field(default_factory=SynthDemosaicConfig)
    resample: SynthResampleConfig = field(default_factory=SynthResampleConfig)
    family: SynthFamilyConfig = field(default_factory=SynthFamilyConfig)
    scenes: SynthScenesConfig = field(default_factory=SynthScenesConfig)
    processing: SynthProcessingConfig = field(default_factory=SynthProcessingConfig)


#: trait keys added after renders and checkpoints had been keyed (node -> keys)
LATER_KEYS: dict[str, tuple[str, ...]] = {"processing": ("smoothing",), "scenes": ("defocus", "shadow_ev"),
                                          "jpeg": ("fine_fixed",)}
#: later keys that act only through another key of their node (key -> that key): off while it is off
_ACTS_THROUGH = {"fine_fixed": "adaptive_share"}


def without_later_keys_off(synth: dict) -> dict:
    """A plain ``data.synth`` dict without the :data:`LATER_KEYS` that are off, or that act only
    through a key that is off (and without a node left empty by that), so that render caches and
    checkpoint records made before those keys existed keep their keys."""
    out = {}
    for node, values in synth.items():
        later, values = LATER_KEYS.get(node, ()), values or {}
        values = {k: v for k, v in values.items()
                  if k not in later or (v and values.get(_ACTS_THROUGH.get(k, k)))} if later else values
        if values or node not in LATER_KEYS:
            out[node] = values
    return out
