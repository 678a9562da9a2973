"""The simulator's realism traits (``data.synth``, issue items 1, 2 and 5): off by default, each
switchable alone, per-photo variation within a model, sibling structure, richer pipeline stages,
validation at start, deterministic and cached renders."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

from camsim.config import data_fingerprint
from camsim.data.patches import patch_entropy
from camsim.data.sources import SynthSource
from camsim.synth import isp, stages
from camsim.synth.params import (ALL_DEMOSAIC_METHODS, CFA_PATTERNS, SIBLING_TRAITS, CameraParams, CameraParamsError,
                                 make_catalogue)
from camsim.synth.photo import Photo, adaptive_quality, photo_jpeg_quality, quant_tables
from camsim.synth.render import render_camera_image, render_catalogue
from camsim.synth.scenes import Scene, render_scene
from camsim.synth.settings import SynthSettingsError, cache_key, synth_settings
from camsim.synth.textures import TEXTURE_KINDS, make_scene, texture_scene
from camsim.synth.traits import catalogue

REAL = yaml.safe_load(open("conf/data/synth_real.yaml"))["synth"]
DEVICE = {"name", "sensor_seed", "differs_in"}  # what is always a model's own


def _diff(a: CameraParams, b: CameraParams) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


# ---------------------------------------------------------------------- defaults and switches

def test_default_settings_are_the_original_catalogue_and_records():
    base = make_catalogue(12, 4, 3)
    assert catalogue(12, 4, 3) == base == catalogue(12, 4, 3, {}) == catalogue(12, 4, 3, synth_settings())
    d = base[0].to_dict()
    assert not {"vignetting", "prnu", "jpeg_tables", "differs_in"} & set(d)  # cameras.json as before
    assert CameraParams.from_dict(d) == base[0]
    assert cache_key(synth_settings({"jpeg": {"presets_per_model": 3}})) == {}  # its own, older key


@pytest.mark.parametrize("setting, fields", [
    ({"jpeg": {"adaptive_share": 1.0}}, {"jpeg_adaptive"}),
    ({"jpeg": {"fine_share": 0.5}}, {"jpeg_quality"}),
    ({"jpeg": {"table_families": 2}}, {"jpeg_tables"}),
    ({"exposure": {"ev_sigma": 0.3}}, {"ae_sigma"}),
    ({"exposure": {"iso_sigma": 0.5}}, {"iso_sigma"}),
    ({"white_balance": {"per_photo": True}}, {"awb_strength"}),
    ({"noise": {"fixed_pattern": 0.3}}, {"row_noise", "column_noise", "sensor_seed"}),
    ({"noise": {"prnu": 0.01}}, {"prnu", "sensor_seed"}),
    ({"lens": {"vignetting": 0.4}}, {"vignetting"}),
    ({"lens": {"chromatic_aberration": 1.0}}, {"lateral_ca"}),
    ({"demosaic": {"methods": ["ahd", "frequency"]}}, {"demosaic"}),
    ({"resample": {"downscale_share": 0.2}}, {"downscale_share", "downscale_scale"}),
    ({"processing": {"smoothing": 0.6}}, {"smoothing"}),
])
def test_each_trait_switches_alone_and_changes_only_its_own_fields(setting, fields):
    base, one = make_catalogue(12, 4, 0), catalogue(12, 4, 0, setting)
    changed = set().union(*(_diff(a, b) for a, b in zip(base, one)))
    assert changed and changed <= fields, changed
    key = SynthSource(12, 4, 2, (32, 32), synth=setting).cache_key()
    assert key != SynthSource(12, 4, 2, (32, 32)).cache_key() and "synth" in key


def test_fine_share_puts_that_share_of_models_at_a_fine_quality_and_keeps_older_cache_keys():
    """jpeg.fine_share: models whose own quality is 96–100 (steps 1–2, as many real cameras save);
    the settings that do not use it keep the cache key they had before it existed."""
    from camsim.synth.traits import FINE_QUALITIES

    base, fine = make_catalogue(60, 10, 0), catalogue(60, 10, 0, {"jpeg": {"fine_share": 0.5}})
    moved = [b for a, b in zip(base, fine) if a.jpeg_quality != b.jpeg_quality]
    assert all(FINE_QUALITIES[0] <= m.jpeg_quality <= FINE_QUALITIES[1] for m in moved)
    assert 15 <= sum(FINE_QUALITIES[0] <= m.jpeg_quality for m in fine) <= 45
    assert catalogue(60, 10, 0, {"jpeg": {"fine_share": 0.0}}) == base
    off = {**REAL, "jpeg": {**REAL["jpeg"], "fine_share": 0.0}}
    assert "fine_share" not in cache_key(synth_settings(off))["synth"]["jpeg"]
    assert cache_key(synth_settings({**REAL, "jpeg": {**REAL["jpeg"], "fine_share": 0.3}}))["synth"]["jpeg"][
        "fine_share"] == 0.3


def test_fine_fixed_keeps_fine_models_at_their_one_quality_and_older_cache_keys():
    """jpeg.fine_fixed: no model whose own quality is fine (96–100) adapts it per photo; every other
    model draws as without it; off, the render keys are those from before the setting existed."""
    from camsim.synth.traits import FINE_QUALITIES

    jpeg = {"fine_share": 0.4, "adaptive_share": 0.5}
    loose, fixed = catalogue(60, 10, 0, {"jpeg": jpeg}), catalogue(60, 10, 0, {"jpeg": {**jpeg, "fine_fixed": True}})
    fine = [c.jpeg_quality >= FINE_QUALITIES[0] for c in fixed]
    assert [c.jpeg_quality for c in loose] == [c.jpeg_quality for c in fixed]
    assert any(f and c.jpeg_adaptive for f, c in zip(fine, loose))  # without it, fine models adapt too
    assert not any(f and c.jpeg_adaptive for f, c in zip(fine, fixed))
    assert [c for f, c in zip(fine, loose) if not f] == [c for f, c in zip(fine, fixed) if not f]
    assert any(c.jpeg_adaptive for c in fixed)
    # a sibling whose declared JPEG difference is redrawn into the fine band keeps its one quality too
    from camsim.synth.traits import _redraw

    ref = dataclasses.replace(make_catalogue(1, 1, 0)[0], jpeg_quality=94, jpeg_adaptive=(85, 94))
    s = synth_settings({"jpeg": {**jpeg, "fine_fixed": True}})
    redrawn = [_redraw("jpeg", ref, s, np.random.default_rng(i)) for i in range(20)]
    assert {r["jpeg_quality"] >= FINE_QUALITIES[0] for r in redrawn} == {True, False}
    assert all(bool(r["jpeg_adaptive"]) == (r["jpeg_quality"] < FINE_QUALITIES[0]) for r in redrawn)
    assert "fine_fixed" not in cache_key(synth_settings({"jpeg": jpeg}))["synth"]["jpeg"]
    # it does nothing without adaptive models: such renders (experiment=pixel's) keep their key
    fine = {"jpeg": {"fine_share": 0.4}}
    assert cache_key(synth_settings({"jpeg": {"fine_share": 0.4, "fine_fixed": True}})) == cache_key(synth_settings(fine))
    assert cache_key(synth_settings({"jpeg": {"fine_fixed": True}})) == {}  # data=synth with every trait set to 0
    assert catalogue(12, 4, 3, {"jpeg": {"fine_fixed": True}}) == make_catalogue(12, 4, 3)
    assert cache_key(synth_settings({"jpeg": {**jpeg, "fine_fixed": True}}))["synth"]["jpeg"]["fine_fixed"] is True


def test_smoothing_draws_each_models_sigma_around_the_setting_and_keeps_older_cache_keys():
    cams = catalogue(20, 4, 0, {"processing": {"smoothing": 0.6}})
    sig = np.array([c.smoothing for c in cams])
    assert ((sig >= 0.42) & (sig <= 0.78)).all() and sig.std() > 0.05
    assert CameraParams.from_dict(cams[0].to_dict()) == cams[0]
    assert "smoothing" not in make_catalogue(2, 2, 0)[0].to_dict()  # cameras.json as before while off
    fine = {"jpeg": {"fine_share": 0.4}}
    assert "processing" not in cache_key(synth_settings(fine))["synth"]  # the recipe's renders keep their key
    assert cache_key(synth_settings({**fine, "processing": {"smoothing": 0.6}}))["synth"]["processing"] == {
        "smoothing": 0.6}
    # what checkpoints record of their training data: as before while off, the setting when on
    off = data_fingerprint({"_target_": "camsim.data.sources.SynthSource",
                            "synth": {**fine, "processing": {"smoothing": 0.0}}})
    assert "processing" not in off["synth"] and off["synth"]["jpeg"]["fine_share"] == 0.4
    on = data_fingerprint({"_target_": "camsim.data.sources.SynthSource", "synth": {"processing": {"smoothing": 0.6}}})
    assert on["synth"]["processing"] == {"smoothing": 0.6}


def test_smoothing_removes_the_green_lattice_trace_real_camera_jpegs_lack():
    """Green sampled on one quincunx lattice and interpolated on the other leaves residual energy
    that differs between the two (lattice ratio well above 1); real cameras' JPEGs show ~1.02–1.04
    (docs/experiments.md). The full-resolution smoothing brings the simulator's ratio towards 1."""
    from camsim.eval.difficulty import trace_statistics

    scene = render_scene(1, 0, (128, 192), 2.0)
    cam = dataclasses.replace(make_catalogue(1, 1, 0)[0], demosaic="bilinear")

    def ratio(c: CameraParams) -> float:
        g = render_camera_image(scene, c, (128, 192), np.random.default_rng(0))[:, :, 1]
        cells = np.stack([g[y:y + 32, x:x + 32] for y in range(0, 128, 32) for x in range(0, 192, 32)])
        return trace_statistics(cells)["lattice_ratio"]

    sharp, smooth = ratio(cam), ratio(dataclasses.replace(cam, smoothing=0.7))
    assert sharp > 1.5 and smooth < 1.15, (sharp, smooth)


