"""Simulated cameras (camsim.synth): pipeline stages one by one, parameters, catalogue
layout, determinism, splices and the difficulty statistics."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin
from scipy import ndimage

from camsim.artefacts import cached_dir
from camsim.synth import isp
from camsim.eval.difficulty import (
    difficulty_report,
    family_summary,
    fit_predict,
    global_stats_features,
    jpeg_features,
    pairwise_from_confusion,
    residual_features,
)
from camsim.synth.params import (
    ALL_DEMOSAIC_METHODS,
    CFA_PATTERNS,
    DEMOSAIC_METHODS,
    CameraParams,
    CameraParamsError,
    make_catalogue,
)
from camsim.synth.render import (canvas_factor, catalogue_files, load_cameras, render_camera_image,
                                 render_catalogue, render_missing)
from camsim.synth.scenes import PHOTO_NAMES, area_resize, load_photo, render_scene, scene_id
from camsim.synth.splice import decoded_camera_image, make_splice, random_mask, render_splices

RGB = (0.1, 0.5, 0.9)


def flat_rgb(h: int = 16, w: int = 20, rgb=RGB) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32)[:, None, None], (3, h, w)).copy()


# ---------------------------------------------------------------------- CFA and demosaicing

@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_cfa_puts_each_colour_at_its_sites(pattern):
    mos = isp.mosaic(flat_rgb(), pattern)
    value = dict(zip("RGB", RGB))
    for (dy, dx), letter in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        np.testing.assert_allclose(mos[dy::2, dx::2], value[letter])
    masks = isp.cfa_masks(pattern, (4, 6))
    assert masks.sum(axis=0).tolist() == np.ones((4, 6)).tolist()  # one colour per site
    assert masks[1].sum() == 12 and masks[0].sum() == 6 and masks[2].sum() == 6


def test_cfa_hand_example_rggb():
    rgb = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # R 0..3, G 4..7, B 8..11
    assert isp.mosaic(rgb, "RGGB").tolist() == [[0, 5], [6, 11]]
    assert isp.mosaic(rgb, "GBRG").tolist() == [[4, 9], [2, 7]]


@pytest.mark.parametrize("method", ALL_DEMOSAIC_METHODS)
@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_mosaic_then_demosaic_of_flat_image_is_flat(method, pattern):
    out = isp.demosaic(isp.mosaic(flat_rgb(), pattern), pattern, method)
    assert out.shape == (3, 16, 20)
    for c in range(3):
        np.testing.assert_allclose(out[c], RGB[c], atol=1e-6)


@pytest.mark.parametrize("method", ALL_DEMOSAIC_METHODS)
def test_demosaic_reproduces_a_grey_linear_ramp_inside(method):
    ramp = np.linspace(0.1, 0.9, 24, dtype=np.float32)[None, None, :] + np.zeros((3, 16, 1), np.float32)
    out = isp.demosaic(isp.mosaic(ramp, "RGGB"), "RGGB", method)
    np.testing.assert_allclose(out[:, 3:-3, 3:-3], ramp[:, 3:-3, 3:-3], atol=1e-5)


def test_bilinear_green_at_red_site_is_mean_of_four_neighbours():
    raw = np.arange(36, dtype=np.float32).reshape(6, 6) ** 1.5
    out = isp.demosaic(raw, "RGGB", "bilinear")
    y, x = 2, 2  # an R site of RGGB
    assert out[1, y, x] == pytest.approx((raw[1, 2] + raw[3, 2] + raw[2, 1] + raw[2, 3]) / 4)
    assert out[0, y, x] == pytest.approx(raw[y, x])  # measured colour is kept


def test_malvar_filters_equal_the_published_kernels():
    raw = np.random.default_rng(0).random((12, 14)).astype(np.float32)
    fast = isp._malvar_filters(raw)
    for got, k in zip(fast, (isp._K_MHC_G, isp._K_MHC_ROW, isp._K_MHC_COL, isp._K_MHC_DIAG)):
        np.testing.assert_allclose(got, ndimage.correlate(raw, k, mode="mirror"), atol=1e-5)
    for k in (isp._K_MHC_G, isp._K_MHC_ROW, isp._K_MHC_COL, isp._K_MHC_DIAG):
        assert k.sum() == pytest.approx(1.0)


def test_demosaic_bad_input_names_the_field():
    with pytest.raises(ValueError, match="demosaic"):
        isp.demosaic(np.zeros((4, 4), np.float32), "RGGB", "nearest")
    with pytest.raises(ValueError, match="cfa"):
        isp.demosaic(np.zeros((4, 4), np.float32), "RGBG", "bilinear")
    with pytest.raises(ValueError, match="raw"):
        isp.demosaic(np.zeros((5, 4), np.float32), "RGGB", "bilinear")


# ---------------------------------------------------------------------- sensor and processing stages

def test_sensor_noise_variance_follows_poisson_gaussian_model():
    raw = np.full((400, 400), 0.3, np.float32)
    fw, read, gain = 5000.0, 4.0, 2.0
    noisy = isp.sensor_noise(raw, fw, read, gain, np.random.default_rng(0))
    expected = 0.3 * gain / fw + (read * gain / fw) ** 2
    assert noisy.var() == pytest.approx(expected, rel=0.03)
    assert noisy.mean() == pytest.approx(0.3, abs=1e-4)


def test_iso_gain_spans_the_cameras_iso_range():
    assert isp.iso_gain(0.0, 100, 3200) == 1.0
    assert isp.iso_gain(1.0, 100, 3200) == pytest.approx(32.0)


def test_adc_quantise_rounds_to_the_bit_depth_with_black_pedestal():
    x = np.array([-0.5, -0.001, 0.0, 0.5, 1.0, 1.7], np.float32)
    q = isp.adc_quantise(x, 10)
    full, black = 1023.0, 64.0
    dn = q * (full - black) + black
    np.testing.assert_allclose(dn, np.round(dn), atol=1e-3)  # on the ADC grid
    assert q[0] == pytest.approx(-black / (full - black))  # clipped at 0 DN
    assert q[-1] == pytest.approx(1.0)  # clipped at white
    assert q[1] < 0  # small negative noise survives the pedestal
    assert len(np.unique(isp.adc_quantise(np.linspace(0, 1, 5000, dtype=np.float32), 10))) == 1023 - 64 + 1


def test_white_balance_multiplies_each_site_by_its_colour_gain():
    raw = np.ones((4, 4), np.float32)
    out = isp.white_balance(raw, "BGGR", (2.0, 1.0, 1.5))
    assert out[0, 0] == 1.5 and out[0, 1] == 1.0 and out[1, 0] == 1.0 and out[1, 1] == 2.0


def test_colour_matrix_hand_case_and_white_preserved():
    m = np.array([[1.5, -0.3, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], np.float32)
    out = isp.apply_colour_matrix(flat_rgb(2, 2, (0.2, 0.4, 0.6)), m)
    np.testing.assert_allclose(out[:, 0, 0], m @ np.array([0.2, 0.4, 0.6]), rtol=1e-6)
    np.testing.assert_allclose(isp.apply_colour_matrix(flat_rgb(2, 2, (0.5, 0.5, 0.5)), m), 0.5, rtol=1e-6)


def test_tone_curve_is_monotone_from_black_to_white():
    for gamma, contrast in [(2.0, 0.0), (2.4, 0.35), (2.2, 0.2)]:
        lut = isp.tone_lut(gamma, contrast)
        assert lut[0] == pytest.approx(0.0, abs=1e-7) and lut[-1] == pytest.approx(1.0, abs=1e-6)
        assert np.all(np.diff(lut) >= 0)
    mid = isp.tone_curve(np.full((3, 1, 1), 0.18, np.float32), 2.2, 0.0)
    assert mid.ravel()[0] == pytest.approx(0.18 ** (1 / 2.2), abs=1e-4)


def test_denoise_and_sharpen_leave_flat_images_alone_and_act_on_noise():
    flat = flat_rgb()
    np.testing.assert_allclose(isp.denoise(flat, 1.0, 1.5, 0.01), flat, atol=1e-6)
    np.testing.assert_allclose(isp.sharpen(flat, 1.0, 1.0), flat, atol=1e-6)
    noisy = flat + np.random.default_rng(0).normal(0, 0.01, flat.shape).astype(np.float32)
    assert isp.denoise(noisy, 1.0, 1.5, 0.01).std(axis=(1, 2)).mean() < 0.7 * noisy.std(axis=(1, 2)).mean()
    assert isp.sharpen(noisy, 1.0, 1.0).std(axis=(1, 2)).mean() > 1.3 * noisy.std(axis=(1, 2)).mean()


def test_resample_and_to_uint8():
    x = np.random.default_rng(0).random((3, 40, 60)).astype(np.float32)
    assert isp.resample(x, (30, 45), "lanczos").shape == (3, 30, 45)
    img = isp.to_uint8(np.stack([np.full((2, 2), v, np.float32) for v in (-0.1, 0.5, 1.2)]))
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8 and img[0, 0].tolist() == [0, 128, 255]


def _jpeg_luma_table_sum(data: bytes) -> int:
    return int(np.sum(Image.open(io.BytesIO(data)).quantization[0]))


def test_jpeg_quality_and_subsampling_are_honoured():
    rng = np.random.default_rng(0)
    img = (ndimage.gaussian_filter(rng.random((96, 128, 3)), (1.5, 1.5, 0)) * 255).astype(np.uint8)
    qualities = [75, 85, 92, 98]
    blobs = [isp.encode_jpeg(img, q, "444") for q in qualities]
    tables = [_jpeg_luma_table_sum(b) for b in blobs]
    sizes = [len(b) for b in blobs]
    assert tables == sorted(tables, reverse=True) and len(set(tables)) == len(tables)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for sub, code in (("444", 0), ("422", 1), ("420", 2)):
        assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(isp.encode_jpeg(img, 90, sub)))) == code
    with pytest.raises(ValueError, match="jpeg_quality"):
        isp.encode_jpeg(img, 0, "444")


# ---------------------------------------------------------------------- parameters and catalogue

def test_camera_params_round_trip_through_json():
    cam = make_catalogue(3, 2, seed=5)[2]
    d = json.loads(json.dumps(cam.to_dict()))
    assert CameraParams.from_dict(d) == cam


@pytest.mark.parametrize("field, value", [
    ("cfa", "RGBW"), ("demosaic", "nearest"), ("jpeg_quality", 0), ("jpeg_quality", 101),
    ("colour_matrix", [[1, 0, 0], [0, 1, 0], [1, 0, 0]]), ("colour_matrix", [[1, 0], [0, 1]]),
    ("jpeg_subsampling", "411"), ("resample_kernel", "box"), ("full_well", -5.0),
    ("wb_gains", (1.0, 2.0)), ("blur_sigma", "wide"), ("name", "a/b"), ("iso_max", 10),
    ("jpeg_quality", float("inf")), ("jpeg_quality", float("nan")),
])
def test_invalid_params_raise_errors_naming_the_field(field, value):
    d = CameraParams(name="cam", family="fam").to_dict()
    d[field] = value
    with pytest.raises(CameraParamsError, match=field):
        CameraParams.from_dict(d)


def test_from_dict_unknown_or_missing_keys_are_named():
    d = CameraParams(name="cam", family="fam").to_dict()
    with pytest.raises(CameraParamsError, match="lens"):
        CameraParams.from_dict({**d, "lens": 3})
    del d["gamma"]
    with pytest.raises(CameraParamsError, match="gamma"):
        CameraParams.from_dict(d)


def test_catalogue_is_seeded_and_extends_camera_for_camera():
    small, large = make_catalogue(5, 3, seed=1), make_catalogue(12, 3, seed=1)
    assert small == large[:5]
    assert make_catalogue(5, 3, seed=2) != small
    names = [c.name for c in large]
    assert len(set(names)) == 12 and all(n.startswith(c.family + "_") for n, c in zip(names, large))
    assert {c.family for c in large} == {"F00", "F01", "F02"}
    with pytest.raises(CameraParamsError, match="num_models"):
        make_catalogue(0, 1, seed=0)
    with pytest.raises(CameraParamsError, match="num_families"):
        make_catalogue(3, 5, seed=0)


def test_catalogue_parameters_stay_in_realistic_ranges():
    cams = make_catalogue(60, 6, seed=0)
    assert all(75 <= c.jpeg_quality <= 98 for c in cams)
    assert {c.cfa for c in cams} == set(CFA_PATTERNS) and {c.demosaic for c in cams} == set(DEMOSAIC_METHODS)
    assert 0 < sum(c.resample_scale != 1.0 for c in cams) < 20
    for c in cams:
        m = np.asarray(c.colour_matrix)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-3)  # white stays white
        assert np.all(np.linalg.inv(m) >= -1e-6)  # a physical sensor response


def test_same_family_models_share_more_parameters_than_cross_family():
    cams = make_catalogue(30, 5, seed=0)
    keys = ["cfa", "demosaic", "jpeg_subsampling", "adc_bits", "sharpen_radius", "denoise_chroma"]

    def shared(a, b):
        return np.mean([getattr(a, k) == getattr(b, k) for k in keys])

    within = [shared(a, b) for i, a in enumerate(cams) for b in cams[i + 1:] if a.family == b.family]
    cross = [shared(a, b) for i, a in enumerate(cams) for b in cams[i + 1:] if a.family != b.family]
    assert np.mean(within) > 0.8 > 0.5 > np.mean(cross)


# ---------------------------------------------------------------------- scenes

def test_all_bundled_photos_load_offline():
    for name in PHOTO_NAMES:
        p = load_photo(name)
        assert p.ndim == 3 and p.shape[2] == 3 and p.shape[0] >= 150 and 0 <= p.min() and p.max() <= 1


def test_scene_is_seeded_and_the_same_content_at_any_canvas_factor():
    a = render_scene(3, 0, (48, 64), 2.0)
    b = render_scene(3, 0, (48, 64), 2.0)
    assert np.array_equal(a.radiance, b.radiance) and a.radiance.shape == (3, 96, 128)
    c = render_scene(3, 0, (48, 64), 3.0)
    assert (c.kind, c.darkness) == (a.kind, a.darkness)
    sa, sc = area_resize(a.radiance, (48, 64)), area_resize(c.radiance, (48, 64))
    assert np.corrcoef(sa.ravel(), sc.ravel())[0, 1] > 0.9
    assert not np.array_equal(render_scene(4, 0, (48, 64), 2.0).radiance, a.radiance)


def test_dead_leaves_scene_has_texture_at_all_scales():
    for i in range(6):
        s = render_scene(i, 7, (64, 96), 2.0)
        if s.kind == "dead_leaves":
            g = area_resize(s.radiance, (64, 96))[1]
            assert np.abs(np.diff(g, axis=1)).mean() > 0.005 and g.std() > 0.05
            return
    pytest.fail("no dead-leaves scene among 6")


# ---------------------------------------------------------------------- rendering

def test_two_models_leave_measurably_different_residual_statistics():
    cams = make_catalogue(2, 2, seed=0)  # two families
    scene = render_scene(0, 0, (128, 128), 2.0)

    def feats(cam, noise_seed):
        img = render_camera_image(scene, cam, (128, 128), np.random.default_rng(noise_seed))
        g = img[:, :, 1]
        patches = np.stack([g[y:y + 32, x:x + 32] for y in range(0, 128, 32) for x in range(0, 128, 32)])
        return residual_features(patches).mean(axis=0)

    same = np.abs(feats(cams[0], 1) - feats(cams[0], 2)).sum()  # only the noise differs
    other = np.abs(feats(cams[0], 1) - feats(cams[1], 1)).sum()
    assert other > 3 * same


def test_resampling_model_writes_the_same_frame_size():
    cam = CameraParams(name="small", family="f", resample_scale=0.75, resample_kernel="bilinear")
    assert cam.sensor_shape((96, 128)) == (128, 172)  # 128 / 0.75 = 170.7: rounded, then made even
    scene = render_scene(0, 0, (96, 128), 2.0 / 0.75)
    img = render_camera_image(scene, cam, (96, 128), np.random.default_rng(0))
    assert img.shape == (96, 128, 3)


@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
def test_cfa_phase_trace_survives_on_the_2px_lattice_and_resampling_removes_it(method):
    """Green residual energy differs between measured and interpolated G sites of the frame's
    own 2-px lattice; a model that resamples its output loses that phase trace."""
    scene = render_scene(1, 0, (128, 192), 2.0 / 0.75)

    def g_site_ratio(scale):
        cam = CameraParams(name="a", family="f", cfa="GRBG", demosaic=method, resample_scale=scale)
        g = render_camera_image(scene, cam, (128, 192), np.random.default_rng(0)).astype(np.float32)[:, :, 1]
        r = g[1:-1, 1:-1] - 0.25 * (g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:])
        at_g = isp.cfa_channel_map("GRBG", (128, 192))[1:-1, 1:-1] == 1
        return (r[at_g] ** 2).mean() / (r[~at_g] ** 2).mean()

    assert abs(np.log(g_site_ratio(1.0))) > 0.3
    assert abs(np.log(g_site_ratio(0.75))) < 0.05


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_catalogue_layout_cameras_json_and_shared_scene_ids(tmp_path):
    out = render_catalogue(tmp_path / "cat", 4, 2, 3, (48, 64), seed=0, workers=0)
    meta = json.loads((out / "cameras.json").read_text())
    names = [c.name for c in make_catalogue(4, 2, 0)]
    assert sorted(meta["cameras"]) == sorted(names)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(names)
    stems = [scene_id(i) for i in range(3)]
    assert meta["scene_ids"] == stems and meta["image_size"] == [48, 64] and meta["ext"] == "jpg"
    for n in names:
        assert sorted(p.stem for p in (out / n).iterdir()) == stems  # same scene ids for every model
        assert Image.open(out / n / "scene00000.jpg").size == (64, 48)
    assert meta["families"] == {"F00": [names[0], names[2]], "F01": [names[1], names[3]]}
    assert load_cameras(out) == {c.name: c for c in make_catalogue(4, 2, 0)}
    # the same scene through two cameras: same content, different pixels
    a = np.asarray(Image.open(out / names[0] / "scene00001.jpg"), np.float32)[:, :, 1]
    b = np.asarray(Image.open(out / names[1] / "scene00001.jpg"), np.float32)[:, :, 1]
    c = np.asarray(Image.open(out / names[1] / "scene00002.jpg"), np.float32)[:, :, 1]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8 > np.corrcoef(a.ravel(), c.ravel())[0, 1]
    with pytest.raises(ValueError, match="out_dir"):
        render_catalogue(out, 4, 2, 3, (48, 64), seed=0, workers=0)


def test_render_catalogue_is_deterministic_across_runs_and_workers(tmp_path):
    a = render_catalogue(tmp_path / "a", 3, 2, 2, (32, 48), seed=3, workers=0)
    b = render_catalogue(tmp_path / "b", 3, 2, 2, (32, 48), seed=3, workers=2)
    ta, tb = _tree(a), _tree(b)
    assert ta == tb
    files = [k for k in ta if k.endswith(".jpg")]
    by_scene = {}
    for k in files:
        by_scene.setdefault(k.split("/")[1], set()).add(ta[k])
    assert all(len(v) == 3 for v in by_scene.values())  # every model gives different bytes
    c = render_catalogue(tmp_path / "c", 3, 2, 2, (32, 48), seed=4, workers=0)
    assert _tree(c)["F00_M00/scene00000.jpg"] != ta["F00_M00/scene00000.jpg"]


def test_images_rendered_on_demand_are_the_whole_renders_bytes(tmp_path):
    full = _tree(render_catalogue(tmp_path / "full", 4, 2, 3, (32, 48), seed=3, workers=0))
    part = render_catalogue(tmp_path / "part", 4, 2, 3, (32, 48), seed=3, workers=0, images=False)
    assert not list(part.rglob("*.jpg")) and (part / "cameras.json").read_bytes() == full["cameras.json"]
    files = catalogue_files(part)
    some = [files[m][i] for k, m in enumerate(files) for i in range(3) if (k + i) % 2]  # half, every scene
    assert render_missing(part, some, workers=2) == len(some)
    assert {k: v for k, v in _tree(part).items() if k.endswith(".jpg")} == \
        {p.relative_to(part).as_posix(): full[p.relative_to(part).as_posix()] for p in some}
    assert render_missing(part, files) == 12 - len(some) and _tree(part) == full  # the rest, later: the same
    assert render_missing(part, files) == 0
    with pytest.raises(ValueError, match="not an image of the simulated-camera catalogue"):
        render_missing(part, [part / "F00_M00" / "scene00099.jpg"])


def test_render_catalogue_png_and_inside_cached_dir(tmp_path):
    key = {"num_models": 2, "num_families": 1, "images_per_model": 1, "image_size": [32, 32], "seed": 0}
    out = cached_dir(tmp_path, "synth", key, lambda tmp: render_catalogue(
        tmp, 2, 1, 1, (32, 32), seed=0, workers=0, jpeg=False))
    assert (out / "F00_M00" / "scene00000.png").exists() and (out / "key.json").exists()
    assert json.loads((out / "cameras.json").read_text())["ext"] == "png"
    with pytest.raises(ValueError, match="image_size"):
        render_catalogue(tmp_path / "odd", 2, 1, 1, (33, 32), seed=0, workers=0)
    with pytest.raises(ValueError, match="images_per_model"):
        render_catalogue(tmp_path / "none", 2, 1, 0, (32, 32), seed=0, workers=0)
    assert not (tmp_path / "odd").exists() and not (tmp_path / "none").exists()


# ---------------------------------------------------------------------- splices

def test_make_splice_takes_donor_pixels_exactly_where_the_mask_is_set():
    host = np.zeros((4, 5, 3), np.uint8)
    donor = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 2:4] = 255
    out = make_splice(host, donor, mask)
    assert (out[mask > 0] == 200).all() and (out[mask == 0] == 0).all()
    assert (host == 0).all()  # inputs untouched
    with pytest.raises(ValueError, match="mask"):
        make_splice(host, donor, mask[:, :4])
    with pytest.raises(ValueError, match="donor"):
        make_splice(host, donor[:, :4], mask)


def test_random_masks_cover_the_requested_area():
    rng = np.random.default_rng(0)
    for kind in ("rectangle", "ellipse", "blob"):
        m = random_mask((120, 160), rng, area=(0.1, 0.1), kind=kind)
        assert m.dtype == bool and 0.06 < m.mean() < 0.14, kind


def test_render_splices_writes_images_masks_and_manifest(tmp_path):
    out = render_splices(tmp_path / "spl", 4, (64, 96), seed=0, num_models=4, num_families=2,
                         control_fraction=0.25, workers=0)
    man = json.loads((out / "splices.json").read_text())
    recs = man["images"]
    assert len(recs) == 4 and sum(not r["spliced"] for r in recs) == 1
    cams = {c.name: c for c in make_catalogue(4, 2, 0)}
    for r in recs:
        img = np.asarray(Image.open(out / r["image"]))
        mask = np.asarray(Image.open(out / r["mask"]))
        assert img.shape == (64, 96, 3) and mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 255}
        host = decoded_camera_image(r["host_scene"], 0, cams[r["host_model"]], (64, 96),
                                    canvas_factor(list(cams.values())))
        if not r["spliced"]:
            assert r["donor_model"] is None and mask.max() == 0 and np.array_equal(img, host)
            continue
        assert r["donor_model"] != r["host_model"] and r["donor_model"] in man["cameras"]
        assert mask.mean() / 255 == pytest.approx(r["mask_fraction"])
        np.testing.assert_array_equal(img[mask == 0], host[mask == 0])
        assert not np.array_equal(img[mask > 0], host[mask > 0])
    with pytest.raises(ValueError, match="models"):
        render_splices(tmp_path / "x", 2, (64, 96), seed=0, num_models=4, num_families=2, models=["F09_M99"])
    with pytest.raises(ValueError, match="models: an empty list"):  # every image a control, still no camera
        render_splices(tmp_path / "y", 2, (64, 96), seed=0, num_models=4, num_families=2, models=[],
                       control_fraction=1.0)


# ---------------------------------------------------------------------- difficulty statistics

def test_global_stats_features_hand_computed():
    p = np.zeros((2, 8, 8), np.uint8)
    p[0] = 64
    p[1, :, :4] = 0
    p[1, :, 4:] = 255
    f = global_stats_features(p, bins=4)
    np.testing.assert_allclose(f[0], [64 / 255, 0, 0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(f[1], [0.5, 0.5, 0.5, 0, 0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="patches"):
        global_stats_features(p.astype(np.float32))


def test_residual_features_see_the_cfa_phase():
    flat = np.full((1, 16, 16), 100, np.uint8)
    assert np.all(np.isfinite(residual_features(flat)))
    chk = flat.copy()
    chk[0, ::2, ::2] += 8  # energy only on one 2x2 phase
    f = residual_features(chk)[0]
    phase = f[1:5]
    assert phase.argmax() != phase.argmin() and phase.max() > 1.1 > 0.9 > phase.min()


def test_jpeg_features_tell_jpeg_qualities_apart():
    """The same noisy scenes saved at JPEG quality 85 and 90: global statistics cannot tell
    them apart as well as the block-DCT histograms (the backbone's JPEG branch) can."""
    rng = np.random.default_rng(0)
    x, y = [], []
    for i in range(60):
        scene = np.clip(128 + rng.normal(0, 8, (32, 32)), 0, 255).astype(np.uint8)
        for label, quality in enumerate((85, 90)):
            buf = io.BytesIO()
            Image.fromarray(scene).save(buf, format="JPEG", quality=quality)
            x.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")))
            y.append(label)
    x, y = np.stack(x), np.array(y)
    f = jpeg_features(x)
    assert f.shape == (120, 27 * 31)
    train = np.arange(120) < 80  # whole scenes held out (two images per scene)
    acc = {name: (fit_predict(feats[train], y[train], feats[~train], 2) == y[~train]).mean()
           for name, feats in (("jpeg", f), ("global", global_stats_features(x)))}
    assert acc["jpeg"] > 0.95 and acc["jpeg"] > acc["global"] + 0.15, acc


def test_classifiers_separate_separable_data_and_pairwise_summaries():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(5, 1, (50, 3))])
    y = np.repeat([0, 1], 50)
    for clf in ("logistic", "centroid"):
        assert (fit_predict(x, y, x, 2, clf) == y).mean() == 1.0
    conf = np.array([[8, 2, 0], [2, 8, 0], [0, 0, 10]])
    pw = pairwise_from_confusion(conf, ["a", "b", "c"])
    assert pw == {("a", "b"): pytest.approx(0.8), ("a", "c"): 1.0, ("b", "c"): 1.0}
    within, cross = family_summary(pw, {"a": "F", "b": "F", "c": "G"})
    assert within == pytest.approx(0.8) and cross == 1.0


