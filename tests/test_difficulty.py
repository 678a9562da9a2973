"""``camsim-data difficulty``: hand-made-statistics classifiers on any source's photos, so a
simulated catalogue and real photos can be compared side by side (issue 18, "difficulty that
resembles the real world")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camsim.data.datamodules import families_of
from camsim.data.sources import FolderSource, SynthSource, listed_images, render_images
from camsim.data.store import PatchSettings
from camsim.eval.difficulty import source_difficulty
from tests.conftest import run_cli


def _folder(root: Path, qualities: dict[str, int], photos: int = 4, size: int = 160) -> Path:
    """One folder per 'camera model': the same textured scenes, each model saving at its own
    JPEG quality — the models differ in their JPEG tables only."""
    rng = np.random.default_rng(0)
    scenes = [np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8) for _ in range(photos)]
    for model, q in qualities.items():
        (root / model).mkdir(parents=True)
        for i, img in enumerate(scenes):
            Image.fromarray(img).save(root / model / f"img{i}.jpg", quality=q)
    return root


def test_jpeg_statistics_separate_models_that_differ_only_in_jpeg_quality(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", {"Acme_A": 50, "Acme_B": 95, "Zeta_C": 75})
    out, text = source_difficulty(FolderSource(str(root)).index(), PatchSettings.from_config(min_entropy=1.0),
                                  tmp_path / "art", patches_per_photo=4,
                                  families={"Acme_A": "acme", "Acme_B": "acme", "Zeta_C": "zeta"})
    assert out["difficulty/models"] == 3 and out["difficulty/chance"] == pytest.approx(1 / 3)
    # two photos per model train, two test; 4 patches each
    assert out["difficulty/train_patches"] == 3 * 2 * 4 and out["difficulty/test_patches"] == 3 * 2 * 4
    assert out["difficulty/jpeg/pairwise"] > 0.9  # the quantisation lattice tells them apart
    assert out["difficulty/jpeg/acc"] > out["difficulty/global/acc"]  # identical scenes: no global cue
    assert 0.0 <= out["difficulty/jpeg/pairwise_within_family"] <= 1.0
    assert "mean pairwise separability" in text and "alternately train / test" in text


def test_a_reshared_copy_sits_on_its_originals_side_and_the_majority_rate_is_stated(tmp_path: Path) -> None:
    """VISION-style names (data.variants=[nat,natWA]): D01_I_natWA_0001 is nat photo 0001 re-shared;
    alternating over files put one on each side. And with unequal patch counts the rate of always
    naming the largest model is said beside chance."""
    rng = np.random.default_rng(1)
    for model, q in (("Acme_A", 60), ("Zeta_B", 90)):
        (tmp_path / "v" / model).mkdir(parents=True)
        for k in range(3):
            img = np.clip(rng.normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
            for variant, quality in (("nat", q), ("natWA", 70)):
                Image.fromarray(img).save(tmp_path / "v" / model / f"D01_I_{variant}_{k:04d}.jpg", quality=quality)
    index = FolderSource(str(tmp_path / "v")).index()
    out, text = source_difficulty(index, PatchSettings.from_config(min_entropy=1.0), tmp_path / "art",
                                  patches_per_photo=1)
    # photos 0 and 2 (with their copies) train, photo 1 tests: 4 / 2 files per model, one 64-px cell each
    assert out["difficulty/train_patches"] == 2 * 4 and out["difficulty/test_patches"] == 2 * 2
    assert out["difficulty/majority"] == pytest.approx(0.5) and "always naming the model with most" in text
    assert sorted(Path(f).name for f in out["drawn"]["Acme_A/difficulty-test"]) == \
        ["D01_I_natWA_0001.jpg", "D01_I_nat_0001.jpg"]  # what was drawn, recorded


def test_model_subsample_is_seeded_and_bad_settings_name_the_key(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", {"A_1": 60, "B_2": 70, "C_3": 80, "D_4": 90}, photos=2, size=96)
    index = FolderSource(str(root)).index()
    s = PatchSettings.from_config(min_entropy=1.0)
    a, _ = source_difficulty(index, s, tmp_path / "art", max_models=2, patches_per_photo=2, seed=3)
    b, _ = source_difficulty(index, s, tmp_path / "art", max_models=2, patches_per_photo=2, seed=3)
    assert a == b and a["difficulty/models"] == 2
    with pytest.raises(ValueError, match="difficulty.max_models"):
        source_difficulty(index, s, tmp_path / "art", max_models=1)
    with pytest.raises(ValueError, match="difficulty.photos_per_model"):
        source_difficulty(index, s, tmp_path / "art", photos_per_model=1)
    one = _folder(tmp_path / "one", {"X_1": 80, "Y_2": 90}, photos=2, size=96)
    for p in sorted((one / "Y_2").glob("*.jpg"))[1:]:
        p.unlink()
    with pytest.raises(ValueError, match="1 camera model.s. with 2 or more photos .of 2.; .* at least 2 such"):
        source_difficulty(FolderSource(str(one)).index(), s, tmp_path / "art")
    # a model with a single photo is left out, and said so, when 2 or more others remain
    (one / "Z_3").mkdir()
    for p in sorted((one / "X_1").glob("*.jpg")):
        (one / "Z_3" / p.name).write_bytes(p.read_bytes())
    out, text = source_difficulty(FolderSource(str(one)).index(), s, tmp_path / "art", patches_per_photo=2)
    assert out["difficulty/models"] == 2 and out["difficulty/single_photo_models_left_out"] == 1
    assert "1 model(s) with a single photo left out" in text


def test_simulated_cameras_render_only_the_photos_the_check_draws(tmp_path: Path) -> None:
    source = SynthSource(6, 3, 4, (96, 96), workers=0, cache_dir=tmp_path / "art")
    out, _ = source_difficulty(listed_images(source), PatchSettings.from_config(min_entropy=1.0), tmp_path / "art",
                               max_models=3, photos_per_model=2, patches_per_photo=2,
                               render=lambda paths: render_images(source, paths))
    assert out["difficulty/models"] == 3
    rendered = sorted(source.root().rglob("*.jpg"))
    assert len(rendered) == 6 and len({p.parent.name for p in rendered}) == 3  # 2 photos of each model drawn


def test_families_are_the_simulators_else_the_makes_when_models_are_given(tmp_path: Path) -> None:
    synth = SynthSource(4, 2, 1, (32, 32))
    assert families_of(synth, ["Acme_A"]) == synth.families() and len(set(synth.families().values())) == 2
    folder = FolderSource(str(_folder(tmp_path / "photos", {"Acme_A": 80, "acme_B": 90, "Plain": 70}, 1, 32)))
    models = folder.index().models
    assert families_of(folder, models) == {"Acme_A": "acme", "acme_B": "acme"}  # "Plain": no make
    assert families_of(folder) == {}  # CameraData.families: makes are no families there


def test_cli_prints_the_table_and_writes_the_figures(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", {"Acme_A": 50, "Acme_B": 95}, photos=2, size=96)
    res = run_cli("camsim-data", "difficulty", "data=folder", f"data.root={root}", "patches.min_entropy=1.0",
                  "difficulty.patches_per_photo=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "JPEG block-DCT histograms" in res.stdout
    got = json.loads((tmp_path / "run" / "difficulty.json").read_text())
    assert got["difficulty/models"] == 2 and "difficulty/jpeg/pairwise" in got


def test_trace_statistics_see_a_cfa_lattice_correlated_residuals_and_jpeg_blocks():
    """What each statistic is for: green interpolated on one lattice (mean of its 4 neighbours, as
    bilinear demosaicing does) gives a lattice ratio far above 1; white noise none, and a negative
    residual autocorrelation; smoothed noise a positive one; block offsets on the 8×8 grid raise
    the JPEG-grid ratio."""
    from scipy import ndimage

    from camsim.eval.difficulty import RESIDUAL_COLUMNS, residual_features, trace_statistics

    rng = np.random.default_rng(0)
    white = rng.normal(128, 6, (40, 32, 32))
    assert residual_features(white.astype(np.uint8)).shape == (40, len(RESIDUAL_COLUMNS))  # names match columns
    interp = white.copy()
    pad = np.pad(white, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    mean4 = (pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]) / 4
    lattice = (np.add.outer(np.arange(32), np.arange(32)) % 2 == 0)
    interp[:, lattice] = mean4[:, lattice]
    smooth = 128 + 8 * ndimage.gaussian_filter(rng.normal(0, 6, (40, 32, 32)), (0, 1.0, 1.0))
    blocks = white + np.kron(rng.normal(0, 16, (40, 4, 4)), np.ones((8, 8)))[:, :32, :32]
    t = {k: trace_statistics(np.clip(np.rint(v), 0, 255).astype(np.uint8))
         for k, v in dict(white=white, interp=interp, smooth=smooth, blocks=blocks).items()}
    assert t["white"]["lattice_ratio"] < 1.1 < 1.5 < t["interp"]["lattice_ratio"]
    assert t["white"]["residual_ac1"] < -0.3 and t["smooth"]["residual_ac1"] > 0.2
    assert t["white"]["jpeg_grid_ratio"] < 1.05 < 1.2 < t["blocks"]["jpeg_grid_ratio"]
    assert t["white"]["residual_sigma"] == pytest.approx(6 * np.sqrt(1.25), rel=0.05)