def test_siblings_differ_only_in_their_declared_traits():
    cams = catalogue(24, 4, 0, {**REAL, "family": {"differ_in": 2}})
    for k, cam in enumerate(cams):
        ref = cams[k % 4]
        if cam is ref:
            assert cam.differs_in == ()
            continue
        assert len(cam.differs_in) == 2 and cam.family == ref.family
        declared = set().union(*(SIBLING_TRAITS[g] for g in cam.differs_in))
        assert _diff(cam, ref) - DEVICE <= declared, (cam.name, _diff(cam, ref) - DEVICE - declared)
        for g in cam.differs_in:  # each declared trait group really differs
            assert _diff(cam, ref) & set(SIBLING_TRAITS[g]), (cam.name, g)
    # without the sibling structure, models of a family differ in many fields
    free = catalogue(24, 4, 0, {**REAL, "family": {"differ_in": 0}})
    assert np.mean([len(_diff(free[k], free[k % 4]) - DEVICE) for k in range(4, 24)]) > 8


# ---------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad, key, reason", [
    ({"jpeg": {"shared_qualities": []}}, "synth.jpeg.shared_qualities", "non-empty"),
    ({"jpeg": {"shared_qualities": [80, 101]}}, "synth.jpeg.shared_qualities", "1..100"),
    ({"jpeg": {"presets_per_model": 4, "shared_qualities": [80, 90]}}, "synth.jpeg.presets_per_model", "shared"),
    ({"noise": {"prnu": -0.01}}, "synth.noise.prnu", "negative"),
    ({"noise": {"fixed_pattern": -1}}, "synth.noise.fixed_pattern", "negative"),
    ({"lens": {"vignetting": 1.5}}, "synth.lens.vignetting", "outside"),
    ({"jpeg": {"fine_share": 1.5}}, "synth.jpeg.fine_share", "outside"),
    ({"processing": {"smoothing": -0.5}}, "synth.processing.smoothing", "negative"),
    ({"scenes": {"defocus": -1.0}}, "synth.scenes.defocus", "negative"),
    ({"scenes": {"shadow_ev": -1.0}}, "synth.scenes.shadow_ev", "negative"),
    ({"scenes": {"shadow_ev": 7.0}}, "synth.scenes.shadow_ev", "outside"),
    ({"demosaic": {"methods": ["ahd", "magic"]}}, "synth.demosaic.methods", "magic"),
    ({"white_balance": {"per_photo": "yes"}}, "synth.white_balance.per_photo", "true or false"),
    ({"jpeg": {"fine_fixed": 1.5}}, "synth.jpeg.fine_fixed", "true or false"),
    ({"lens": {"vignettig": 0.1}}, "synth.lens.vignettig", "unknown key"),
    ({"optics": {}}, "synth.optics", "unknown node"),
    ({"jpeg": {"presets_per_model": float("inf")}}, "synth.jpeg.presets_per_model", "integer"),
    ({"noise": {"prnu": float("nan")}}, "synth.noise.prnu", "number"),
])
def test_invalid_settings_name_the_key_and_the_reason_in_one_line(bad, key, reason):
    with pytest.raises(SynthSettingsError) as e:
        synth_settings(bad)
    msg = str(e.value)
    assert msg.startswith(key + ":") and reason in msg and "\n" not in msg
    with pytest.raises(ValueError, match="^data." + key.replace(".", r"\.")):  # at start, before rendering
        SynthSource(4, 2, 2, (32, 32), synth=bad)


