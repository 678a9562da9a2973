"""Data layer: patch entropy and grid, A/B/C splits, the image split, the patch store, pairs, DataModules."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
import torch

from camsim.data.datamodules import (CameraData, EvalPairDataModule, PairDataModule, PairDataset, PatchDataset,
                                     PhaseADataModule, recompressed_twins)
from camsim.data.pairs import sample_balanced_pairs, sample_cell_pairs, sample_table_balanced_pairs
from camsim.data.patches import cut_patches, extract_image_patches, grid_positions, patch_entropy, recompress
from camsim.data.sources import FolderSource, SynthSource
from camsim.data.splits import make_split, split_images
from camsim.data.store import PatchRequest, PatchSettings, PatchStore, summarise

# --------------------------------------------------------------------------- entropy


def test_entropy_of_flat_patch_is_zero() -> None:
    assert patch_entropy(np.full((1, 16, 16), 77, np.uint8))[0] == 0.0


def test_entropy_uniform_over_256_values_is_ln256() -> None:
    p = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    assert patch_entropy(p)[0] == pytest.approx(math.log(256))


def test_entropy_two_values_half_half_is_ln2_and_batches_independently() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[:4] = 200
    b = np.full((8, 8), 3, np.uint8)
    h = patch_entropy(np.stack([a, b, a]))
    np.testing.assert_allclose(h, [math.log(2), 0.0, math.log(2)])


def test_entropy_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        patch_entropy(np.zeros((1, 4, 4), np.float32))


# --------------------------------------------------------------------------- grid


@pytest.mark.parametrize("h,w,size", [(384, 512, 64), (200, 333, 64), (1000, 700, 256), (64, 64, 64)])
def test_grid_cells_do_not_overlap_are_aligned_and_inside(h: int, w: int, size: int) -> None:
    for seed in range(5):
        pos = grid_positions(h, w, size, 8, np.random.default_rng(seed))
        assert len(pos) > 0
        assert (pos % 8 == 0).all() and (pos >= 0).all()
        assert (pos[:, 0] + size <= h).all() and (pos[:, 1] + size <= w).all()
        cover = np.zeros((h, w), int)
        for y, x in pos:
            cover[y:y + size, x:x + size] += 1
        assert cover.max() == 1  # non-overlapping
        assert len(pos) == (h // size) * (w // size)


def test_grid_of_too_small_image_is_empty() -> None:
    assert len(grid_positions(50, 500, 64, 8, np.random.default_rng(0))) == 0


def test_cut_patches_takes_the_right_pixels() -> None:
    img = np.arange(100 * 120, dtype=np.int64).reshape(100, 120)
    pos = np.array([[0, 0], [8, 16], [36, 56]])
    got = cut_patches(img, pos, 32)
    for (y, x), patch in zip(pos, got):
        np.testing.assert_array_equal(patch, img[y:y + 32, x:x + 32])


# --------------------------------------------------------------------------- splits

MODELS = [f"M{i:02d}" for i in range(12)]


def test_split_counts_are_disjoint_and_seeded() -> None:
    s = make_split(MODELS, 5, 3, 2, 2, seed=1)
    assert (len(s.a), len(s.b), len(s.c), len(s.known)) == (5, 3, 2, 2)
    assert not (set(s.a) & set(s.b) or set(s.a) & set(s.c) or set(s.b) & set(s.c))
    assert set(s.known) <= set(s.a)
    assert s == make_split(MODELS, 5, 3, 2, 2, seed=1)
    assert s != make_split(MODELS, 5, 3, 2, 2, seed=2)


def test_split_c_seed_fixes_c_while_seed_varies_a_and_b() -> None:
    s1 = make_split(MODELS, 4, 3, 2, 2, seed=1, c_seed=0)
    s2 = make_split(MODELS, 8, 2, 2, 2, seed=2, c_seed=0)
    assert s1.c == s2.c and s1.a != s2.a


def test_split_explicit_lists_and_rest() -> None:
    s = make_split(MODELS, "rest", ["M00", "M01"], ["M02"], 3, seed=0)
    assert s.b == ("M00", "M01") and s.c == ("M02",) and len(s.a) == 9


@pytest.mark.parametrize("kw,message", [
    (dict(a=["M00", "M01"], b=["M01"], c=["M02"], known=["M00"]), "disjoint.*M01"),
    (dict(a=["M00", "X9"], b=["M01"], c=["M02"], known=["M00"]), "X9"),
    (dict(a=["M00"], b=["M01"], c=["M02"], known=["M05"]), "subset of A.*M05"),
    (dict(a=8, b=4, c=3, known=2), "more camera models than are left"),
    (dict(a=["M00"], b=[], c=["M02"], known=["M00"]), "empty"),
])
def test_split_errors_name_the_offending_models(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_split(MODELS, seed=0, **kw)


def test_image_split_same_stems_go_to_the_same_subset_across_models(tmp_path: Path) -> None:
    stems = [f"s{i:04d}" for i in range(20)]
    a = [tmp_path / "A" / f"{s}.png" for s in stems]
    b = [tmp_path / "B" / f"{s}.png" for s in stems]
    sa, sb = split_images(a, [0.7, 0.1, 0.2], 3), split_images(b, [0.7, 0.1, 0.2], 3)
    for subset in ("train", "val", "test"):
        assert [p.stem for p in sa[subset]] == [p.stem for p in sb[subset]]
    assert (len(sa["train"]), len(sa["val"]), len(sa["test"])) == (14, 2, 4)
    assert not set(sa["train"]) & set(sa["test"])


def test_one_model_spelled_twice_or_a_repeated_validation_model_is_refused() -> None:
    """Two folders naming one model (case, separators) in two sets made it known and unknown at
    once, or in one set gave its pairs the label "different"; b_val=[X, X] gave X two labels."""
    models = [*MODELS, "Canon_Ixus70", "canon ixus70"]
    with pytest.raises(ValueError, match=r"Canon_Ixus70 \(A\) and canon ixus70 \(C\) name one camera model"):
        make_split(models, ["M00", "Canon_Ixus70"], ["M01", "M02"], ["canon ixus70"], ["M00"], seed=0)
    with pytest.raises(ValueError, match=r"Canon_Ixus70 \(B\) and canon ixus70 \(B\)"):
        make_split(models, ["M00"], ["M01", "Canon_Ixus70", "canon ixus70"], ["M02"], ["M00"], seed=0)
    with pytest.raises(ValueError, match=r"split.b_val lists models more than once: \['M02'\]"):
        make_split(MODELS, ["M00"], ["M01", "M02", "M03", "M04"], ["M05"], ["M00"], seed=0, b_val=["M02", "M02"])


def test_a_reshared_copy_goes_with_its_original(tmp_path: Path) -> None:
    """VISION's natWA / natFBH / natFBL photos are the nat photos of the same number sent through
    WhatsApp / Facebook: with data.variants=[nat,natWA] a photo and its copy stay in one subset."""
    nat = [tmp_path / f"D01_I_nat_{k:04d}.jpg" for k in range(40)]
    shared = [tmp_path / f"D01_I_{v}_{k:04d}.jpg" for v in ("natWA", "natFBL") for k in range(40)]
    sp = split_images(nat + shared, [0.7, 0.1, 0.2], 0)
    number = {k: {p.stem[-4:] for p in v} for k, v in sp.items()}
    assert not number["train"] & number["test"] and not number["train"] & number["val"]
    assert sum(len(v) for v in sp.values()) == 120 and len(sp["test"]) == 3 * len(number["test"])
    # files named alike that are no copies (two DCIM folders' IMG_0001.JPG) are split one by one, as before
    dcim = [tmp_path / f"10{k}CANON" / f"IMG_{i:04d}.JPG" for k in range(2) for i in range(3)]
    assert sum(len(v) for v in split_images(dcim, [0.6, 0.2, 0.2], 0).values()) == 6
    assert [len(v) for v in split_images(dcim, [0.6, 0.2, 0.2], 0).values()] == [4, 1, 1]
    # the originals alone split as before
    assert {k: [p.name for p in v] for k, v in split_images(nat, [0.7, 0.1, 0.2], 0).items()} == \
        {k: sorted(p.name for p in v if "_nat_" in p.name) for k, v in sp.items()}


def test_image_split_needs_three_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        split_images([tmp_path / "a.jpg", tmp_path / "b.jpg"], [0.7, 0.1, 0.2], 0)


# --------------------------------------------------------------------------- pairs


def test_balanced_pairs_are_half_same_and_labels_match() -> None:
    labels = np.repeat(np.arange(5), [10, 20, 30, 5, 7])
    i, j, same = sample_balanced_pairs(labels, 1000, seed=0)
    assert same.sum() == 500
    np.testing.assert_array_equal(labels[i] == labels[j], same)
    assert (i[same] != j[same]).all()  # a same pair is two distinct patches
    assert set(labels[i[~same]]) == set(range(5))  # every model takes part in different pairs


def test_redrawn_pairs_of_replicate_seeds_are_independent() -> None:
    """phase_b.resample_pairs: each (seed, epoch) draws its own pairs — replicates
    phase_b.seed=1,2 never train on one another's epochs (seed + epoch made seed 1's epoch 1 seed
    2's epoch 0) — epoch 0 is the fixed set of that seed, and a redraw is reproducible."""
    labels = np.repeat(np.arange(6), 40)
    feats = np.zeros((len(labels), 3), np.float32)

    def pairs(seed: int, epoch: int, resample: bool = True) -> np.ndarray:
        ds = PairDataset(feats, labels, 200, seed, resample=resample)
        ds.set_epoch(epoch)
        return np.stack([ds.i, ds.j])

    assert not np.array_equal(pairs(1, 1), pairs(2, 0))
    assert not np.array_equal(pairs(1, 1), pairs(1, 2))
    np.testing.assert_array_equal(pairs(3, 0), pairs(3, 5, resample=False))
    np.testing.assert_array_equal(pairs(1, 4), pairs(1, 4))