@pytest.mark.slow
def test_difficulty_global_stats_near_chance_traces_learnable_family_pairs_harder(tmp_path):
    """The issue's difficulty check on a small catalogue: global patch statistics stay near
    chance, trace statistics are far above it, and same-family pairs are harder."""
    out = render_catalogue(tmp_path / "cat", 8, 4, 16, (128, 192), seed=0, workers=2)
    meta = json.loads((out / "cameras.json").read_text())
    fam = {m: d["family"] for m, d in meta["cameras"].items()}
    data = {"train": ([], []), "test": ([], [])}
    for m in meta["cameras"]:
        for i, stem in enumerate(meta["scene_ids"]):
            g = np.asarray(Image.open(out / m / f"{stem}.jpg"))[:, :, 1]
            split = "test" if i % 4 == 0 else "train"  # whole scenes held out
            for y in range(0, 128, 32):
                for x in range(0, 192, 32):
                    data[split][0].append(g[y:y + 32, x:x + 32])
                    data[split][1].append(m)
    tr, te = [(np.stack(a), b) for a, b in (data["train"], data["test"])]
    glob = difficulty_report(tr[0], tr[1], te[0], te[1], fam, "global", pairwise=False)
    res = difficulty_report(tr[0], tr[1], te[0], te[1], fam, "residual")
    assert glob.accuracy < glob.chance + 0.15
    assert res.accuracy > glob.accuracy + 0.2
    assert res.within_family < res.cross_family