@pytest.mark.parametrize("args, kwargs, message", [
    ((8, 9, 2, (32, 32)), {}, r"data.num_models=8, data.num_families=9"),
    ((4, 2, 0, (32, 32)), {}, r"data.images_per_model=0: must be ≥ 1"),
    ((4, 2, 2, (32, 32)), {"seed": -1}, r"data.seed=-1: must be ≥ 0"),
    ((4, 2, 2, (32, 32)), {"workers": -3}, r"data.workers=-3"),
    ((4, 2, 2, (15, 32)), {}, r"data.image_size: H and W must be even"),
    # a model draws up to 1.5x the setting: the bound keeps every camera within its 4-stop cap
    ((40, 6, 2, (32, 32)), {"synth": {"exposure": {"iso_sigma": 2.7}}}, r"data.synth.exposure.iso_sigma"),
])
def test_simulator_data_settings_are_checked_before_rendering_naming_the_key(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthSource(*args, **kwargs)
    SynthSource(40, 6, 2, (32, 32), synth={"exposure": {"iso_sigma": 2.66}})  # the largest allowed: every model fits


def test_jpeg_presets_alias_warns_and_maps_to_presets_per_model():
    with pytest.warns(FutureWarning, match="data.synth.jpeg.presets_per_model=3"):
        old = SynthSource(6, 3, 4, (32, 32), jpeg_presets=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = SynthSource(6, 3, 4, (32, 32), synth={"jpeg": {"presets_per_model": 3}})
    assert old.cache_key() == new.cache_key() and old.jpeg_presets == new.jpeg_presets == 3
    assert "jpeg_presets" in new.cache_key() and "synth" not in new.cache_key()  # the older key
    with pytest.raises(ValueError, match="two values"):
        SynthSource(6, 3, 4, (32, 32), jpeg_presets=2, synth={"jpeg": {"presets_per_model": 3}})
    base = {"_target_": "camsim.data.sources.SynthSource", "num_models": 6, "seed": 0}
    fp_old = data_fingerprint({**base, "jpeg_presets": 3})
    fp_new = data_fingerprint({**base, "jpeg_presets": 1, "synth": dataclasses.asdict(new.synth)})
    assert fp_old == fp_new
    assert data_fingerprint({**base, "synth": dataclasses.asdict(synth_settings())}) == base  # as before


# ---------------------------------------------------------------------- per-photo variation

def test_photos_of_one_model_carry_different_quantisation_tables(tmp_path):
    """Presets, adaptive quality and makers' table families: two photos of one model can have
    different tables, a table family's tables are its own, and an adaptive model picks lower
    quality for a busier photo."""
    synth = {"jpeg": {"presets_per_model": 3, "adaptive_share": 0.5, "table_families": 2}}
    out = render_catalogue(tmp_path / "cat", 6, 3, 6, (64, 96), seed=0, workers=1, synth=synth)
    meta = json.loads((out / "cameras.json").read_text())
    assert meta["synth"]["jpeg"]["table_families"] == 2
    cams = {n: CameraParams.from_dict(d) for n, d in meta["cameras"].items()}
    tables = {m: [Image.open(p).quantization for p in sorted((out / m).glob("*.jpg"))] for m in cams}
    assert sum(len({str(t) for t in ts}) >= 2 for ts in tables.values()) >= len(cams) - 1  # (one may draw one preset 6 times)
    ijg = [quant_tables(0, q)[0] for q in range(1, 101)]
    assert {bool(c.jpeg_tables) for c in cams.values()} == {True, False}  # makers' tables and the IJG ones
    for m, cam in cams.items():
        own = [quant_tables(cam.jpeg_tables, q)[0] for q in range(1, 101)]
        assert all(tuple(t[0]) in own and (tuple(t[0]) not in ijg) == bool(cam.jpeg_tables) for t in tables[m])
    flat = np.full((64, 64, 3), 128, np.uint8)
    busy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert adaptive_quality(flat, 70, 90) == 90 and 70 <= adaptive_quality(busy, 70, 90) < 80
    adaptive = dataclasses.replace(next(iter(cams.values())), jpeg_adaptive=(70, 90))
    with pytest.raises(ValueError, match="needs the image"):
        photo_jpeg_quality(adaptive, 0, 0)


def _flat_scene(level: float = 0.3, shape=(64, 64)) -> Scene:
    return Scene(index=0, kind="flat", radiance=np.full((3, *shape), level, np.float32), darkness=0.5)


def test_iso_exposure_and_reduced_size_act_per_photo():
    cam = dataclasses.replace(make_catalogue(1, 1, 0)[0], denoise_luma=0.0, sharpen_amount=0.0)
    scene = _flat_scene()

    def shot(photo: Photo) -> np.ndarray:
        return render_camera_image(scene, cam, (64, 64), np.random.default_rng(0), photo=photo).astype(np.float32)

    base, high_iso, bright = shot(Photo()), shot(Photo(iso_ev=2.0)), shot(Photo(ev=1.0))
    assert high_iso[8:-8, 8:-8].std() > 1.5 * base[8:-8, 8:-8].std()  # signal-dependent noise level
    assert abs(high_iso.mean() - base.mean()) < 2 and bright.mean() > base.mean() + 15
    assert shot(Photo(scale=0.7)).shape == base.shape  # same frame from a larger sensor


def test_auto_white_balance_moves_gains_towards_grey_world():
    cmap = isp.cfa_channel_map("RGGB", (8, 8))
    raw = np.where(cmap == 0, 0.2, np.where(cmap == 1, 0.4, 0.1)).astype(np.float32)
    preset = (1.5, 1.0, 2.0)
    assert stages.auto_wb_gains(raw, cmap, preset, 0.0) == preset
    g = stages.auto_wb_gains(raw, cmap, preset, 1.0)  # grey world: R·g_R = G = B·g_B (within ×/÷ 1.5)
    np.testing.assert_allclose([0.2 * g[0], 0.1 * g[2]], [0.2 * 2.0, 0.1 * 3.0], rtol=1e-6)
    half = stages.auto_wb_gains(raw, cmap, preset, 0.5)
    assert preset[0] < half[0] < g[0] and preset[2] < half[2] < g[2]


# ---------------------------------------------------------------------- pipeline stages

def test_vignetting_and_lateral_chromatic_aberration():
    flat = np.ones((3, 33, 49), np.float32)
    v = stages.vignette(flat, 0.4)
    assert v[:, 16, 24] == pytest.approx(1.0) and v[:, 0, 0] == pytest.approx(0.6, abs=1e-5)
    dot = np.zeros((3, 65, 65), np.float32)
    dot[:, 58, 58] = 1.0  # near the corner: radial shift ≈ shift × r / r_corner
    out = stages.lateral_ca(dot, 1.5, -1.0)
    r0, r_corner = np.hypot(26, 26), np.hypot(32, 32)
    for c, shift in ((0, 1.5), (2, -1.0)):
        yy, xx = np.mgrid[0:65, 0:65]
        cy, cx = (out[c] * yy).sum() / out[c].sum(), (out[c] * xx).sum() / out[c].sum()
        assert np.hypot(cy - 32, cx - 32) - r0 == pytest.approx(shift * r0 / r_corner, abs=0.05)
    np.testing.assert_array_equal(out[1], dot[1])


def test_fixed_patterns_belong_to_the_device_and_show_as_row_and_column_offsets():
    raw = np.full((64, 96), 0.2, np.float32)
    a = stages.fixed_pattern(raw, 3.0, 2.0, seed=7, full_well=5000.0, gain=4.0)
    assert np.array_equal(a, stages.fixed_pattern(raw, 3.0, 2.0, seed=7, full_well=5000.0, gain=4.0))
    assert not np.array_equal(a, stages.fixed_pattern(raw, 3.0, 2.0, seed=8, full_well=5000.0, gain=4.0))
    d = (a - raw) * 5000.0 / 4.0  # back to electrons: rank-2 row + column structure
    resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
    assert np.abs(resid).max() < 1e-3 and d.mean(1).std() == pytest.approx(3.0, rel=0.35)
    p = stages.prnu(raw, 0.01, seed=7)
    assert (p / raw - 1).std() == pytest.approx(0.01, rel=0.05)
    assert stages.prnu(raw, 0.0, 7) is raw and stages.fixed_pattern(raw, 0.0, 0.0, 7, 5000.0, 1.0) is raw


@pytest.mark.parametrize("method", ALL_DEMOSAIC_METHODS)
def test_each_demosaicing_algorithm_reconstructs_a_smooth_image_within_2_percent(method):
    """A smooth colour image (independent sinusoids per channel, amplitude 0.25–0.3): every
    algorithm within RMS 0.02 of the truth away from the border, for every CFA phase."""
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    img = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (xx / 40 + yy / 55)), 0.5 + 0.3 * np.cos(2 * np.pi * (xx / 50 - yy / 35)),
                    0.4 + 0.25 * np.sin(2 * np.pi * yy / 30 + 1)]).astype(np.float32)
    for pattern in CFA_PATTERNS:
        out = isp.demosaic(isp.mosaic(img, pattern), pattern, method)
        assert float(np.sqrt(((out - img)[:, 4:-4, 4:-4] ** 2).mean())) < 0.02