def test_cell_pairs_fill_every_cell_equally() -> None:
    labels = np.repeat(np.arange(4), 6)
    i, j = sample_cell_pairs(labels, 10, seed=0)
    cells = {}
    for a, b in zip(labels[i], labels[j]):
        assert a <= b
        cells[(a, b)] = cells.get((a, b), 0) + 1
    assert len(cells) == 4 * 5 // 2 and set(cells.values()) == {10}
    selfp = labels[i] == labels[j]
    assert (i[selfp] != j[selfp]).all()


# --------------------------------------------------------------------------- extraction and the store


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _folder(root: Path, models: int = 4, images: int = 6, size=(256, 320)) -> Path:
    for m in range(models):
        d = root / f"cam{m}"
        d.mkdir(parents=True)
        for k in range(images):
            Image.fromarray(_textured(*size, seed=100 * m + k)).save(d / f"s{k:03d}.png")
    return root


def test_extract_image_patches_drops_low_entropy_and_reports_bad_files(tmp_path: Path) -> None:
    img = _textured(128, 256, 0)
    img[:, :128] = 90  # left half flat: its cells have entropy 0
    Image.fromarray(img).save(tmp_path / "half.png")
    res = extract_image_patches(tmp_path / "half.png", 64, 8, 4.0, cap=100, seed=0, max_pixels=10**8)
    assert res.error is None and len(res.patches) == 4 and res.low_entropy == 4
    assert (res.positions[:, 1] >= 128).all() and (res.entropy > 4.0).all()
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    bad = extract_image_patches(tmp_path / "bad.jpg", 64, 8, 4.0, 100, 0, 10**8)
    assert len(bad.patches) == 0 and bad.error
    Image.fromarray(_textured(32, 32, 1)).save(tmp_path / "tiny.png")
    tiny = extract_image_patches(tmp_path / "tiny.png", 64, 8, 4.0, 100, 0, 10**8)
    assert "smaller than one 64x64 patch" in tiny.error


