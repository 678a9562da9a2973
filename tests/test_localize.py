"""Splicing localisation engine (issue 7): patch grid, similarity graphs, both modes,
outputs and metrics. Models are replaced by a toy "camera" feature: the noise level of a
patch's prediction residual (host sigma 2, planted region sigma 8)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from camsim.localize.engine import MIN_DECIDABLE, LocalizationError, localize
from camsim.localize.graph import image_score, modularity, spectral_bipartition
from camsim.data.patches import cut_patches, patch_entropy
from camsim.localize.grid import patch_grid, patch_map_to_pixels
from camsim.localize.outputs import (best_of_inverted, detection_auc, pixel_f1, pixel_mcc,
                                     write_outputs)

# ----------------------------------------------------------------------------- toys

PLANT = (slice(70, 150), slice(100, 200))   # rows 70..149, cols 100..199: not on the 16-px grid


def toy_scene(h: int = 230, w: int = 310, seed: int = 0, plant: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Smooth texture + Gaussian noise (sigma 2 host, sigma 8 in the planted rectangle)."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(0.0, 1.0, (h, w)), 6)
    base = 128 + base / base.std() * 30
    gt = np.zeros((h, w), dtype=bool)
    if plant:
        gt[PLANT] = True
    noise = np.where(gt, 8.0, 2.0) * rng.standard_normal((h, w))
    return np.clip(base + noise, 0, 255).round().astype(np.uint8), gt


def toy_extract(patches: np.ndarray) -> np.ndarray:
    """1-d feature: log of the median |residual| of a 4-neighbour predictor (a noise level)."""
    x = patches.astype(np.float32)
    r = x[:, 1:-1, 1:-1] - 0.25 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
    return np.log(np.median(np.abs(r.reshape(len(x), -1)), axis=1) + 1e-3)[:, None].astype(np.float32)


def toy_score_matrix(F: np.ndarray, G: np.ndarray | None) -> np.ndarray:
    G = F if G is None else G
    d = F[:, None, 0] - G[None, :, 0]
    return np.exp(-d ** 2 / (2 * 0.35 ** 2))


def planted_similarity(sizes: tuple[int, ...], within: float, between: float, noise: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    S = np.where(truth[:, None] == truth[None, :], within, between)
    S = np.clip(S + rng.normal(0.0, noise, S.shape), 0.0, 1.0)   # not symmetric: the engine symmetrises
    return S, truth


# ----------------------------------------------------------------------------- graph

@pytest.mark.parametrize("sizes,noise", [((50, 50), 0.0), ((50, 50), 0.15), ((80, 20), 0.15), ((150, 12), 0.1)])
def test_spectral_bipartition_recovers_planted_blocks(sizes, noise):
    S, truth = planted_similarity(sizes, within=0.85, between=0.1, noise=noise, seed=1)
    perm = np.random.default_rng(2).permutation(len(truth))          # blocks not contiguous
    labels, info = spectral_bipartition(S[np.ix_(perm, perm)])
    truth = truth[perm]
    # label 1 = the smaller community = the second block (equal sizes: either side is fine)
    if sizes[0] == sizes[1]:
        assert (labels == truth).all() or (labels == 1 - truth).all()
    else:
        np.testing.assert_array_equal(labels, truth)
    assert info["sizes"] == (max(sizes), min(sizes))
    assert info["score"] > 0.3
    assert info["modularity"] > 0.0


def test_single_block_gets_low_score():
    S, _ = planted_similarity((120,), within=0.75, between=0.0, noise=0.2, seed=3)
    _, info = spectral_bipartition(S)
    assert info["score"] < 0.1
    S2, _ = planted_similarity((60, 60), within=0.85, between=0.1, noise=0.2, seed=3)
    assert spectral_bipartition(S2)[1]["score"] > info["score"] + 0.5


def test_two_exact_blocks_score_and_host_orientation():
    # Two blocks of n with zero diagonal: μ₂ = ((n−1)a − nb) / ((n−1)a + nb), score = μ₂.
    n, a, b = 10, 0.9, 0.1
    truth = np.repeat([0, 1], n)
    S = np.where(truth[:, None] == truth[None, :], a, b)
    labels, info = spectral_bipartition(S, host=15)                  # host in block 1
    np.testing.assert_array_equal(labels, 1 - truth)
    expected = ((n - 1) * a - n * b) / ((n - 1) * a + n * b)
    assert info["score"] == pytest.approx(expected, abs=1e-9)
    assert info["lambda2"] == pytest.approx(1 - expected, abs=1e-9)
    assert info["lambda3"] == pytest.approx(1 + a / ((n - 1) * a + n * b), abs=1e-9)
    assert image_score(1.3) == 0.0 and image_score(0.0) == 1.0


def test_modularity_hand_cases():
    W = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
    assert modularity(W, np.array([0, 0, 1, 1])) == pytest.approx(0.5)   # 2·(2/4 − (2/4)²)
    assert modularity(W, np.zeros(4)) == pytest.approx(0.0)
    assert modularity(W, np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    assert modularity(np.zeros((3, 3)), np.array([0, 1, 1])) == 0.0


# ----------------------------------------------------------------------------- grid

def test_patch_grid_covers_and_aligns():
    pos, (rows, cols) = patch_grid(100, 75, patch=32, stride=16)
    ys, xs = np.unique(pos[:, 0]), np.unique(pos[:, 1])
    np.testing.assert_array_equal(ys, [0, 16, 32, 48, 64, 68])     # 68 = 100 − 32 touches the border
    np.testing.assert_array_equal(xs, [0, 16, 32, 43])             # 43 = 75 − 32
    assert (rows, cols) == (6, 4) and len(pos) == 24
    np.testing.assert_array_equal(pos[:4], [[0, 0], [0, 16], [0, 32], [0, 43]])   # row-major
    covered = np.zeros((100, 75), dtype=int)
    for y, x in pos:
        covered[y:y + 32, x:x + 32] += 1
    assert covered.min() >= 1
    # stride not a multiple of 8: regular starts are rounded down to the 8-pixel grid
    pos, _ = patch_grid(100, 100, patch=32, stride=12)
    starts = np.unique(pos[:, 0])
    assert (starts[:-1] % 8 == 0).all() and starts[-1] == 68
    # cover_border=False keeps only aligned patches (the last pixels stay uncovered)
    pos, shape = patch_grid(100, 75, patch=32, stride=16, cover_border=False)
    assert (pos % 8 == 0).all() and shape == (5, 3)


def test_patch_grid_rejects_image_smaller_than_patch():
    with pytest.raises(LocalizationError, match="smaller than one patch"):
        patch_grid(20, 100, patch=32, stride=16)


def test_cut_patches_and_map_back_round_trip():
    h, w, p = 61, 83, 16
    yy, xx = np.mgrid[0:h, 0:w]
    pos, _ = patch_grid(h, w, patch=p, stride=8)
    # each patch's content says where it came from
    ycut, xcut = cut_patches(yy, pos, p), cut_patches(xx, pos, p)
    np.testing.assert_array_equal(ycut[:, 0, 0], pos[:, 0])
    np.testing.assert_array_equal(xcut[:, -1, -1], pos[:, 1] + p - 1)
    np.testing.assert_allclose(ycut.mean(axis=(1, 2)), pos[:, 0] + (p - 1) / 2)
    # per-patch means mapped back to pixels = brute-force average over covering patches
    img = (yy * 1000 + xx).astype(np.float64)
    means = cut_patches(img, pos, p).mean(axis=(1, 2))
    means[3] = np.nan                                               # one undecidable patch
    got = patch_map_to_pixels(means, pos, p, (h, w))
    total, count = np.zeros((h, w)), np.zeros((h, w))
    mx = np.full((h, w), -np.inf)
    for (y, x), m in zip(pos, means):
        if np.isfinite(m):
            total[y:y + p, x:x + p] += m
            count[y:y + p, x:x + p] += 1
            mx[y:y + p, x:x + p] = np.maximum(mx[y:y + p, x:x + p], m)
    np.testing.assert_allclose(got, total / count, rtol=1e-12)
    np.testing.assert_allclose(patch_map_to_pixels(means, pos, p, (h, w), reduce="max"), mx)
    # pixels covered only by undecidable patches are NaN
    only_first = np.full(len(pos), np.nan)
    only_first[0] = 1.0
    m = patch_map_to_pixels(only_first, pos, p, (h, w))
    assert np.isnan(m[p:, :]).all() and (m[:p, :p] == 1.0).all() and np.isnan(m[:, p:]).all()


def test_patch_entropy_hand_cases():
    # the data layer's entropy, on which the engine's "undecidable" rule (h <= 4 nats) rests
    flat = np.full((16, 16), 7, np.uint8)
    halves = np.zeros((16, 16), np.uint8)
    halves[8:] = 255
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    h = patch_entropy(np.stack([flat, halves, ramp]))
    np.testing.assert_allclose(h, [0.0, np.log(2), np.log(256)], atol=1e-12)
    rnd = np.random.default_rng(0).integers(0, 40, (5, 8, 8)).astype(np.uint8)
    ref = []
    for patch in rnd:
        pk = np.bincount(patch.ravel(), minlength=256) / patch.size
        ref.append(-sum(q * np.log(q) for q in pk if q > 0))
    np.testing.assert_allclose(patch_entropy(rnd), ref, rtol=1e-12)


# ----------------------------------------------------------------------------- engine

F1_MIN = 0.75   # stated: the mask covers the planted rectangle with pixel F1 >= 0.75


@pytest.mark.parametrize("mode", ["graph", "reference"])
def test_localize_finds_planted_region(mode):
    green, gt = toy_scene(seed=0)
    res = localize(green, toy_extract, toy_score_matrix, patch=32, mode=mode)
    assert res.decision and res.mask.shape == gt.shape
    assert pixel_f1(res.mask, gt) >= F1_MIN
    assert np.nanmean(res.heatmap[gt]) > np.nanmean(res.heatmap[~gt]) + 0.3
    if mode == "reference":                                   # automatic reference lies in the host
        y, x = res.reference
        assert not gt[y:y + 32, x:x + 32].any()


@pytest.mark.parametrize("mode", ["reference", "graph"])
def test_reference_inside_splice_lights_up_the_host(mode):
    # graph mode: the community holding the reference pixel is taken as the host
    green, gt = toy_scene(seed=1)
    res = localize(green, toy_extract, toy_score_matrix, patch=32, mode=mode, reference=(110, 150))
    y, x = res.reference
    assert gt[y:y + 32, x:x + 32].all()
    assert pixel_f1(res.mask, gt) < 0.2                        # the host is flagged, not the splice
    assert best_of_inverted(pixel_f1, res.mask, gt) >= 0.6


@pytest.mark.parametrize("mode", ["graph", "reference"])
def test_unspliced_image_is_not_flagged(mode):
    green, _ = toy_scene(seed=5, plant=False)
    res = localize(green, toy_extract, toy_score_matrix, patch=32, mode=mode)
    assert not res.decision and res.score < res.threshold


def test_features_once_per_decidable_patch_in_batches_and_undecidable_nan():
    green, gt = toy_scene(seed=2)
    green[:, :48] = 255                                        # saturated strip: entropy 0
    calls = []

    def extract(patches):
        calls.append(len(patches))
        return toy_extract(patches)

    res = localize(green, extract, toy_score_matrix, patch=32, stride=16, mode="graph", batch=50)
    assert max(calls) <= 50 and sum(calls) == res.n_decidable < len(res.positions)
    assert not res.decidable[res.positions[:, 1] + 32 <= 48].any()
    assert np.isnan(res.heatmap[:, :16]).all() and not res.mask[:, :16].any()
    assert np.isnan(res.scores[~res.decidable]).all()
    assert pixel_f1(res.mask, gt) >= F1_MIN


def _constant(patches):
    return np.zeros((len(patches), 1), np.float32)


@pytest.mark.parametrize("kwargs,message", [
    (dict(green=np.zeros((64, 64, 3), np.uint8)), "green must be a 2-D"),
    (dict(green=np.zeros(64, np.uint8)), "green must be a 2-D"),
    (dict(green=np.zeros((64, 64), np.float32)), "green must be uint8"),
    (dict(green=np.zeros((20, 64), np.uint8)), "smaller than one patch"),
    (dict(green=np.full((64, 64), 9, np.uint8)), f"needs at least {MIN_DECIDABLE['graph']}"),
    (dict(green=np.full((64, 64), 9, np.uint8), mode="reference"), f"needs at least {MIN_DECIDABLE['reference']}"),
    (dict(mode="clusters"), "mode must be one of"),
    (dict(mode="reference", reference=(500, 5)), "outside the image"),
    (dict(mode="reference", reference="centre"), "reference must be"),
    (dict(patch=0), "patch must be a positive integer"),
    (dict(extract=lambda p: np.zeros((3, 1), np.float32)), "extract must return"),
    (dict(score_matrix=lambda F, G: np.full((len(F), len(G)), np.nan)), "score_matrix returned NaN"),
])
def test_bad_input_gives_clear_error(kwargs, message):
    green, _ = toy_scene(64, 96, seed=4, plant=False)
    args = dict(green=green, extract=toy_extract, score_matrix=toy_score_matrix, patch=32)
    args.update(kwargs)
    with pytest.raises(LocalizationError, match=message) as err:
        localize(**args)
    assert isinstance(err.value, ValueError)
    if "too few" in message or "needs at least" in message:
        assert "too few decidable patches: 0 of" in str(err.value)


# ----------------------------------------------------------------------------- outputs

@pytest.mark.parametrize("mode", ["graph", "reference"])
def test_outputs_written_for_non_square_image_off_the_stride(tmp_path, mode):
    green, _ = toy_scene(101, 157, seed=6)                     # 101, 157: not multiples of 16
    rgb = np.stack([green, green // 2, green], axis=-1)
    res = localize(green, toy_extract, toy_score_matrix, patch=32, stride=16, mode=mode)
    line = write_outputs(res, tmp_path / "run", rgb=rgb if mode == "graph" else None)
    out = tmp_path / "run"
    assert "\n" not in line and f"score {res.score:.4f}" in line
    assert line.startswith("spliced" if res.decision else "not spliced")
    for name in ("overlay.png", "heatmap.png", "scores.npy", "mask.png", "patches.npz"):
        assert (out / name).stat().st_size > 0
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask.shape == (101, 157) and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, res.mask)
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (101, 157, 3)
    scores = np.load(out / "scores.npy")
    assert scores.shape == (101, 157)
    np.testing.assert_allclose(scores, res.heatmap, rtol=1e-6, equal_nan=True)
    with np.load(out / "patches.npz") as z:
        np.testing.assert_array_equal(z["positions"], res.positions)
    with pytest.raises(ValueError, match="rgb must be uint8 with shape"):
        write_outputs(res, tmp_path / "bad", rgb=rgb[:, :100])


# ----------------------------------------------------------------------------- metrics

def test_pixel_metrics_hand_cases():
    gt = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)          # TP 1, FP 1, FN 1, TN 3
    assert pixel_f1(pred, gt) == pytest.approx(2 / 4)
    assert pixel_mcc(pred, gt) == pytest.approx((1 * 3 - 1 * 1) / np.sqrt(2 * 2 * 4 * 4))
    assert pixel_f1(gt, gt) == 1.0 and pixel_mcc(gt, gt) == pytest.approx(1.0)
    assert pixel_mcc(~gt, gt) == pytest.approx(-1.0) and pixel_f1(~gt, gt) == 0.0
    assert best_of_inverted(pixel_f1, ~gt, gt) == 1.0
    assert best_of_inverted(pixel_mcc, ~gt, gt) == pytest.approx(1.0)
    assert pixel_f1(np.zeros_like(gt), np.zeros_like(gt)) == 0.0          # documented convention
    assert pixel_mcc(np.zeros_like(gt), gt) == 0.0
    assert pixel_f1(np.where(pred, 255, 0).astype(np.uint8), gt) == pytest.approx(0.5)  # 0/255 masks
    with pytest.raises(ValueError, match="same shape"):
        pixel_f1(pred, gt[:, :2])


def test_detection_auc_hand_cases():
    assert detection_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert detection_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)        # tie counts 1/2
    assert detection_auc([3, 2, 1], [0, 0, 1]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        detection_auc([0.1, 0.2], [1, 1])
