"""Camera-model parameter records, camera families ("manufacturers") and the seeded catalogue.

A simulated camera model is a :class:`CameraParams` record: every number its pipeline
(``camsim.synth.isp``) needs, JSON-serialisable, validated on construction. A
:class:`CameraFamily` holds the "house style" that a manufacturer's models share; each model
draws a few sensor / lens / firmware parameters of its own around it, so, like real
same-brand cameras, some pairs are hard to tell apart (``docs/method.md``, "Hard cases").

Parameter ranges (each from real cameras; family = shared by the family's models):

========================  =========================================  ===================
field                     range                                      drawn per
========================  =========================================  ===================
cfa                       RGGB, BGGR, GRBG, GBRG                      family (7.5 % of
                                                                      models differ)
demosaic                  bilinear, malvar (He–Cutler gradient-       family (10 % of
                          corrected), hamilton_adams (edge-directed)  models differ)
blur_sigma                0.35–0.9 px Gaussian PSF (lens + OLPF)      model
full_well                 phone 3 000–7 000 e⁻, compact 6 000–        family class,
                          15 000, DSLR 20 000–45 000 (base ISO)        model ×0.8–1.25
read_noise                1.5–6 e⁻ rms                                model
adc_bits                  10 (phone), 12 (compact), 12/14 (DSLR)      family class
iso_min / iso_max         50–100 / 800–6400                           family class
wb_gains (R, G, B)        R 1.6–2.4, G 1, B 1.3–2.0 (daylight preset) family, model ±5 %
colour_matrix             camera RGB → linear sRGB, rows sum to 1,    family, model
                          diagonal R 1.4–2.1, G 1.2–1.8, B 1.3–2.1,   (±0.05 saturation
                          off-diagonal ≤ 0 (non-negative inverse =    and mixing)
                          the sensor's colour response)
exposure_ev               −0.3…+0.3 EV auto-exposure bias             family, model ±0.1
denoise_luma              0–1.2 × noise σ (edge-preserving range      family, model ±0.15
                          scale of the luma filter)
denoise_chroma            0.5–2 px Gaussian on colour differences     family
gamma                     2.0–2.5 (tone curve exponent, linear toe)   family, model ±0.05
contrast                  0–0.35 (S-curve strength)                   family, model ±0.03
sharpen_radius            0.6–1.6 px (unsharp-mask Gaussian σ)        family
sharpen_amount            0.2–1.2                                     family, model ×0.8–1.25
resample_scale            1 (none); else 0.625, 0.75, 0.8 (reduced     model (15 %)
                          image size) or 1.25 (digital zoom)
resample_kernel           bilinear, bicubic, lanczos                  model
jpeg_quality              75–98 (IJG scale): family 80–98, 40 % of    family, model
                          models ±1–4 (clipped to 75–98)
jpeg_subsampling          444, 422, 420                               family
========================  =========================================  ===================

The realism traits of ``data.synth`` (lens, sensor patterns, per-photo conditions, JPEG tables,
siblings; all off by default) are drawn in :mod:`camsim.synth.traits`.
Model ``k`` of catalogue seed ``s`` depends only on ``(s, k, num_families)`` — never on
``num_models`` —, so a larger catalogue extends a smaller one camera for camera.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
DEMOSAIC_METHODS: tuple[str, ...] = ("bilinear", "malvar", "hamilton_adams")
"""The demosaicing algorithms the catalogue draws from by default."""
ALL_DEMOSAIC_METHODS: tuple[str, ...] = (*DEMOSAIC_METHODS, "ahd", "frequency")
"""Every algorithm :func:`camsim.synth.isp.demosaic` implements (``synth.demosaic.methods``)."""
RESAMPLE_KERNELS: tuple[str, ...] = ("bilinear", "bicubic", "lanczos")
JPEG_SUBSAMPLINGS: tuple[str, ...] = ("444", "422", "420")
RESAMPLE_SCALES: tuple[float, ...] = (0.625, 0.75, 0.8, 1.25)
"""The resampling factors the catalogue draws from (output size / sensor size)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Seed-sequence tags, so that the family, model and scene streams never collide.
TAG_FAMILY = 0x46414D  # "FAM"
TAG_MODEL = 0x4D4F44  # "MOD"
TAG_PRESETS = 0x4A5051  # "JPQ"
#: JPEG qualities shared by many cameras' presets (scaled standard tables): where the further
#: presets of ``make_catalogue(..., jpeg_presets > 1)`` come from
SHARED_JPEG_PRESETS: tuple[int, ...] = (75, 80, 85, 90, 95)
#: trait groups in which a sibling may differ from its family's reference model
#: (``data.synth.family.differ_in``; camsim.synth.traits) and the fields each one holds
SIBLING_TRAITS: dict[str, tuple[str, ...]] = {
    "cfa": ("cfa",), "demosaic": ("demosaic",), "lens": ("blur_sigma", "vignetting", "lateral_ca"),
    "sensor": ("full_well", "read_noise", "row_noise", "column_noise", "prnu"),
    "colour": ("wb_gains", "colour_matrix", "awb_strength"),
    "tone": ("gamma", "contrast", "exposure_ev", "ae_sigma", "iso_sigma"),
    "processing": ("denoise_luma", "denoise_chroma", "sharpen_radius", "sharpen_amount", "smoothing"),
    "resample": ("resample_scale", "resample_kernel", "downscale_share", "downscale_scale"),
    "jpeg": ("jpeg_quality", "jpeg_presets", "jpeg_adaptive"),
}