def test_rgb_patches_are_the_green_patches_cells_in_colour(tmp_path: Path) -> None:
    """model.in_channels=3: the same cells and entropy filter (green) as the green recipe, all three channels."""
    img = _textured(128, 256, 0)
    img[:, :128, 1] = 90  # left half flat in green only: dropped in both forms
    Image.fromarray(img).save(tmp_path / "half.png")
    green = extract_image_patches(tmp_path / "half.png", 64, 8, 4.0, cap=100, seed=0, max_pixels=10**8)
    rgb = extract_image_patches(tmp_path / "half.png", 64, 8, 4.0, cap=100, seed=0, max_pixels=10**8, channels=3)
    assert rgb.patches.shape == (4, 3, 64, 64) and rgb.low_entropy == green.low_entropy == 4
    np.testing.assert_array_equal(rgb.positions, green.positions)
    np.testing.assert_array_equal(rgb.patches[:, 1], green.patches)
    y, x = rgb.positions[0]
    np.testing.assert_array_equal(rgb.patches[0], img[y:y + 64, x:x + 64].transpose(2, 0, 1))
    with pytest.raises(ValueError, match="channels"):
        extract_image_patches(tmp_path / "half.png", 64, 8, 4.0, 100, 0, 10**8, channels=2)


def test_rgb_patch_sets_are_cached_apart_and_green_keys_are_unchanged(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", models=1, images=2)
    req = PatchRequest("cam0", "train", tuple(sorted((root / "cam0").glob("*.png"))), 10)
    green = PatchStore(tmp_path / "art", PatchSettings.from_config(size=64), workers=0)
    rgb = PatchStore(tmp_path / "art", PatchSettings.from_config(size=64, channels=3), workers=0)
    assert "channels" not in req.key(green.settings)["settings"]  # the key green sets had before colour existed
    assert req.key(rgb.settings)["settings"]["channels"] == 3 and green.path_for(req) != rgb.path_for(req)
    g, c = green.get([req])[("cam0", "train")], rgb.get([req])[("cam0", "train")]
    assert g.patches.shape == (10, 64, 64) and c.patches.shape == (10, 3, 64, 64) and c.info["channels"] == 3
    np.testing.assert_array_equal(np.asarray(c.patches[:, 1]), np.asarray(g.patches))
    with pytest.raises(ValueError, match="model.in_channels=2"):
        PatchSettings.from_config(channels=2)


def test_store_caches_balances_and_skips_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "photos", models=1, images=3)
    img_paths = sorted((root / "cam0").glob("*.png"))
    (root / "cam0" / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    store = PatchStore(tmp_path / "art", PatchSettings.from_config(size=64, seed=0), workers=0)
    req = PatchRequest("cam0", "train", tuple(img_paths + [root / "cam0" / "trunc.jpg"]), 40)
    sets = store.get([req])
    ps = sets[("cam0", "train")]
    assert len(ps) == 40 and ps.patches.dtype == np.uint8 and ps.patches.shape[1:] == (64, 64)
    assert np.bincount(ps.image_ids, minlength=4)[:3].tolist() == [14, 13, 13]  # round robin over images
    assert ps.info["skipped"][0]["file"].endswith("trunc.jpg")
    assert [s["file"] for s in summarise(sets.values())["skipped_files"]] == [str(root / "cam0" / "trunc.jpg")]
    # the stored patches are the pixels at the stored positions
    g = np.asarray(Image.open(img_paths[ps.image_ids[0]]))[..., 1]
    y, x = ps.positions[0]
    np.testing.assert_array_equal(ps.patches[0], g[y:y + 64, x:x + 64])
    # second call reuses the cache (same directory, no rebuild)
    mtime = (ps.path / "patches.npy").stat().st_mtime_ns
    again = store.get([req])[("cam0", "train")]
    assert again.path == ps.path and (again.path / "patches.npy").stat().st_mtime_ns == mtime
    assert json.loads((ps.path / "key.json").read_text())["count"] == 40


def test_store_reports_shortfall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "photos", models=1, images=3, size=(128, 128))
    store = PatchStore(tmp_path / "art", PatchSettings.from_config(size=64), workers=0)
    ps = store.get([PatchRequest("cam0", "train", tuple(sorted((root / "cam0").glob("*.png"))), 50)])
    assert len(ps[("cam0", "train")]) == 12
    assert any("12 of 50 patches" in r.message for r in caplog.records)