def test_new_demosaicing_algorithms_are_their_own():
    img = render_scene(3, 0, (64, 96), 2.0).radiance[:, ::2, ::2]
    raw = isp.mosaic(img / img.max(), "GRBG")
    outs = {m: isp.demosaic(raw, "GRBG", m) for m in ALL_DEMOSAIC_METHODS}
    for new in ("ahd", "frequency"):
        assert all(np.abs(outs[new] - outs[m]).mean() > 1e-4 for m in outs if m != new)


# ---------------------------------------------------------------------- scenes

def test_texture_scenes_are_seeded_and_off_by_default():
    a = make_scene(5, 0, (64, 96), 2.0)
    assert np.array_equal(a.radiance, render_scene(5, 0, (64, 96), 2.0).radiance)
    kinds = {make_scene(i, 0, (64, 96), 2.0, texture_share=1.0).kind for i in range(12)}
    assert kinds <= set(TEXTURE_KINDS) and len(kinds) >= 3
    for kind in TEXTURE_KINDS:
        s1, s2 = texture_scene(1, 0, (64, 96), 2.0, 0, kind), texture_scene(1, 0, (64, 96), 2.0, 0, kind)
        assert np.array_equal(s1.radiance, s2.radiance) and np.isfinite(s1.radiance).all() and s1.radiance.min() > 0