def _catalogue_patches(out, size: int = 32):
    """(train, test) = ([N, size, size] green patches, model names); every 4th scene is test."""
    meta = json.loads((out / "cameras.json").read_text())
    data = {"train": ([], []), "test": ([], [])}
    for m in meta["cameras"]:
        for i, stem in enumerate(meta["scene_ids"]):
            g = np.asarray(Image.open(out / m / f"{stem}.jpg"))[:, :, 1]
            split = "test" if i % 4 == 0 else "train"
            for y in range(0, g.shape[0] - size + 1, size):
                for x in range(0, g.shape[1] - size + 1, size):
                    data[split][0].append(g[y:y + size, x:x + size])
                    data[split][1].append(m)
    return [(np.stack(a), b) for a, b in (data["train"], data["test"])]


def test_jpeg_presets_vary_the_tables_per_photo_and_weaken_the_jpeg_shortcut(tmp_path):
    """jpeg_presets=3: photos of one model carry different quantisation tables, every other
    camera parameter stays as with one setting, and JPEG statistics alone tell the models apart
    less well than with one fixed setting per model (the shortcut is measurable and switchable)."""
    one = render_catalogue(tmp_path / "one", 6, 3, 16, (96, 128), seed=0, workers=2)
    three = render_catalogue(tmp_path / "three", 6, 3, 16, (96, 128), seed=0, workers=2,
                             synth={"jpeg": {"presets_per_model": 3}})
    cams1, cams3 = load_cameras(one), load_cameras(three)
    for name, cam in cams3.items():
        assert len(cam.jpeg_presets) == 2 and dataclasses.replace(cam, jpeg_presets=()) == cams1[name]
    tables = {m: {str(Image.open(p).quantization) for p in sorted((three / m).glob("*.jpg"))} for m in cams3}
    assert max(len(t) for t in tables.values()) >= 2
    assert all(len({str(Image.open(p).quantization) for p in (one / m).glob("*.jpg")}) == 1 for m in cams1)
    acc = {}
    for key, out in (("one", one), ("three", three)):
        (xtr, ytr), (xte, yte) = _catalogue_patches(out)
        acc[key] = difficulty_report(xtr, ytr, xte, yte, features_kind="jpeg", pairwise=False).accuracy
    assert acc["one"] > acc["three"] + 0.05, acc
    with pytest.raises(ValueError, match="jpeg_presets"):
        make_catalogue(4, 2, 0, jpeg_presets=0)