def _camera_data(tmp_path: Path, channels: int = 1, **patch_counts) -> CameraData:
    root = _folder(tmp_path / "photos", models=6, images=6)
    split = OmegaConf.create({"a": 3, "b": 2, "c": 1, "known": 2, "seed": 0, "c_seed": None,
                              "image_fractions": [0.5, 0.17, 0.33], "image_seed": 0})
    counts = {"train_a": 20, "val_a": 6, "train_b": 20, "val_b": 6, "test": 8, **patch_counts}
    patches = OmegaConf.create({"size": 64, "align": 8, "min_entropy": 4.0, "seed": 0, "max_pixels": 10**8,
                                "workers": 0, "per_model": counts})
    return CameraData(FolderSource(root), split, patches, tmp_path / "art", channels=channels)


def test_no_image_gives_patches_to_both_training_and_test(tmp_path: Path) -> None:
    data = _camera_data(tmp_path)
    data.prepare()
    sets = {**data.patch_sets("phase_a"), **data.patch_sets("phase_b"), **data.patch_sets("eval")}
    for model in data.split.a + data.split.b + data.split.c:
        used = {sub: {ps.images[i] for i in np.unique(ps.image_ids)}
                for (m, sub), ps in sets.items() if m == model}
        assert not (used.get("train", set()) & used.get("test", set()))
        assert not (used.get("val", set()) & used.get("test", set()))


def test_a_copy_of_a_photo_cannot_sit_on_both_sides_of_the_split(tmp_path: Path) -> None:
    """Copies of one photo in its model's folder: one is kept, the others are skipped files
    (named in the summary), so a copy never lands in training while its original is tested."""
    data = _camera_data(tmp_path)
    folder = data.source.root / "cam0"
    for k in range(4):
        shutil.copy(folder / "s000.png", folder / f"t{k}.png")
    with pytest.warns(UserWarning, match="identical content"):
        images = data.index.models["cam0"]
    assert [p.name for p in images] == [f"s{k:03d}.png" for k in range(6)]
    summary = data.prepare()
    assert sorted(Path(s["file"]).name for s in summary["skipped_files"]) == [f"t{k}.png" for k in range(4)]


def test_simulated_cameras_render_only_the_images_a_job_reads(tmp_path: Path) -> None:
    """B's test photos and C's training photos are never read: a job renders the rest, and a
    later job (or ``index()``) renders what it lacks."""
    split = OmegaConf.create({"a": 2, "b": 2, "c": 1, "known": 1, "seed": 0, "c_seed": None,
                              "image_fractions": [0.5, 0.17, 0.33], "image_seed": 0})
    patches = OmegaConf.create({"size": 32, "align": 8, "min_entropy": 1.0, "seed": 0, "max_pixels": 10**8,
                                "workers": 0, "per_model": {"train_a": 4, "val_a": 2, "train_b": 4, "val_b": 2,
                                                            "test": 2}})
    source = SynthSource(5, 2, 6, (64, 64), workers=0, cache_dir=tmp_path / "art")
    data = CameraData(source, split, patches, tmp_path / "art")
    assert not list(source.root().rglob("*.jpg"))  # listed and split before anything is rendered
    data.prepare()
    sp, im = data.split, data.images
    read = {p for m in sp.a for s in ("train", "val", "test") for p in im[m][s]} \
        | {p for m in sp.b for s in ("train", "val") for p in im[m][s]} | {p for m in sp.c for p in im[m]["test"]}
    assert set(source.root().rglob("*.jpg")) == read
    assert not any(p.exists() for m in sp.b for p in im[m]["test"])
    assert not any(p.exists() for m in sp.c for s in ("train", "val") for p in im[m][s])
    assert source.index().models == data.index.models and len(list(source.root().rglob("*.jpg"))) == 30


def test_a_cached_render_drawn_by_another_simulator_is_refused_not_reused(tmp_path: Path) -> None:
    """A render cached under the same key but drawn by a simulator whose draws have changed since
    (a trait's meaning changed without a new format) is named, not silently reused."""
    import json

    root = SynthSource(5, 2, 2, (64, 64), workers=0, cache_dir=tmp_path / "art").root()
    assert SynthSource(5, 2, 2, (64, 64), workers=0, cache_dir=tmp_path / "art").root() == root  # reused as it is
    meta = json.loads((root / "cameras.json").read_text())
    name = sorted(meta["cameras"])[1]
    meta["cameras"][name]["jpeg_quality"] = 100 if meta["cameras"][name]["jpeg_quality"] != 100 else 99
    (root / "cameras.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"cameras\.json: this cached render was drawn by another version .*{name}: "
                                         r"jpeg_quality differ"):
        SynthSource(5, 2, 2, (64, 64), workers=0, cache_dir=tmp_path / "art").root()