def test_defocus_blurs_each_scene_by_its_own_seeded_amount_and_keeps_older_cache_keys():
    def detail(radiance: np.ndarray) -> float:  # pixel-scale energy: mean |horizontal difference|
        return float(np.abs(np.diff(radiance, axis=2)).mean())

    sharp = [make_scene(i, 0, (64, 96), 2.0) for i in range(8)]
    soft = [make_scene(i, 0, (64, 96), 2.0, defocus=2.0) for i in range(8)]
    again = make_scene(3, 0, (64, 96), 2.0, defocus=2.0)
    assert np.array_equal(again.radiance, soft[3].radiance)  # seeded per scene
    ratios = np.array([detail(b.radiance) / detail(a.radiance) for a, b in zip(sharp, soft)])
    # each its own σ in [0, 2] px (one near 0 may leave its scene as it was)
    assert (ratios <= 1.0).all() and (ratios < 0.9).sum() >= 6 and ratios.max() - ratios.min() > 0.1, ratios
    assert [a.kind for a in sharp] == [b.kind for b in soft]  # the same scenes, out of focus
    assert np.allclose([a.radiance.mean() for a in sharp], [b.radiance.mean() for b in soft], rtol=0.02)
    fine = {"jpeg": {"fine_share": 0.4}}
    assert cache_key(synth_settings(fine))["synth"]["scenes"] == {"texture_share": 0.0}  # as before while off
    assert cache_key(synth_settings({**fine, "scenes": {"defocus": 1.5}}))["synth"]["scenes"]["defocus"] == 1.5
    off = dataclasses.asdict(synth_settings({"scenes": {"defocus": 0.0}}))  # the node as Hydra gives it
    assert "synth" not in data_fingerprint({"_target_": "camsim.data.sources.SynthSource", "synth": off})


