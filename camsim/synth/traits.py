"""The catalogue with its realism traits (``data.synth``): :func:`catalogue` is
:func:`camsim.synth.params.make_catalogue` plus, per switched-on trait, each model's own draw.

Each trait draws from a stream of its own (``[seed, TAG_TRAITS, trait, model]``, all of its
numbers drawn whether or not a sibling setting is on), so turning one trait on changes no
other parameter, and with every trait off the catalogue is exactly ``make_catalogue``'s.

========================  ============================================  =============
trait (``data.synth.``)   per model                                      drawn per
========================  ============================================  =============
demosaic.methods          algorithm from the list                        family (15 %
                                                                         of models differ)
lens.vignetting           corner loss 0.3–1 × the setting                model
lens.chromatic_aberration R shift ±(0.3–1) × setting px, B opposite       model
                          ×0.5–1.2
noise.fixed_pattern       row / column σ = setting × read noise ×        model (device)
                          0.5–1.5 each
noise.prnu                PRNU σ = setting × 0.5–1.5                      model (device)
exposure.ev_sigma / iso   per-photo σ = setting × 0.5–1.5                 model
white_balance.per_photo   AWB strength = strength ± 0.3 (clipped 0–1)    model
resample.downscale_share  that share of photos at 0.7 or 0.8 size        model (only models
                                                                         that do not resample)
jpeg.fine_share           that share of models: own quality 96–100       model
jpeg.adaptive_share       that share of models: quality per photo in     model
                          [q − 6…15, q] by content (instead of presets);
                          with jpeg.fine_fixed none of q >= 96
jpeg.table_families       per camera family: the IJG tables or one of    family
                          k makers' table shapes
processing.smoothing      full-resolution smoothing after demosaicing,  model
                          σ = setting × 0.7–1.3 px
family.differ_in          siblings = the family's first model but for    model
                          n trait groups (SIBLING_TRAITS)
========================  ============================================  =============
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from camsim.config.synth import SynthTraitsConfig
from camsim.synth.params import (
    ALL_DEMOSAIC_METHODS,
    CFA_PATTERNS,
    DEMOSAIC_METHODS,
    RESAMPLE_KERNELS,
    RESAMPLE_SCALES,
    SIBLING_TRAITS,
    CameraParams,
    CameraParamsError,
    family_of,
    make_catalogue,
)
from camsim.synth.settings import is_default, synth_settings

TAG_TRAITS = 0x545254  # "TRT"
_STREAMS = {"demosaic": 1, "lens": 2, "noise": 3, "exposure": 4, "white_balance": 5, "resample": 6,
            "jpeg_adaptive": 7, "jpeg_tables": 8, "siblings": 9, "jpeg_fine": 11, "smoothing": 12}
_FAMILY = 10_000  # stream offset of family-level draws
DOWNSCALE_SCALES: tuple[float, ...] = (0.7, 0.8)
"""Reduced image sizes (output / full size) a model may save photos at (``resample.downscale_share``)."""
FINE_QUALITIES: tuple[int, int] = (96, 100)
"""The qualities (inclusive range) of models that save at a fine setting (``jpeg.fine_share``)."""


def catalogue(num_models: int, num_families: int, seed: int,
              synth: SynthTraitsConfig | Mapping | None = None) -> list[CameraParams]:
    """The first ``num_models`` camera models of ``seed`` with the traits ``synth`` switches on
    (None: none — exactly :func:`~camsim.synth.params.make_catalogue`)."""
    s = synth_settings(synth)
    models = make_catalogue(num_models, num_families, seed, s.jpeg.presets_per_model, tuple(s.jpeg.shared_qualities))
    if is_default(s, ignore_presets=True):
        return models
    if len(models) > _FAMILY:  # model k's draws would be family k − 10,000's
        raise CameraParamsError(f"num_models: at most {_FAMILY:,} camera models with per-model traits "
                                f"(data.synth), got {len(models):,}")
    models = [_model_traits(k, cam, s, seed, num_families) for k, cam in enumerate(models)]
    if s.family.differ_in:
        models = [_sibling(k, cam, models, s, seed, num_families) for k, cam in enumerate(models)]
    return models


def _may_adapt(quality: int, s: SynthTraitsConfig) -> bool:
    """Whether a model of own ``quality`` may choose its quality per photo: not a fine one under
    ``jpeg.fine_fixed``."""
    return not (s.jpeg.fine_fixed and quality >= FINE_QUALITIES[0])


def _rng(seed: int, trait: str, k: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), TAG_TRAITS, _STREAMS[trait], int(k)])


def _model_traits(k: int, cam: CameraParams, s: SynthTraitsConfig, seed: int, num_families: int) -> CameraParams:
    f = family_of(k, num_families)
    ch: dict = {}
    methods = tuple(s.demosaic.methods)
    if methods != DEMOSAIC_METHODS:
        fam = str(_rng(seed, "demosaic", _FAMILY + f).choice(methods))
        r = _rng(seed, "demosaic", k)
        own, pick = r.random(), str(r.choice(methods))
        ch["demosaic"] = fam if own >= 0.15 else pick
    if s.lens.vignetting or s.lens.chromatic_aberration:
        v, ca, sign, ratio = _rng(seed, "lens", k).uniform([0.3, 0.3, -1.0, 0.5], [1.0, 1.0, 1.0, 1.2])
        shift = s.lens.chromatic_aberration * ca * (1.0 if sign >= 0 else -1.0)
        ch.update(vignetting=round(s.lens.vignetting * v, 4), lateral_ca=(round(shift, 4), round(-shift * ratio, 4)))
    if s.noise.fixed_pattern or s.noise.prnu:
        r = _rng(seed, "noise", k)
        a_row, a_col, a_prnu = r.uniform(0.5, 1.5, 3)
        ch.update(row_noise=round(s.noise.fixed_pattern * cam.read_noise * a_row, 4),
                  column_noise=round(s.noise.fixed_pattern * cam.read_noise * a_col, 4),
                  prnu=round(s.noise.prnu * a_prnu, 5), sensor_seed=int(r.integers(2 ** 62)))
    if s.exposure.ev_sigma or s.exposure.iso_sigma:
        a_ev, a_iso = _rng(seed, "exposure", k).uniform(0.5, 1.5, 2)
        ch.update(ae_sigma=round(s.exposure.ev_sigma * a_ev, 4), iso_sigma=round(s.exposure.iso_sigma * a_iso, 4))
    if s.white_balance.per_photo:
        d = _rng(seed, "white_balance", k).uniform(-0.3, 0.3)
        ch["awb_strength"] = round(float(np.clip(s.white_balance.strength + d, 0.0, 1.0)), 4)
    if s.resample.downscale_share and cam.resample_scale == 1.0:
        ch.update(downscale_share=s.resample.downscale_share,
                  downscale_scale=float(_rng(seed, "resample", k).choice(DOWNSCALE_SCALES)))
    if s.processing.smoothing:
        ch["smoothing"] = round(s.processing.smoothing * float(_rng(seed, "smoothing", k).uniform(0.7, 1.3)), 4)
    if s.jpeg.fine_share:
        r = _rng(seed, "jpeg_fine", k)
        u, q = r.random(), int(r.integers(FINE_QUALITIES[0], FINE_QUALITIES[1], endpoint=True))
        if u < s.jpeg.fine_share:
            ch["jpeg_quality"] = q
    if s.jpeg.adaptive_share:
        r = _rng(seed, "jpeg_adaptive", k)
        u, width = r.random(), int(r.integers(6, 16))
        own = ch.get("jpeg_quality", cam.jpeg_quality)
        if u < s.jpeg.adaptive_share and _may_adapt(own, s):
            ch.update(jpeg_adaptive=(max(own - width, 50), own), jpeg_presets=())
    if s.jpeg.table_families:  # table family 0: the IJG standard tables, which many makes use
        j = int(_rng(seed, "jpeg_tables", _FAMILY + f).integers(s.jpeg.table_families + 1))
        ch["jpeg_tables"] = 1 + int(_rng(seed, "jpeg_tables", 2 * _FAMILY + j).integers(2 ** 62)) if j else 0
    return dataclasses.replace(cam, **ch)


def _sibling(k: int, cam: CameraParams, models: list[CameraParams], s: SynthTraitsConfig, seed: int,
             num_families: int) -> CameraParams:
    """Model ``k`` as its family's reference model (the family's first) but for
    ``s.family.differ_in`` trait groups of its own (recorded in ``differs_in``); its device
    (``sensor_seed``) is its own."""
    f = family_of(k, num_families)
    if k == f:
        return cam
    ref = models[f]
    r = _rng(seed, "siblings", k)
    groups = sorted(str(g) for g in r.choice(list(SIBLING_TRAITS), size=s.family.differ_in, replace=False))
    ch = {n: getattr(ref, n) for g, names in SIBLING_TRAITS.items() if g not in groups for n in names}
    for g in groups:  # a declared difference is a difference: discrete traits redrawn where equal
        if all(getattr(cam, n) == getattr(ref, n) for n in SIBLING_TRAITS[g]):
            ch.update(_redraw(g, ref, s, r))
    return dataclasses.replace(cam, **ch, differs_in=tuple(groups))


def _redraw(group: str, ref: CameraParams, s: SynthTraitsConfig, r: np.random.Generator) -> dict:
    if group == "cfa":
        return {"cfa": str(r.choice([p for p in CFA_PATTERNS if p != ref.cfa]))}
    if group == "demosaic":
        pool = [m for m in s.demosaic.methods if m != ref.demosaic] or \
            [m for m in ALL_DEMOSAIC_METHODS if m != ref.demosaic]
        return {"demosaic": str(r.choice(pool))}
    if group == "resample":
        return {"resample_scale": float(r.choice(RESAMPLE_SCALES)), "resample_kernel": str(r.choice(RESAMPLE_KERNELS)),
                "downscale_share": 0.0, "downscale_scale": 1.0}
    if group == "jpeg":
        q = ref.jpeg_quality + int(r.choice([-4, -3, -2, 2, 3, 4]))
        q = q if 50 <= q <= 100 else ref.jpeg_quality - (q - ref.jpeg_quality)
        adapts = ref.jpeg_adaptive and _may_adapt(q, s)
        lo_hi = (max(q - (ref.jpeg_adaptive[1] - ref.jpeg_adaptive[0]), 1), q) if adapts else ()
        return {"jpeg_quality": q, "jpeg_adaptive": lo_hi}
    return {}  # continuous groups: the model's own draws differ


__all__ = ["catalogue", "DOWNSCALE_SCALES", "FINE_QUALITIES", "TAG_TRAITS"]