def test_datamodules_serve_labelled_batches_and_pairs(tmp_path: Path) -> None:
    loader = OmegaConf.create({"batch_size": 8, "num_workers": 0, "pin_memory": False, "persistent_workers": False})
    data = _camera_data(tmp_path)
    dm = PhaseADataModule(data, loader)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (8, 1, 64, 64)
    assert set(dm.sets["train"].labels.tolist()) == {0, 1, 2} and dm.classes == list(data.split.a)
    pdm = PairDataModule(data, loader, train_pairs=40, val_pairs=10, seed=0)
    pdm.setup()
    a, b, same = next(iter(pdm.train_dataloader()))
    assert a.shape == b.shape == (8, 1, 64, 64) and same.dtype.is_floating_point
    assert int(pdm.train_set.same.sum()) == 20
    edm = EvalPairDataModule(data, loader, pairs_per_cell=3, seed=0)
    edm.setup()
    pairs = edm.pairs
    assert pairs.models == list(data.split.known) + list(data.split.c)
    n_models = len(pairs.models)
    assert len(pairs.i) == 3 * n_models * (n_models + 1) // 2
    assert set(pairs.model_1) | set(pairs.model_2) == set(pairs.models)


def test_rgb_datamodules_serve_three_channel_batches_and_pairs(tmp_path: Path) -> None:
    loader = OmegaConf.create({"batch_size": 8, "num_workers": 0, "pin_memory": False, "persistent_workers": False})
    data = _camera_data(tmp_path, channels=3)
    dm = PhaseADataModule(data, loader)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (8, 3, 64, 64)
    pdm = PairDataModule(data, loader, train_pairs=40, val_pairs=10, seed=0)
    pdm.setup()
    a, b, _ = next(iter(pdm.train_dataloader()))
    assert a.shape == b.shape == (8, 3, 64, 64)


def test_real_folder_path_cuts_green_patches(tmp_path: Path, cameras: Path) -> None:
    root = tmp_path / "cams"
    for model in ("NIKON_D70", "NIKON_D70s"):
        shutil.copytree(cameras / model, root / model)
    src = FolderSource(root)
    idx = src.index()
    assert idx.counts() == {"NIKON_D70": 12, "NIKON_D70s": 12}
    store = PatchStore(tmp_path / "art", PatchSettings.from_config(size=128, min_entropy=3.0), workers=0)
    files = tuple(idx.models["NIKON_D70"][:2])
    ps = store.get([PatchRequest("NIKON_D70", "train", files, 10)])[("NIKON_D70", "train")]
    assert len(ps) == 10 and ps.patches.shape[1:] == (128, 128)