@pytest.mark.parametrize("scenes", [{"defocus": 3.0}, {"shadow_ev": 3.0}])
def test_scene_settings_reach_the_rendered_catalogue_and_the_splices(tmp_path, scenes):
    from camsim.synth.splice import render_splices

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in (".jpg", ".png")}

    before = files(render_catalogue(tmp_path / "a", 2, 1, 3, (32, 48), seed=0, workers=0))
    after = files(render_catalogue(tmp_path / "b", 2, 1, 3, (32, 48), seed=0, workers=0,
                                   synth={"scenes": scenes}))
    assert before.keys() == after.keys() and sum(before[k] != after[k] for k in before) >= 4
    a = render_splices(tmp_path / "sa", 2, (32, 48), seed=0, num_models=2, num_families=1, control_fraction=0.0,
                       workers=0)
    b = render_splices(tmp_path / "sb", 2, (32, 48), seed=0, num_models=2, num_families=1, control_fraction=0.0,
                       workers=0, synth={"scenes": scenes})
    assert files(a) != files(b)


def test_cast_shadows_darken_part_of_each_scene_by_its_own_seeded_depth_and_keep_older_cache_keys():
    lit = [make_scene(i, 0, (64, 96), 2.0) for i in range(8)]
    shaded = [make_scene(i, 0, (64, 96), 2.0, shadow_ev=3.0) for i in range(8)]
    assert np.array_equal(make_scene(3, 0, (64, 96), 2.0, shadow_ev=3.0).radiance, shaded[3].radiance)  # seeded
    assert [a.kind for a in lit] == [b.kind for b in shaded]  # the same scenes, under another light
    depths, covers = [], []
    for a, b in zip(lit, shaded):
        lit_green = a.radiance[1]
        light = np.where(lit_green > 1e-6, b.radiance[1] / np.maximum(lit_green, 1e-6), 1.0)  # black stays black
        assert light.max() <= 1.0 + 1e-5 and light.min() >= 2.0 ** -3.0 - 1e-5  # never brighter, at most 3 EV
        depths.append(-np.log2(light.min()))
        covers.append(float((light < light.min() * 1.1).mean()) if light.min() < 0.9 else None)
    # each scene its own depth in [0, 3] EV; a deep shadow covers a region (20–60 % of the frame, less its penumbra)
    assert max(depths) - min(depths) > 0.5 and sum(d > 0.5 for d in depths) >= 5, depths
    assert all(0.05 < c < 0.65 for c in covers if c is not None), covers
    fine = {"jpeg": {"fine_share": 0.4}}
    assert cache_key(synth_settings(fine))["synth"]["scenes"] == {"texture_share": 0.0}  # as before while off
    assert cache_key(synth_settings({**fine, "scenes": {"shadow_ev": 3.0}}))["synth"]["scenes"]["shadow_ev"] == 3.0