class CameraParamsError(ValueError):
    """An invalid camera parameter; the message names the field and the reason."""


@dataclass(frozen=True)
class CameraParams:
    """One simulated camera model: every parameter of its pipeline (see module docstring)."""

    name: str
    family: str
    # sensor: colour filter array and its demosaicing, optical blur
    cfa: str = "RGGB"
    demosaic: str = "malvar"
    blur_sigma: float = 0.6
    # sensor noise: photon (full well) and read noise, quantisation, ISO range
    full_well: float = 8000.0
    read_noise: float = 3.0
    adc_bits: int = 12
    iso_min: int = 100
    iso_max: int = 1600
    # colour: white balance, camera-to-sRGB matrix, exposure
    wb_gains: tuple[float, float, float] = (2.0, 1.0, 1.6)
    colour_matrix: tuple[tuple[float, float, float], ...] = (
        (1.6, -0.45, -0.15), (-0.25, 1.5, -0.25), (-0.05, -0.55, 1.6))
    exposure_ev: float = 0.0
    # processing: denoising
    denoise_luma: float = 0.5
    denoise_chroma: float = 1.0
    # tone curve and sharpening
    gamma: float = 2.2
    contrast: float = 0.15
    sharpen_radius: float = 1.0
    sharpen_amount: float = 0.6
    # output: in-camera resampling and JPEG
    resample_scale: float = 1.0
    resample_kernel: str = "bicubic"
    jpeg_quality: int = 92
    jpeg_subsampling: str = "420"
    #: further qualities the camera saves at (its quality presets, e.g. fine / normal): each
    #: photo takes one of ``jpeg_quality`` and these (:func:`photo_jpeg_quality`); () = one setting
    jpeg_presets: tuple[int, ...] = ()
    # realism traits (camsim.synth.traits; ``data.synth``): off at these defaults, and then left
    # out of to_dict, so catalogues without them read and write as before
    vignetting: float = 0.0  # relative illumination lost at the frame corner
    lateral_ca: tuple[float, float] = (0.0, 0.0)  # R, B radial shift against G at the corner, sensor px
    row_noise: float = 0.0  # row fixed-pattern offset σ, e⁻ (read-out chain, like read_noise)
    column_noise: float = 0.0  # column fixed-pattern offset σ, e⁻
    prnu: float = 0.0  # σ of the per-pixel gain pattern (photo-response non-uniformity)
    sensor_seed: int = 0  # this device's fixed patterns (row / column / PRNU)
    ae_sigma: float = 0.0  # auto-exposure error per photo, σ EV
    iso_sigma: float = 0.0  # ISO per photo around auto-ISO, σ stops
    awb_strength: float = 0.0  # auto white balance: 0 preset gains, 1 the photo's grey-world gains
    downscale_share: float = 0.0  # share of photos saved at the reduced image size ...
    downscale_scale: float = 1.0  # ... of this scale (output / full size)
    jpeg_adaptive: tuple[int, ...] = ()  # (lo, hi): quality chosen per photo by its content
    jpeg_tables: int = 0  # quantisation-table family (0: IJG standard tables)
    smoothing: float = 0.0  # full-resolution smoothing after demosaicing, Gaussian σ in px (0: none)
    differs_in: tuple[str, ...] = ()  # trait groups in which a sibling differs from its family's reference

    def __post_init__(self) -> None:
        # Normalise containers (JSON gives lists) before validating.
        object.__setattr__(self, "wb_gains", _float_tuple(self.wb_gains, "wb_gains", 3))
        object.__setattr__(self, "colour_matrix", _matrix(self.colour_matrix))
        object.__setattr__(self, "jpeg_presets", tuple(_int(q, "jpeg_presets") for q in self.jpeg_presets))
        object.__setattr__(self, "jpeg_adaptive", tuple(_int(q, "jpeg_adaptive") for q in self.jpeg_adaptive))
        object.__setattr__(self, "lateral_ca", _float_tuple(self.lateral_ca, "lateral_ca", 2))
        object.__setattr__(self, "differs_in", tuple(str(t) for t in self.differs_in))
        for name in ("adc_bits", "iso_min", "iso_max", "jpeg_quality", "sensor_seed", "jpeg_tables"):
            object.__setattr__(self, name, _int(getattr(self, name), name))
        for f in dataclasses.fields(self):
            if f.type in ("float",):
                object.__setattr__(self, f.name, _float(getattr(self, f.name), f.name))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`CameraParamsError` naming the first invalid field."""
        for fname in ("name", "family"):
            v = getattr(self, fname)
            if not isinstance(v, str) or not _SAFE_NAME.match(v):
                _bad(fname, f"must be a non-empty filesystem-safe name ([A-Za-z0-9._-]), got {v!r}")
        _choice(self.cfa, "cfa", CFA_PATTERNS)
        _choice(self.demosaic, "demosaic", ALL_DEMOSAIC_METHODS)
        _choice(self.resample_kernel, "resample_kernel", RESAMPLE_KERNELS)
        _choice(self.jpeg_subsampling, "jpeg_subsampling", JPEG_SUBSAMPLINGS)
        _range(self.blur_sigma, "blur_sigma", 0.0, 5.0)
        _range(self.full_well, "full_well", 100.0, 1e6)
        _range(self.read_noise, "read_noise", 0.0, 100.0)
        _range(self.adc_bits, "adc_bits", 8, 16)
        _range(self.iso_min, "iso_min", 1, 1_000_000)
        _range(self.iso_max, "iso_max", self.iso_min, 1_000_000, hint="at least iso_min")
        for i, g in enumerate(self.wb_gains):
            _range(g, f"wb_gains[{i}]", 0.1, 10.0)
        m = np.asarray(self.colour_matrix, dtype=np.float64)
        if abs(np.linalg.det(m)) < 1e-6 or np.linalg.cond(m) > 1e6:
            _bad("colour_matrix", f"must be invertible (det={np.linalg.det(m):.3g})")
        _range(self.exposure_ev, "exposure_ev", -3.0, 3.0)
        _range(self.denoise_luma, "denoise_luma", 0.0, 5.0)
        _range(self.denoise_chroma, "denoise_chroma", 0.0, 10.0)
        _range(self.gamma, "gamma", 1.0, 4.0)
        _range(self.contrast, "contrast", 0.0, 0.9)
        _range(self.sharpen_radius, "sharpen_radius", 0.1, 10.0)
        _range(self.sharpen_amount, "sharpen_amount", 0.0, 5.0)
        _range(self.resample_scale, "resample_scale", 0.25, 4.0)
        _range(self.jpeg_quality, "jpeg_quality", 1, 100)
        for q in self.jpeg_presets:
            _range(q, "jpeg_presets", 1, 100)
        for fname, (lo, hi) in _TRAIT_RANGES.items():
            _range(getattr(self, fname), fname, lo, hi)
        for v in self.lateral_ca:
            _range(v, "lateral_ca", -8.0, 8.0)
        if self.jpeg_adaptive and (len(self.jpeg_adaptive) != 2 or not 1 <= self.jpeg_adaptive[0]
                                   <= self.jpeg_adaptive[1] <= 100):
            _bad("jpeg_adaptive", f"must be () or (lo, hi) with 1 <= lo <= hi <= 100, got {self.jpeg_adaptive}")
        for t in self.differs_in:
            _choice(t, "differs_in", tuple(SIBLING_TRAITS))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["wb_gains"] = list(self.wb_gains)
        d["colour_matrix"] = [list(r) for r in self.colour_matrix]
        d["jpeg_presets"] = list(self.jpeg_presets)
        for name, default in _TRAIT_DEFAULTS.items():
            if getattr(self, name) == default:
                del d[name]
            elif isinstance(default, tuple):
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraParams:
        """Inverse of :meth:`to_dict`; unknown or missing keys are errors naming them."""
        if not isinstance(d, dict):
            raise CameraParamsError(f"CameraParams: expected a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CameraParamsError(f"CameraParams: unknown field(s) {unknown}")
        missing = sorted(n for n in names if n not in d and n != "jpeg_presets" and n not in _TRAIT_DEFAULTS)
        if missing:
            raise CameraParamsError(f"CameraParams: missing field(s) {missing}")
        return cls(**d)

    @property
    def sensor_scale(self) -> float:
        """Sensor size / output size (> 1 for models that reduce their image size)."""
        return 1.0 / self.resample_scale

    @property
    def max_sensor_scale(self) -> float:
        """The largest sensor / output size of any of its photos (reduced-size photos included)."""
        return self.sensor_scale / (self.downscale_scale if self.downscale_share > 0 else 1.0)

    def sensor_shape(self, out_shape: tuple[int, int]) -> tuple[int, int]:
        """Even sensor (H, W) whose resampled output is ``out_shape``."""
        if self.resample_scale == 1.0:
            return (_even(out_shape[0]), _even(out_shape[1]))
        return tuple(_even(round(s * self.sensor_scale)) for s in out_shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class CameraFamily:
    """A manufacturer: the house style its models share (``style``: CameraParams fields)."""

    name: str
    index: int
    sensor_class: str  # "phone", "compact" or "dslr"
    style: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "sensor_class": self.sensor_class,
                "style": _jsonable(self.style)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraFamily:
        return cls(name=d["name"], index=int(d["index"]), sensor_class=d["sensor_class"],
                   style=dict(d["style"]))


# ---------------------------------------------------------------------- catalogue

_SENSOR_CLASSES = {
    # full well (e-) at base ISO, ADC bit depths, ISO range
    "phone": dict(full_well=(3000.0, 7000.0), adc_bits=(10,), iso_min=(50, 64), iso_max=(800, 1600)),
    "compact": dict(full_well=(6000.0, 15000.0), adc_bits=(12,), iso_min=(80, 100), iso_max=(1600, 3200)),
    "dslr": dict(full_well=(20000.0, 45000.0), adc_bits=(12, 14), iso_min=(100,), iso_max=(3200, 6400)),
}


def family_name(f: int) -> str:
    return f"F{f:02d}"


def model_name(f: int, k: int) -> str:
    return f"F{f:02d}_M{k:02d}"


def make_family(f: int, seed: int) -> CameraFamily:
    """Family ``f`` of catalogue seed ``seed`` (always the same)."""
    rng = np.random.default_rng([seed, TAG_FAMILY, f])
    sensor_class = str(rng.choice(list(_SENSOR_CLASSES)))
    sc = _SENSOR_CLASSES[sensor_class]
    sat = float(rng.uniform(0.4, 1.0))
    # Colour matrix M = I + S (I - P): S = diag(saturation of each row), P row-stochastic
    # with a zero diagonal (which other channels each one is decorrelated from). Rows of M
    # sum to 1 (white stays white), the diagonal is 1 + S, and M is invertible with a
    # non-negative inverse (the sensor's response): M = (I + S)(I - Q) with
    # Q = (I + S)⁻¹ S P ≥ 0 of row sums < 1, so M⁻¹ = Σ Qᵏ (I + S)⁻¹ ≥ 0.
    near = rng.dirichlet([3.0, 1.0], size=3)  # weight of the spectrally nearer channel first
    mix = np.array([[0.0, near[0, 0], near[0, 1]],  # R: mostly G
                    [near[1, 0], 0.0, near[1, 1]],  # G: mostly R (then B)
                    [near[2, 1], near[2, 0], 0.0]])  # B: mostly G
    style = dict(
        cfa=str(rng.choice(CFA_PATTERNS)),
        demosaic=str(rng.choice(DEMOSAIC_METHODS)),
        full_well=float(np.exp(rng.uniform(*np.log(sc["full_well"])))),
        adc_bits=int(rng.choice(sc["adc_bits"])),
        iso_min=int(rng.choice(sc["iso_min"])),
        iso_max=int(rng.choice(sc["iso_max"])),
        wb_gains=(float(rng.uniform(1.6, 2.4)), 1.0, float(rng.uniform(1.3, 2.0))),
        saturation=[float(rng.uniform(0.9, 1.2)) * sat, float(rng.uniform(0.5, 0.8)) * sat,
                    float(rng.uniform(0.8, 1.1)) * sat],
        colour_mix=mix.tolist(),
        exposure_ev=float(rng.uniform(-0.3, 0.3)),
        denoise_luma=float(rng.uniform(0.0, 1.0)),
        denoise_chroma=float(rng.uniform(0.5, 2.0)),
        gamma=float(rng.uniform(2.0, 2.5)),
        contrast=float(rng.uniform(0.0, 0.35)),
        sharpen_radius=float(rng.uniform(0.6, 1.6)),
        sharpen_amount=float(rng.uniform(0.2, 1.2)),
        jpeg_quality=int(rng.integers(80, 98, endpoint=True)),
        jpeg_subsampling=str(rng.choice(JPEG_SUBSAMPLINGS, p=[0.3, 0.3, 0.4])),
    )
    return CameraFamily(name=family_name(f), index=f, sensor_class=sensor_class, style=style)


def make_model(k: int, family: CameraFamily, seed: int) -> CameraParams:
    """Model ``k`` of catalogue seed ``seed``: its family's style plus its own sensor, lens
    and firmware draws (see the module docstring for which fields vary)."""
    rng = np.random.default_rng([seed, TAG_MODEL, k])
    s = family.style
    cfa = s["cfa"] if rng.random() >= 0.10 else str(rng.choice(CFA_PATTERNS))
    demosaic = s["demosaic"] if rng.random() >= 0.15 else str(rng.choice(DEMOSAIC_METHODS))
    sat = np.asarray(s["saturation"]) + rng.uniform(-0.05, 0.05)
    mix = np.clip(np.asarray(s["colour_mix"]) + rng.uniform(-0.05, 0.05, size=(3, 3)), 0.0, None)
    np.fill_diagonal(mix, 0.0)
    mix /= mix.sum(axis=1, keepdims=True)
    matrix = np.eye(3) + sat[:, None] * (np.eye(3) - mix)
    q = s["jpeg_quality"]
    if rng.random() < 0.4:
        q = q + int(rng.choice([-4, -3, -2, -1, 1, 2, 3, 4]))
    q = int(np.clip(q, 75, 98))
    if rng.random() < 0.15:
        scale = float(rng.choice(RESAMPLE_SCALES))
        kernel = str(rng.choice(RESAMPLE_KERNELS))
    else:
        scale, kernel = 1.0, "bicubic"
    wb = s["wb_gains"]
    return CameraParams(
        name=model_name(family.index, k),
        family=family.name,
        cfa=cfa,
        demosaic=demosaic,
        blur_sigma=round(float(rng.uniform(0.35, 0.9)), 4),
        full_well=round(float(s["full_well"] * rng.uniform(0.8, 1.25)), 1),
        read_noise=round(float(rng.uniform(1.5, 6.0)), 3),
        adc_bits=s["adc_bits"],
        iso_min=s["iso_min"],
        iso_max=s["iso_max"],
        wb_gains=(round(wb[0] * rng.uniform(0.95, 1.05), 4), 1.0, round(wb[2] * rng.uniform(0.95, 1.05), 4)),
        colour_matrix=tuple(tuple(round(float(v), 5) for v in row) for row in matrix),
        exposure_ev=round(float(s["exposure_ev"] + rng.uniform(-0.1, 0.1)), 4),
        denoise_luma=round(float(np.clip(s["denoise_luma"] + rng.uniform(-0.15, 0.15), 0.0, 1.2)), 4),
        denoise_chroma=round(float(s["denoise_chroma"]), 4),
        gamma=round(float(s["gamma"] + rng.uniform(-0.05, 0.05)), 4),
        contrast=round(float(np.clip(s["contrast"] + rng.uniform(-0.03, 0.03), 0.0, 0.5)), 4),
        sharpen_radius=round(float(s["sharpen_radius"]), 4),
        sharpen_amount=round(float(s["sharpen_amount"] * rng.uniform(0.8, 1.25)), 4),
        resample_scale=scale,
        resample_kernel=kernel,
        jpeg_quality=q,
        jpeg_subsampling=s["jpeg_subsampling"],
    )


def family_of(k: int, num_families: int) -> int:
    """Models are dealt to families round-robin: model k belongs to family k mod F."""
    return k % num_families


def make_catalogue(num_models: int, num_families: int, seed: int, jpeg_presets: int = 1,
                   shared_qualities: tuple[int, ...] = SHARED_JPEG_PRESETS) -> list[CameraParams]:
    """The first ``num_models`` camera models of seed ``seed`` spread over ``num_families``
    families (model k is in family k mod num_families; names like ``F02_M07``).

    ``jpeg_presets``: JPEG qualities each model saves at, one per photo — 1 (a fixed setting per
    model, which makes JPEG statistics alone a camera-model label), or more, like real cameras'
    quality presets: the model's own quality plus ``jpeg_presets - 1`` drawn from
    ``shared_qualities`` (default :data:`SHARED_JPEG_PRESETS`), qualities many makes use, so photos
    of different models share quantisation tables as real ones do. Drawn from their own stream:
    every other parameter is the same whatever ``jpeg_presets`` is."""
    if isinstance(jpeg_presets, bool) or not isinstance(jpeg_presets, (int, np.integer)) \
            or not 1 <= jpeg_presets <= len(shared_qualities):
        raise CameraParamsError(f"jpeg_presets: must be an integer in 1..{len(shared_qualities)} "
                                f"(the shared qualities), got {jpeg_presets!r}")
    num_models = _int(num_models, "num_models")
    num_families = _int(num_families, "num_families")
    if num_models < 1:
        raise CameraParamsError(f"num_models: must be at least 1, got {num_models}")
    if num_families < 1:
        raise CameraParamsError(f"num_families: must be at least 1, got {num_families}")
    if num_families > num_models:
        raise CameraParamsError(
            f"num_families: {num_families} families need at least as many models, got num_models={num_models}")
    families = [make_family(f, seed) for f in range(num_families)]
    models = [make_model(k, families[family_of(k, num_families)], seed) for k in range(num_models)]
    if jpeg_presets == 1:
        return models
    out = []
    for k, cam in enumerate(models):
        rng = np.random.default_rng([seed, TAG_PRESETS, k])
        others = [q for q in shared_qualities if q != cam.jpeg_quality]
        extra = sorted(int(q) for q in rng.choice(others, size=int(jpeg_presets) - 1, replace=False))
        out.append(dataclasses.replace(cam, jpeg_presets=tuple(extra)))
    return out


def make_families(num_families: int, seed: int) -> list[CameraFamily]:
    return [make_family(f, seed) for f in range(num_families)]


# ---------------------------------------------------------------------- helpers

def _bad(fname: str, reason: str) -> None:
    raise CameraParamsError(f"CameraParams.{fname}: {reason}")


def _choice(v: Any, fname: str, options: tuple[str, ...]) -> None:
    if v not in options:
        _bad(fname, f"unknown value {v!r}; choose one of {list(options)}")


def _range(v: float, fname: str, lo: float, hi: float, hint: str | None = None) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
        _bad(fname, f"{v!r} is outside [{lo}, {hi}]" + (f" ({hint})" if hint else ""))


def _float(v: Any, fname: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        _bad(fname, f"must be a number, got {v!r}")
    return float(v)


def _int(v: Any, fname: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)) or not np.isfinite(v) \
            or int(v) != v:
        raise CameraParamsError(f"{'CameraParams.' if fname in _PARAM_FIELDS else ''}{fname}: "
                                f"must be an integer, got {v!r}")
    return int(v)


def _float_tuple(v: Any, fname: str, n: int) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        _bad(fname, f"must be {n} numbers, got {v!r}")
    if len(out) != n:
        _bad(fname, f"must be {n} numbers, got {len(out)}")
    return out


def _matrix(v: Any) -> tuple[tuple[float, float, float], ...]:
    try:
        m = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        _bad("colour_matrix", f"must be a 3x3 matrix of numbers, got {v!r}")
    if m.size == 9:
        m = m.reshape(3, 3)
    if m.shape != (3, 3):
        _bad("colour_matrix", f"must be 3x3, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        _bad("colour_matrix", "must be finite")
    return tuple(tuple(float(x) for x in row) for row in m)  # type: ignore[return-value]


def _even(n: int) -> int:
    return int(n) + (int(n) % 2)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


_PARAM_FIELDS = {f.name for f in dataclasses.fields(CameraParams)}
_TRAIT_RANGES = {"vignetting": (0.0, 0.9), "row_noise": (0.0, 100.0), "column_noise": (0.0, 100.0),
                 "prnu": (0.0, 0.2), "sensor_seed": (0, 2 ** 63), "ae_sigma": (0.0, 3.0), "iso_sigma": (0.0, 4.0),
                 "awb_strength": (0.0, 1.0), "downscale_share": (0.0, 1.0), "downscale_scale": (0.25, 1.0),
                 "jpeg_tables": (0, 2 ** 63), "smoothing": (0.0, 3.0)}
_TRAIT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CameraParams)
                   if f.name in _TRAIT_RANGES or f.name in ("lateral_ca", "jpeg_adaptive", "differs_in")}