def test_b_val_models_never_appear_in_phase_b_training_pairs(tmp_path: Path) -> None:
    """split.b_val holds models of B out of Phase B's training: its training pairs come from the
    other models of B only, its validation pairs from the held-out ones only."""
    from camsim.data.sources import FolderSource
    from tests.conftest import compose_cfg

    root = _folder(tmp_path / "photos", models=8, images=5, size=(128, 128))
    cfg = compose_cfg(["split.a=[cam0,cam1]", "split.known=[cam0]", "split.b=[cam2,cam3,cam4,cam5,cam6]",
                       "split.c=[cam7]", "split.b_val=2", "patches.workers=0", "patches.per_model.train_b=20",
                       "patches.per_model.val_b=8"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    sp = data.split
    assert len(sp.b_val) == 2 and set(sp.b_val) <= set(sp.b) and not set(sp.b_val) & set(sp.b_train)
    dm = PairDataModule(data, cfg.phase_b.loader, 200, 50, seed=0)
    dm.setup()
    names = {"train": dm.models["train"], "val": dm.models["val"]}
    assert set(names["train"]) == set(sp.b_train) and set(names["val"]) == set(sp.b_val)
    for subset, ds in (("train", dm.train_set), ("val", dm.val_set)):
        used = {names[subset][k] for k in np.unique(ds.labels[np.r_[ds.i, ds.j]])}
        assert used <= set(names[subset]) and (subset == "val" or not used & set(sp.b_val))
    with pytest.raises(ValueError, match="split.b_val must be a subset of B"):
        CameraData(FolderSource(root), compose_cfg(["split.a=[cam0,cam1]", "split.known=[cam0]",
                   "split.b=[cam2,cam3,cam4]", "split.c=[cam7]", "split.b_val=[cam2,cam7]"]).split, cfg.patches,
                   tmp_path / "art").split


def test_with_a_draws_phase_b_training_pairs_from_a_training_images_only(tmp_path: Path) -> None:
    """phase_b.with_a: training pairs come from B's and A's models — A's from its Phase A
    training images, never the test images the known-model evaluation uses; validation stays on B."""
    from camsim.data.sources import FolderSource
    from tests.conftest import compose_cfg

    root = _folder(tmp_path / "photos", models=6, images=6, size=(128, 128))
    cfg = compose_cfg(["split.a=[cam0,cam1]", "split.known=[cam0]", "split.b=[cam2,cam3,cam4]", "split.c=[cam5]",
                       "patches.workers=0", "patches.per_model.train_b=20", "patches.per_model.val_b=8",
                       "patches.per_model.train_a=20", "patches.per_model.val_a=8", "patches.per_model.test=8"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    plain = PairDataModule(data, cfg.phase_b.loader, 300, 50, seed=0)
    dm = PairDataModule(data, cfg.phase_b.loader, 300, 50, seed=0, with_a=True)
    plain.setup()
    dm.setup()
    assert plain.models["train"] == ["cam2", "cam3", "cam4"]
    assert dm.models == {"train": ["cam2", "cam3", "cam4", "cam0", "cam1"], "val": ["cam2", "cam3", "cam4"]}
    ds = dm.train_set
    used = {dm.models["train"][k] for k in np.unique(ds.labels[np.r_[ds.i, ds.j]])}
    assert used == {"cam0", "cam1", "cam2", "cam3", "cam4"}
    sets = {**data.patch_sets("phase_a"), **data.patch_sets("phase_b")}
    for m in ("cam0", "cam1"):  # A's pair patches are its training patches, bit for bit
        rows = np.flatnonzero(ds.items.labels == dm.models["train"].index(m))
        assert np.array_equal(ds.items.take(rows), np.asarray(sets[(m, "train")].patches))
        assert not set(sets[(m, "train")].images) & set(sets[(m, "test")].images)


def test_table_balanced_pairs_make_the_table_say_nothing_of_the_label() -> None:
    """phase_b.table_balance: a quarter each of same / different model × identical / different JPEG
    table, so sharing a table no longer predicts "same model"; pairs are valid and seeded."""
    labels = np.repeat(np.arange(6), [30, 40, 50, 30, 20, 60])
    tables = np.where(labels < 2, 7, 0)  # models 0 and 1 share table 7
    tables[labels == 2] = np.arange(50) % 3 + 10  # model 2: three tables of its own
    tables[labels == 3] = np.arange(30) % 2 + 11  # model 3 shares two of them
    tables[labels == 4] = 20
    tables[labels == 5] = 21
    i, j, same = sample_table_balanced_pairs(labels, tables, 2001, seed=0)
    np.testing.assert_array_equal(labels[i] == labels[j], same)
    assert (i != j).all() and same.sum() == 1000
    ident = tables[i] == tables[j]
    counts = {(s, t): int(np.sum((same == s) & (ident == t))) for s in (True, False) for t in (True, False)}
    assert counts == {(True, True): 500, (True, False): 500, (False, True): 500, (False, False): 501}
    assert set(labels[i[same & ~ident]]) == {2, 3}  # only models with several tables give these
    assert {frozenset((a, b)) for a, b in zip(labels[i[~same & ident]], labels[j[~same & ident]])} == \
        {frozenset((0, 1)), frozenset((2, 3))}
    again = sample_table_balanced_pairs(labels, tables, 2001, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, same), again))
    natural_i, natural_j, natural_same = sample_balanced_pairs(labels, 2000, seed=0)  # the contrast
    nat_ident = tables[natural_i] == tables[natural_j]
    assert natural_same[nat_ident].mean() > 0.8 > 0.5 == same[ident].mean()


def test_table_balanced_pairs_name_what_is_missing() -> None:
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match="two different JPEG luminance tables"):
        sample_table_balanced_pairs(labels, np.where(labels == 2, 5, 0), 100, 0)  # one table per model
    with pytest.raises(ValueError, match="shared by two camera models"):
        sample_table_balanced_pairs(labels, labels * 2 + np.arange(30) % 2, 100, 0)
    with pytest.raises(ValueError, match="differ in length"):
        sample_table_balanced_pairs(labels, labels[:5], 100, 0)


def test_table_balance_reads_each_photos_jpeg_table(tmp_path: Path) -> None:
    """PairDataModule(table_balance=True) labels every patch with its photo's luminance table, read
    from the file (ids equal across models for equal tables); PNG photos and recompressed twins are
    refused with the reason; the option leaves the artefact key alone while off."""
    from omegaconf import OmegaConf

    from camsim.data.sources import FolderSource
    from camsim.phases import _key_settings
    from tests.conftest import compose_cfg

    root = tmp_path / "photos"
    quality = {"cam0": [90, 80], "cam1": [90], "cam2": [80, 70], "cam3": [70], "cam4": [60], "cam5": [50]}
    for n, (m, qs) in enumerate(quality.items()):
        (root / m).mkdir(parents=True)
        for k in range(10):
            Image.fromarray(_textured(128, 128, seed=100 * n + k)).save(root / m / f"s{k:03d}.jpg",
                                                                              quality=qs[k % len(qs)])
    cfg = compose_cfg(["split.a=[cam4]", "split.known=[cam4]", "split.b=[cam0,cam1,cam2,cam3]", "split.c=[cam5]",
                       "split.image_fractions=[0.5,0.3,0.2]", "patches.workers=0", "patches.per_model.train_b=20", "patches.per_model.val_b=8"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    dm = PairDataModule(data, cfg.phase_b.loader, 400, 100, seed=0, table_balance=True)
    dm.setup()
    ds = dm.train_set
    sets = [data.patch_sets("phase_b")[(m, "train")] for m in dm.models["train"]]
    q_of = np.concatenate([[quality[ps.model][int(Path(ps.images[k]).stem[1:]) % len(quality[ps.model])]
                            for k in ps.image_ids] for ps in sets])
    for a in range(len(q_of)):  # one id per quality (PIL writes the IJG tables), across models
        assert (ds.tables == ds.tables[a]).sum() == (q_of == q_of[a]).sum()
    ident = ds.tables[ds.i] == ds.tables[ds.j]
    assert np.mean(ds.same[ident]) == 0.5 and np.mean(ds.same[~ident]) == 0.5
    assert dm.val_set.tables is not None
    plain = PairDataModule(data, cfg.phase_b.loader, 400, 100, seed=0)
    plain.setup()
    assert plain.train_set.tables is None
    with pytest.raises(ValueError, match="table_balance with phase_b.recompress"):
        PairDataModule(data, cfg.phase_b.loader, 400, 100, seed=0, features=lambda ps: None,
                       extract=lambda x: x, recompress={"share": 0.5, "quality": [50, 70]}, table_balance=True)
    node = OmegaConf.create({"with_a": False, "table_balance": False, "recompress": {"share": 0.0}, "lr": 1})
    assert _key_settings(node, ()) == {"lr": 1}
    assert _key_settings(OmegaConf.merge(node, {"table_balance": True}), ())["table_balance"] is True
    png = _folder(tmp_path / "png", models=6, images=6, size=(128, 128))
    data = CameraData(FolderSource(png), cfg.split, cfg.patches, tmp_path / "art2")
    with pytest.raises(ValueError, match=r"s00\d\.png has no JPEG luminance quantisation table"):
        PairDataModule(data, cfg.phase_b.loader, 400, 100, seed=0, table_balance=True).setup()


def test_recompress_is_a_seeded_grid_aligned_second_jpeg() -> None:
    """phase_b.recompress's twins: same shape, deterministic, further from the original the lower
    the quality; a quality outside 1-100 or a wrong array is refused."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = (128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 4, (64, 64))).clip(0, 255)
    p = np.stack([smooth, smooth[::-1]]).astype(np.uint8)
    err = {q: np.abs(recompress(p, np.full(2, q)).astype(int) - p).mean() for q in (98, 80, 40)}
    assert err[98] < err[80] < err[40]
    again = recompress(p, np.array([80, 40]))
    assert again.dtype == np.uint8 and again.shape == p.shape and np.array_equal(again, recompress(p, np.array([80, 40])))
    # a twin already sits on the quality-40 lattice: saving it again at 40 moves it far less than the first time
    twice = recompress(again, np.array([80, 40]))
    assert np.abs(twice[1].astype(int) - again[1]).mean() < 0.25 * np.abs(again[1].astype(int) - p[1]).mean()
    # RGB patches [N, 3, P, P] are re-saved as colour JPEGs: same shape, the same quality ordering
    c = np.stack([p, p[:, ::-1], 255 - p], axis=1)
    err_c = {q: np.abs(recompress(c, np.full(2, q)).astype(int) - c).mean() for q in (98, 40)}
    assert recompress(c, np.full(2, 80)).shape == c.shape and err_c[98] < err_c[40]
    with pytest.raises(ValueError, match="qualities"):
        recompress(p, np.array([80, 101]))
    with pytest.raises(ValueError, match="uint8"):
        recompress(p.astype(np.float32), np.array([80, 80]))


def test_recompress_twins_join_phase_b_training_pairs_only(tmp_path: Path) -> None:
    """phase_b.recompress.share: that share of B's training patches gets a re-saved twin with its
    model's label, pairs are drawn over patches and twins; validation pairs stay as they were."""
    from camsim.data.sources import FolderSource
    from tests.conftest import compose_cfg

    root = _folder(tmp_path / "photos", models=5, images=6, size=(128, 128))
    cfg = compose_cfg(["split.a=[cam0,cam1]", "split.known=[cam0]", "split.b=[cam2,cam3]", "split.c=[cam4]",
                       "patches.workers=0", "patches.per_model.train_b=20", "patches.per_model.val_b=8"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    seen: list[np.ndarray] = []

    def features(ps):  # a stand-in f(X): the patch's mean grey level
        return np.asarray(ps.patches, np.float32).mean(axis=(1, 2))[:, None]

    def extract(x):
        seen.append(x)
        return x.astype(np.float32).mean(axis=(1, 2))[:, None]

    rc = {"share": 0.5, "quality": [50, 70]}
    plain = PairDataModule(data, cfg.phase_b.loader, 300, 50, seed=0, features=features)
    dm = PairDataModule(data, cfg.phase_b.loader, 300, 50, seed=0, features=features, recompress=rc, extract=extract)
    plain.setup()
    dm.setup()
    n = len(plain.train_set.labels)
    assert len(dm.train_set.labels) == len(dm.train_set.items) == n + round(0.5 * n) and len(seen) == 1
    idx, again = recompressed_twins(PatchDataset([data.patch_sets("phase_b")[(m, "train")] for m in ("cam2", "cam3")],
                                                 range(2)), 0.5, [50, 70], 0)
    np.testing.assert_array_equal(dm.train_set.labels[n:], plain.train_set.labels[idx])  # each twin: its model
    np.testing.assert_array_equal(seen[0], again)  # seeded: the same twins every time
    assert 0 < np.abs(dm.train_set.items[n:] - plain.train_set.items[idx]).max() < 10
    assert (np.r_[dm.train_set.i, dm.train_set.j] >= n).any()  # twins are drawn into pairs
    np.testing.assert_array_equal(dm.val_set.items, plain.val_set.items)
    with pytest.raises(ValueError, match="cached features"):
        PairDataModule(data, cfg.phase_b.loader, 300, 50, seed=0, recompress=rc)


def test_features_of_an_earlier_phase_a_of_the_same_name_are_dropped(tmp_path: Path) -> None:
    """A Phase A artefact deleted and trained again comes back under its name: the feature caches
    of the old one are removed (before it is published), those of other backbones kept."""
    from camsim.artefacts import atomic_write_json
    from camsim.data.features import drop_stale_features

    for name, backbone in (("features-1", "phase_a-x"), ("features-2", "phase_a-y"), ("features-3", "phase_a-x")):
        (tmp_path / name).mkdir()
        atomic_write_json(tmp_path / name / "key.json", {"backbone": backbone, "layer": "fc_a2.pre", "patches": "p"})
    (tmp_path / "features-4").mkdir()  # no key: not touched
    gone = drop_stale_features(tmp_path, "phase_a-x")
    assert [d.name for d in gone] == ["features-1", "features-3"]
    assert sorted(d.name for d in tmp_path.iterdir()) == ["features-2", "features-4"]



def test_eval_pairs_know_which_same_model_pairs_are_two_patches_of_one_photo(tmp_path: Path) -> None:
    """A photo and its re-shared copy count as one photo; photos of two models never do."""
    from camsim.data.datamodules import EvalPairs, PatchDataset
    from camsim.data.store import PatchSet

    def pset(model, images, image_ids):
        n = len(image_ids)
        return PatchSet(model, "test", tmp_path, np.zeros((n, 8, 8), np.uint8), np.asarray(image_ids),
                        np.zeros((n, 2), np.int64), np.zeros(n), images, {})

    a = pset("A", ["/x/A/D01_I_nat_0001.jpg", "/x/A/D01_I_natWA_0001.jpg", "/x/A/D01_I_nat_0002.jpg"], [0, 1, 2, 2])
    b = pset("B", ["/x/B/D01_I_nat_0001.jpg"], [0, 0])
    ds = PatchDataset([a, b], [0, 1])
    photo = ds.photo_ids()
    assert photo[0] == photo[1] != photo[2] == photo[3] and photo[4] == photo[5] != photo[0]
    pairs = EvalPairs(ds, ["A", "B"], ["A"], np.array([0, 0, 2, 4, 0]), np.array([1, 2, 3, 5, 4]))
    assert pairs.same_photo_share() == pytest.approx(3 / 4)   # (0,1) copy, (2,3), (4,5) one photo; (0,2) two


def test_self_pairs_of_two_photos_never_pair_one_photo_and_stay_uniform_over_the_others() -> None:
    from camsim.data.pairs import sample_cell_pairs

    labels = np.repeat([0, 1], [9, 6])
    photos = np.array([5, 5, 5, 7, 7, 7, 7, 9, 9, 20, 20, 21, 21, 21, 22])   # 3 photos of model 0, 3 of model 1
    i, j = sample_cell_pairs(labels, 3000, seed=4, photos=photos)
    same = labels[i] == labels[j]
    assert same.sum() == 6000 and (photos[i[same]] != photos[j[same]]).all()
    # every other-photo patch drawn about equally often for patch 0 (photo 5: six candidates)
    partners = j[same & (i == 0)]
    counts = np.bincount(partners, minlength=15)[3:9]
    assert counts.min() > 0 and counts.max() < 3 * counts.min()
    assert np.array_equal(sample_cell_pairs(labels, 50, 4, photos), sample_cell_pairs(labels, 50, 4, photos))
    with pytest.raises(ValueError, match="model indices \\[1\\] have one"):
        sample_cell_pairs(labels, 10, 0, photos=np.r_[photos[:9], np.full(6, 30)])


def test_jpeg_table_ids_one_id_per_table_and_minus_one_or_a_named_error(tmp_path: Path) -> None:
    """jpeg_table_ids: equal luminance tables share an id and ``tables[id]`` is that table; a PNG or
    an unreadable header is -1 (the transfer evaluation's rows), or with ``key`` an error naming the
    setting and the file (Phase B's table-balanced pairs)."""
    from camsim.data.io import ImageReadError, read_jpeg_luma_table
    from camsim.data.store import jpeg_table_ids

    img = Image.fromarray(_textured(64, 64, seed=1))
    paths = []
    for name, q in (("a", 90), ("b", 70), ("c", 90)):
        img.save(tmp_path / f"{name}.jpg", quality=q)
        paths.append(tmp_path / f"{name}.jpg")
    img.save(tmp_path / "d.png")
    (tmp_path / "e.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    ids, tables = jpeg_table_ids(paths + [tmp_path / "d.png", tmp_path / "e.jpg"])
    assert ids.tolist() == [0, 1, 0, -1, -1] and len(tables) == 2
    assert tables[0] == read_jpeg_luma_table(paths[0]) != tables[1]
    with pytest.raises(ValueError, match=r"phase_b.table_balance: .*d\.png has no JPEG luminance"):
        jpeg_table_ids(paths + [tmp_path / "d.png"], key="phase_b.table_balance")
    with pytest.raises(ImageReadError, match=r"e\.jpg"):
        jpeg_table_ids([tmp_path / "e.jpg"], key="phase_b.table_balance")
