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
from camsim.data.sources import FolderSource, SynthSource
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
    with pytest.raises(ValueError, match="Y_2: 1 photo"):
        source_difficulty(FolderSource(str(one)).index(), s, tmp_path / "art")


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