def test_sky_and_text_scenes_hold_lower_entropy_patches_than_dead_leaves():
    """Through a camera, 64-px patches of sky and text scenes have lower entropy (more of them
    near the filter's threshold, like clear sky and blank paper) than dead leaves; foliage is busy."""
    cam = make_catalogue(1, 1, 0)[0]

    def mean_entropy(scenes) -> float:
        out = []
        for scene in scenes:
            g = render_camera_image(scene, cam, (128, 192), np.random.default_rng(0))[:, :, 1]
            out.append(patch_entropy(g.reshape(2, 64, 3, 64).transpose(0, 2, 1, 3).reshape(-1, 64, 64)))
        return float(np.concatenate(out).mean())

    h = {kind: mean_entropy(texture_scene(i, 0, (128, 192), 2.0, 0, kind) for i in range(4)) for kind in TEXTURE_KINDS}
    leaves = mean_entropy(s for s in (render_scene(i, 0, (128, 192), 2.0) for i in range(8)) if s.kind == "dead_leaves")
    assert h["sky"] < leaves and h["text"] < leaves and h["foliage"] > h["sky"], (h, leaves)


# ---------------------------------------------------------------------- renders

def test_realistic_render_is_deterministic_across_workers(tmp_path):
    a = render_catalogue(tmp_path / "a", 4, 2, 4, (64, 96), seed=1, workers=1, synth=REAL)
    b = render_catalogue(tmp_path / "b", 4, 2, 4, (64, 96), seed=1, workers=2, synth=REAL)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and len(files) == 17
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert {Image.open(a / f).size for f in files if f.suffix == ".jpg"} == {(96, 64)}  # reduced-size photos too


def test_per_model_traits_refuse_catalogues_whose_streams_would_collide():
    """Family-level draws use the streams from 10,000 up: a model 10,000 or later would draw what
    a family draws, so such catalogues are refused by name while the traits are on."""
    with pytest.raises(CameraParamsError, match="num_models: at most 10,000 .* got 10,001"):
        catalogue(10_001, 6, 0, {"jpeg": {"fine_share": 0.4}})
