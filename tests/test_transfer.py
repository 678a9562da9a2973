"""Transfer evaluation (issue 16): any similarity checkpoint on every camera model of any source.

A randomly initialised tiny similarity network (32-px patches) on small generated photo
folders: categories and image-level pairs, known/unknown from the checkpoint, the scores
file reproducing the figures, the bootstrap, the Dresden / VISION layouts, and bad input.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from camsim.cli import CONF_DIR
from camsim.eval.bootstrap import Contrast, WeightedRoc, bootstrap
from camsim.eval.metrics import equal_error_rate, roc_auc, threshold_at_far
from camsim.eval.transfer_pairs import PhotoLayout, halves, model_photo_pairs, sample_image_pairs, sample_patch_pairs
from tests.conftest import TINY, compose_cfg, run_cli

P = 32
HEAD = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "similarity" / "small.yaml"))
#: the generated folder: two makes, models with 1 and 3 photos
FOLDER = {"Acme_One": 1, "Acme_Two": 3, "Bolt_Three": 3, "Bolt_Four": 1}
TRAINED = {"a": ["Acme_Two", "Zed_X"], "b": ["Bolt_Three"]}


def _save(module: L.LightningModule, path: Path) -> Path:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    return path


def make_folder(root: Path, models: dict[str, int], size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """``root/<model>/<model>_<k>.png``: noisy photos (every cell passes the entropy filter)."""
    rng = np.random.default_rng(seed)
    for m, n in models.items():
        (root / m).mkdir(parents=True)
        level = rng.uniform(60, 190)
        for k in range(n):
            img = np.clip(level + rng.normal(0, 40, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / m / f"{m}_{k}.png")
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """A Phase B checkpoint (random head on a random tiny backbone) trained — on paper — on
    ``TRAINED`` from another folder, and a Phase A checkpoint."""
    from camsim.lit.phase_a import CameraClassifier
    from camsim.lit.phase_b import ForensicSimilarity

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    phase_a = {"backbone": TINY, "class_names": TRAINED["a"], "patch_size": P}
    training = {"sets": TRAINED, "data": {"_target_": "camsim.data.sources.FolderSource", "root": str(d / "elsewhere"),
                                          "extensions": [".png"], "min_images": 1},
                "patches": {"size": P, "align": 8, "min_entropy": 4.0}}
    sim = ForensicSimilarity(phase_a, HEAD, "fc_a2.pre", training=training)
    clf = CameraClassifier(TINY, TRAINED["a"], P)
    return {"b": _save(sim, d / "phase_b.ckpt"), "a": _save(clf, d / "phase_a.ckpt")}


def transfer_cfg(ckpt: Path, root: Path, tmp: Path, *extra: str):
    return compose_cfg([f"ckpt={ckpt}", "data=folder", f"data.root={root}", f"paths.output_dir={tmp / 'run'}",
                        f"paths.artefact_dir={tmp / 'artefacts'}", "patches.workers=0", "transfer.bootstrap.reps=60",
                        "transfer.patches_per_image=12", "transfer.image.patch_pairs=16", *extra],
                       config_name="eval")


@pytest.fixture(scope="module")
def folder_run(ckpts, tmp_path_factory) -> dict:
    from camsim.eval.transfer import run_transfer

    tmp = tmp_path_factory.mktemp("folder_run")
    root = make_folder(tmp / "photos", FOLDER)
    metrics = run_transfer(transfer_cfg(ckpts["b"], root, tmp))
    return {"metrics": metrics["transfer"], "out": tmp / "run", "root": root, "tmp": tmp}


# --------------------------------------------------------------------------- the job


def test_folder_with_one_and_three_photo_models_gives_every_category(folder_run):
    m, out = folder_run["metrics"], folder_run["out"]
    for name in ("metrics.json", "transfer.md", "scores.npz", "per_model.csv", "photo_pairs.csv", "run.json",
                 "roc_patch_other_photo.png", "roc_image_halves.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".transfer-")], "staging folder left behind"
    for level, keys in {"patch": ("same_photo", "other_photo", "other_photo~same_make", "other_photo~other_make"),
                        "image": ("halves", "other_photo", "other_photo~same_make", "other_photo~other_make")}.items():
        for key in keys:
            row = m[level][key]
            assert row["n_pos"] > 0 and row["n_neg"] > 0, (level, key)
            assert 0.0 <= row["auc"]["value"] <= 1.0 and row["auc"]["lo"] is not None
    # stratified: 3 photos -> 3 photo pairs per 3-photo model, 20 patch pairs each (2 models)
    assert m["patch"]["other_photo"]["n_pos"] == 2 * 3 * 20
    assert m["patch"]["same_photo"]["n_pos"] == 8 * 50  # 8 photos, 50 pairs each
    assert m["patch"]["other_photo"]["n_neg"] == 6 * 100  # 6 model pairs
    rows = {r["model"]: r for r in csv.DictReader((out / "per_model.csv").open())}
    assert rows["Acme_One"]["patch_other_photo_tpr"] == "" and "no cross-photo pairs" in rows["Acme_One"]["note"]
    assert rows["Acme_Two"]["patch_other_photo_tpr"] != ""
    report = (out / "transfer.md").read_text()
    assert "nan" not in report.lower()
    assert json.loads((out / "metrics.json").read_text())["transfer"]["eta"] == 0.5


def test_known_and_unknown_come_from_the_checkpoint(folder_run):
    models = folder_run["metrics"]["models"]
    assert {k: v["set"] for k, v in models.items()} == {"Acme_One": "unknown", "Acme_Two": "A", "Bolt_Three": "B",
                                                        "Bolt_Four": "unknown"}
    assert models["Acme_Two"]["make"] == "acme" and models["Bolt_Four"]["photos"] == 1
    report = (folder_run["out"] / "transfer.md").read_text()
    assert "Known models here (trained on): Acme_Two (A), Bolt_Three (B)." in report
    assert "Unknown models here: Acme_One, Bolt_Four." in report
    # trained on another folder: the shared names are flagged
    assert any("Acme_Two, Bolt_Three: names of models the checkpoint was trained on" in n
               for n in folder_run["metrics"]["notes"])


def test_a_trained_model_spelled_otherwise_is_known_and_the_report_says_so(ckpts, tmp_path):
    """Data sets spell one camera model differently (``Canon_PowerShot_G2`` / ``canon_powershot_g2``):
    a model the network trained on must not count as unknown because of case or separators."""
    from camsim.eval.transfer import run_transfer, training_role

    sets = {"a": ["Canon_PowerShot_G2"], "b": ["NIKON_D70s"]}
    assert [training_role(m, sets) for m in ("canon_powershot_g2", "Canon PowerShot G2", "Nikon-D70s",
                                             "NIKON_D70", "Canon_PowerShot_G3")] == ["A", "A", "B", "", ""]
    root = make_folder(tmp_path / "photos", {"acme_two": 2, "BOLT-THREE": 2, "Bolt_Four": 2})
    metrics = run_transfer(transfer_cfg(ckpts["b"], root, tmp_path))["transfer"]
    assert {k: v["set"] for k, v in metrics["models"].items()} == {"acme_two": "A", "BOLT-THREE": "B",
                                                                   "Bolt_Four": "unknown"}
    assert any("spelled otherwise (case and separators ignored): BOLT-THREE = Bolt_Three, acme_two = Acme_Two." in n
               for n in metrics["notes"])


def test_scores_file_reproduces_the_figures(folder_run, ckpts):
    from camsim.data.io import read_green
    from camsim.lit.phase_b import load_similarity

    s = np.load(folder_run["out"] / "scores.npz")
    m = folder_run["metrics"]
    patch = s["level"] == "patch"
    sel = patch & np.isin(s["category"], ["other_photo", "diff_model"])
    auc = roc_auc(s["score"][sel], s["category"][sel] == "other_photo")
    assert auc == pytest.approx(m["patch"]["other_photo"]["auc"]["value"], abs=1e-12)
    base = roc_auc(s["baseline"][sel], s["category"][sel] == "other_photo")
    assert base == pytest.approx(m["patch"]["other_photo"]["baseline_auc"]["value"], abs=1e-12)
    # image level: the mean of each photo pair's patch-pair scores, then the ROC
    img = ~patch
    means = np.bincount(s["group"][img], weights=s["score"][img]) / np.bincount(s["group"][img])
    np.testing.assert_allclose(means, s["image_score"], rtol=1e-12)
    sel = np.isin(s["image_category"], ["halves", "diff_model"])
    assert roc_auc(s["image_score"][sel], s["image_category"][sel] == "halves") == \
        pytest.approx(m["image"]["halves"]["auc"]["value"], abs=1e-12)
    # a pair re-scored from its photo paths and pixel corners
    sim = load_similarity(ckpts["b"])
    for k in (0, int(np.flatnonzero(s["category"] == "diff_model")[0])):
        crops = []
        for side in ("1", "2"):
            y, x = s[f"yx_{side}"][k]
            g = read_green(str(s["photo_path"][s[f"image_{side}"][k]]))
            crops.append(torch.from_numpy(np.ascontiguousarray(g[y:y + P, x:x + P]))[None, None])
        with torch.no_grad():
            again = torch.sigmoid(sim(*crops)).item()
        assert again == pytest.approx(s["score"][k], abs=1e-4)
        assert s["model_1"][k] == s["models"][s["photo_model"][s["image_1"][k]]]


def _other_network(d: Path, *, in_channels: int = 3, min_entropy: float = 4.0, seed: int = 1) -> Path:
    """A second random Phase B network (colour patches by default) trained, on paper, on other models."""
    from camsim.lit.phase_b import ForensicSimilarity

    torch.manual_seed(seed)
    sets = {"a": ["Bolt_Four", "Zed_Y"], "b": ["Zed_Z"]}
    phase_a = {"backbone": {**TINY, "in_channels": in_channels}, "class_names": sets["a"], "patch_size": P}
    training = {"sets": sets, "data": None, "patches": {"size": P, "align": 8, "min_entropy": min_entropy}}
    d.mkdir(parents=True, exist_ok=True)
    return _save(ForensicSimilarity(phase_a, HEAD, "fc_a2.pre", training=training), d / "phase_b.ckpt")


def test_several_networks_fuse_their_pair_scores(folder_run, ckpts, tmp_path):
    """``ckpt=[a, b]``: one run scores the same pairs with both networks (green and colour patches) and
    reports one score per pair — σ of their mean logit, or (``fusion=mean``) their mean score —
    and the mean of their baselines; a model is known when either network trained on it."""
    from camsim.eval.transfer import run_transfer

    other = _other_network(tmp_path / "other")
    alone = run_transfer(transfer_cfg(other, folder_run["root"], tmp_path / "alone"))["transfer"]
    both = run_transfer(transfer_cfg(f"[{ckpts['b']},{other}]", folder_run["root"], tmp_path / "both"))["transfer"]
    run_transfer(transfer_cfg(f"[{ckpts['b']},{other}]", folder_run["root"], tmp_path / "mean", "fusion=mean"))
    s1, s2, s12, mean = (np.load(d / "scores.npz") for d in (folder_run["out"], tmp_path / "alone" / "run",
                                                             tmp_path / "both" / "run", tmp_path / "mean" / "run"))
    for key in ("i", "j", "category", "patch_yx", "image_category"):
        np.testing.assert_array_equal(s12[key], s1[key])
        np.testing.assert_array_equal(s12[key], s2[key])
    assert not np.allclose(s1["score"], s2["score"])  # two different networks

    def logit(p):
        return np.log(p) - np.log1p(-p)

    np.testing.assert_allclose(s12["score"], 1 / (1 + np.exp(-(logit(s1["score"]) + logit(s2["score"])) / 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(mean["score"], (s1["score"] + s2["score"]) / 2, rtol=1e-5)
    for key in ("baseline", "image_baseline"):
        np.testing.assert_allclose(s12[key], (s1[key] + s2[key]) / 2, rtol=1e-12, err_msg=key)
    img = s12["level"] == "image"
    means = np.bincount(s12["group"][img], weights=s12["score"][img]) / np.bincount(s12["group"][img])
    np.testing.assert_allclose(s12["image_score"], means, rtol=1e-12)  # decided from the fused pair scores
    assert alone["models"]["Bolt_Four"]["set"] == "A" and alone["models"]["Acme_Two"]["set"] == "unknown"
    assert {k: v["set"] for k, v in both["models"].items()} == {"Acme_One": "unknown", "Acme_Two": "A",
                                                                "Bolt_Three": "B", "Bolt_Four": "A"}
    assert any(n.startswith("2 networks") and "fusion=logit" in n for n in both["notes"])
    assert " + " in both["checkpoint"] and both["training"]["a"] == ["Acme_Two", "Zed_X", "Bolt_Four", "Zed_Y"]
    report = (tmp_path / "both" / "run" / "transfer.md").read_text()
    assert "phase_b.ckpt + " in report and "Baseline: the mean of the 2 networks' Bray–Curtis" in report


def test_a_fusion_fitted_on_a_folder_applies_by_name(folder_run, ckpts, tmp_path):
    """``fusion=fit``: the run fits weights per table relation on its own patch pairs (the same fit
    as on the two networks' separate scores), writes fusion.json and says its figures are in-sample;
    ``fusion=<fusion.json>`` scores the same pairs alike, refuses other networks (or another order);
    localisation refuses ``fit``."""
    from camsim.eval.transfer import run_transfer
    from camsim.models.fusion import fit_fusion
    from camsim.pipeline import run

    root = _as_jpegs(folder_run["root"], tmp_path / "jpegs")
    other = _other_network(tmp_path / "other")
    pair = f"[{ckpts['b']},{other}]"
    fit = run_transfer(transfer_cfg(pair, root, tmp_path / "fit", "fusion=fit"))["transfer"]
    saved = tmp_path / "fit" / "run" / "fusion.json"
    info = json.loads(saved.read_text())
    assert np.asarray(info["weights"]).shape == (2, 3) and [n["file"] for n in info["networks"]] == \
        [f"{ckpts['b'].parent.name}/phase_b.ckpt", "other/phase_b.ckpt"]
    assert any("in-sample" in n for n in fit["notes"])
    z = np.load(tmp_path / "fit" / "run" / "scores.npz")
    alone = [np.load(run_dir / "scores.npz") for run_dir in (
        _run_dir(run_transfer, ckpts["b"], root, tmp_path / "a"), _run_dir(run_transfer, other, root, tmp_path / "o"))]
    patch = z["level"] == "patch"
    tab = z["photo_jpeg_table"]
    t = tab[z["image_1"][patch]] == tab[z["image_2"][patch]]
    assert t.any() and not t.all()
    logit = [np.log(a["score"][patch]) - np.log1p(-a["score"][patch]) for a in alone]
    np.testing.assert_allclose(info["weights"], fit_fusion(logit, z["category"][patch] != "diff_model", t),
                               rtol=1e-3, atol=1e-4)
    run_transfer(transfer_cfg(pair, root, tmp_path / "apply", f"fusion={saved}"))
    np.testing.assert_allclose(np.load(tmp_path / "apply" / "run" / "scores.npz")["score"], z["score"], rtol=1e-12)
    with pytest.raises(ValueError, match="was fitted for .* not for these networks"):
        run_transfer(transfer_cfg(f"[{other},{ckpts['b']}]", root, tmp_path / "swap", f"fusion={saved}"))
    with pytest.raises(ValueError, match="fusion=fit: fitting needs labelled pairs"):
        run(transfer_cfg(pair, root, tmp_path / "spl", "fusion=fit"), job="splicing", train=False)
    spl = _splicing_args(root)
    with pytest.raises(ValueError, match="was fitted for .* not for these networks"):
        run(transfer_cfg(f"[{other},{ckpts['b']}]", root, tmp_path / "spl2", *spl, f"fusion={saved}"),
            job="splicing", train=False)


def test_one_network_fitted_per_table_relation(folder_run, ckpts, tmp_path):
    """``ckpt=a fusion=fit``: one network's logit reweighted per table relation — the fit of its own
    scores, written to fusion.json, its figures flagged in-sample; ``fusion=<fusion.json>`` reproduces
    them, and another network is refused in the transfer evaluation and the splicing benchmark."""
    from camsim.eval.transfer import run_transfer
    from camsim.models.fusion import fit_fusion
    from camsim.pipeline import run

    root = _as_jpegs(folder_run["root"], tmp_path / "jpegs")
    fit = run_transfer(transfer_cfg(ckpts["b"], root, tmp_path / "fit", "fusion=fit"))["transfer"]
    saved = tmp_path / "fit" / "run" / "fusion.json"
    info = json.loads(saved.read_text())
    assert np.asarray(info["weights"]).shape == (2, 2) and any("in-sample" in n for n in fit["notes"])
    z = np.load(tmp_path / "fit" / "run" / "scores.npz")
    plain = np.load(_run_dir(run_transfer, ckpts["b"], root, tmp_path / "plain") / "scores.npz")
    patch = z["level"] == "patch"
    tab = z["photo_jpeg_table"]
    t = tab[z["image_1"][patch]] == tab[z["image_2"][patch]]
    logit = np.log(plain["score"][patch]) - np.log1p(-plain["score"][patch])
    w = fit_fusion([logit], z["category"][patch] != "diff_model", t)
    np.testing.assert_allclose(info["weights"], w, rtol=1e-3, atol=1e-4)
    row = np.where(t, 1, 0)
    np.testing.assert_allclose(z["score"][patch], 1 / (1 + np.exp(-(w[row, 0] + w[row, 1] * logit))), atol=1e-4)
    run_transfer(transfer_cfg(ckpts["b"], root, tmp_path / "apply", f"fusion={saved}"))
    np.testing.assert_allclose(np.load(tmp_path / "apply" / "run" / "scores.npz")["score"], z["score"], rtol=1e-12)
    pngs = run_transfer(transfer_cfg(ckpts["b"], folder_run["root"], tmp_path / "png", f"fusion={saved}"))
    assert any("carry no JPEG luminance table" in n and "different-tables weights" in n
               for n in pngs["transfer"]["notes"])
    other = _other_network(tmp_path / "other")
    with pytest.raises(ValueError, match="was fitted for .* not for these networks"):
        run_transfer(transfer_cfg(other, root, tmp_path / "swap", f"fusion={saved}"))
    spl = _splicing_args(root)
    with pytest.raises(ValueError, match="was fitted for .* not for these networks"):
        run(transfer_cfg(other, root, tmp_path / "spl", *spl, f"fusion={saved}"), job="splicing", train=False)
    with pytest.raises(ValueError, match="fusion: 'max'"):     # one network: refused, not silently ignored
        run(transfer_cfg(other, root, tmp_path / "spl3", *spl, "fusion=max"), job="splicing", train=False)
    assert not (tmp_path / "spl3" / "run").exists() or not any((tmp_path / "spl3" / "run").iterdir())


def _as_jpegs(pngs: Path, root: Path) -> Path:
    """The generated photos as JPEGs at two qualities, so that some pairs share a table and some do not."""
    for k, png in enumerate(sorted(pngs.rglob("*.png"))):
        (root / png.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(png).save(root / png.parent.name / f"{png.stem}.jpg", quality=(90, 75)[k % 2])
    return root


def _splicing_args(authentic: Path) -> tuple[str, ...]:
    """A small splicing benchmark with ``authentic`` as its controls (graph mode, no calibration)."""
    return ("task=splicing", f"splicing.authentic_dir={authentic}", "splicing.modes=[graph]",
            "splicing.calibration_images=0", "logger=none", "split.a=2", "split.known=1", "split.b=1", "split.c=1")


def _run_dir(run_transfer, ckpt, root: Path, tmp: Path) -> Path:
    run_transfer(transfer_cfg(ckpt, root, tmp))
    return tmp / "run"


def test_several_networks_must_cut_the_same_patches(folder_run, ckpts, tmp_path):
    from camsim.eval.transfer import run_transfer
    from camsim.pipeline import run

    coarse = _other_network(tmp_path / "coarse", min_entropy=2.0)
    with pytest.raises(ValueError, match=r"cut different patches.*coarse: \(32, 8, 2\.0\)"):
        run_transfer(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path))
    with pytest.raises(ValueError, match="fusion: 'max'"):
        run_transfer(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path, "fusion=max"))
    with pytest.raises(ValueError, match="fusion: 'max'"):
        run(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path, "fusion=max"), job="splicing",
            train=False)
    with pytest.raises(ValueError, match="given more than once"):
        run_transfer(transfer_cfg(f"[{ckpts['b']},{ckpts['b']}]", folder_run["root"], tmp_path))
    with pytest.raises(ValueError, match=r"Phase A .*Phase B"):
        run_transfer(transfer_cfg(f"[{ckpts['b']},{ckpts['a']}]", folder_run["root"], tmp_path))
    with pytest.raises(ValueError, match="transfer and splicing tasks; the pairs job takes one checkpoint"):
        run(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path), job="pairs", train=False)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_one_camera_model_reports_the_same_model_categories(ckpts, tmp_path, capsys):
    from camsim.eval.transfer import run_transfer

    root = make_folder(tmp_path / "photos", {"Solo_Cam": 2})
    m = run_transfer(transfer_cfg(ckpts["b"], root, tmp_path))["transfer"]
    assert m["patch"]["other_photo"]["n_neg"] == 0 and m["patch"]["other_photo"]["auc"]["value"] is None
    assert m["patch"]["same_photo"]["tpr"]["value"] is not None
    assert any("One camera model" in n for n in m["notes"])
    text = capsys.readouterr().out
    assert "fixed η = 0.5" in text and "nan" not in text.lower()
    assert "nan" not in (tmp_path / "run" / "transfer.md").read_text().lower()


def test_unreadable_files_and_photos_without_patches_are_named(ckpts, tmp_path, caplog):
    from camsim.eval.transfer import run_transfer

    root = make_folder(tmp_path / "photos", {"Acme_One": 2, "Bolt_Two": 2})
    (root / "Acme_One" / "empty.png").write_bytes(b"")
    (root / "Bolt_Two" / "cut.png").write_bytes((root / "Bolt_Two" / "Bolt_Two_0.png").read_bytes()[:200])
    Image.fromarray(np.full((96, 128), 128, np.uint8)).save(root / "Bolt_Two" / "flat.png")
    # a copy in its own model's folder: left out, or its pairs with the original count as two photos
    (root / "Acme_One" / "copy.png").write_bytes((root / "Acme_One" / "Acme_One_1.png").read_bytes())
    with caplog.at_level("WARNING", logger="camsim"), pytest.warns(UserWarning, match="identical content"):
        m = run_transfer(transfer_cfg(ckpts["b"], root, tmp_path))["transfer"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sorted(Path(s["file"]).name for s in run["skipped_files"]) == ["copy.png", "cut.png", "empty.png"]
    assert "identical content to Acme_One_1.png (a copy" in run["skipped_files"][0]["reason"]
    assert [Path(p).name for p in run["no_patch_photos"]] == ["flat.png"]
    logged = caplog.text
    assert "empty.png: empty file" in logged and "cut.png" in logged
    notes = " ".join(m["notes"])
    assert "3 file(s) left out" in notes and "1 readable photo(s) gave no patch" in notes
    assert m["models"]["Bolt_Two"]["photos"] == 2  # the two noisy photos, not the flat or cut one
    assert m["models"]["Acme_One"]["photos"] == 2 and m["patch"]["other_photo"]["n_pos"] == 2 * 20


def test_a_root_given_relative_or_through_dots_names_the_photos_alike(ckpts, tmp_path, monkeypatch):
    """Photos are named by the root made absolute, without ``..``: two runs sharing one artefact
    folder from other working directories name them alike, and read them (heights for the halves
    rows, JPEG qualities), where the second run used to get the first run's relative names from the cache."""
    from camsim.eval.transfer import run_transfer

    make_folder(tmp_path / "photos", {"Acme_One": 2, "Bolt_Two": 2})
    (tmp_path / "elsewhere").mkdir()
    names = []
    for cwd, root, out in ((tmp_path, "photos", "a"), (tmp_path / "elsewhere", "../photos", "b")):
        monkeypatch.chdir(cwd)
        cfg = transfer_cfg(ckpts["b"], Path(root), tmp_path / out)
        cfg.paths.artefact_dir = str(tmp_path / "artefacts")  # one patch cache for both runs
        m = run_transfer(cfg)["transfer"]
        assert m["image"]["halves"]["n_pos"] > 0, out
        names.append(np.load(tmp_path / out / "run" / "scores.npz")["photo_path"].tolist())
    assert names[0] == names[1] and all(n.startswith(str(tmp_path / "photos") + "/") for n in names[0])


def test_median_aggregate_and_best_threshold(folder_run, ckpts, tmp_path):
    from camsim.eval.transfer import run_transfer

    m = run_transfer(transfer_cfg(ckpts["b"], folder_run["root"], tmp_path, "transfer.image.aggregate=median",
                                  "transfer.threshold=best", "transfer.bootstrap.reps=5"))["transfer"]
    s = np.load(tmp_path / "run" / "scores.npz")
    img = s["level"] == "image"
    g = s["group"][img]
    med = [np.median(s["score"][img][g == k]) for k in range(len(s["image_score"]))]
    np.testing.assert_allclose(med, s["image_score"])
    assert m["threshold"] == "best" and m["patch"]["other_photo"]["eta"] != 0.5
    # the per-model table and photo_pairs.csv decide at that oracle η, and say so
    assert float(s["decision_eta_patch"]) == m["patch"]["other_photo"]["eta"] != float(s["eta"])
    md = (tmp_path / "run" / "transfer.md").read_text()
    assert f"patch level η = {m['patch']['other_photo']['eta']:.4g}, the best η" in md and "oracle" in md


def test_best_threshold_maximises_the_balanced_accuracy_it_reports():
    """With ten times more different-model pairs than same-model ones, the threshold of highest
    pair-weighted accuracy sacrifices the same pairs; "best" is an oracle for the figure the rows
    report, (TPR + TNR) / 2."""
    from camsim.eval import metrics as M
    from camsim.eval.bootstrap import Contrast
    from camsim.eval.transfer import choose_threshold

    rng = np.random.default_rng(0)
    pos = np.r_[np.ones(300, bool), np.zeros(3000, bool)]
    score = np.clip(rng.normal(np.where(pos, 0.6, 0.4), 0.12), 0, 1)
    c = Contrast(score, pos, np.arange(len(pos)), np.arange(len(pos)), np.zeros(len(pos), int))

    def balanced(t: float) -> float:
        return (np.mean(score[pos] > t) + np.mean(score[~pos] <= t)) / 2

    best = choose_threshold(c, 0.5, "best")
    grid = np.unique(score)
    assert balanced(best) == pytest.approx(max(balanced(t) for t in grid))
    assert balanced(best) > balanced(float(M.choose_eta(score, pos, "max_acc"))) + 0.02


def test_jpeg_quality_bands(ckpts, tmp_path):
    """Same-model rows are also scored within JPEG-quality bands: positives and different-model
    negatives with both photos at IJG-equivalent quality ≥ transfer.fine_jpeg_quality, or both below;
    the two-photo rows also with both kinds of pair at equal, or both at unequal, photo qualities."""
    from camsim.eval.transfer import run_transfer

    quality = {"Acme_Fine": (99, 99), "Bolt_Fine": (99,), "Acme_Coarse": (80, 80), "Bolt_Coarse": (85, 90)}
    rng = np.random.default_rng(1)
    for model, qs in quality.items():
        (tmp_path / "photos" / model).mkdir(parents=True)
        for k, q in enumerate(qs):
            img = np.clip(rng.uniform(60, 190) + rng.normal(0, 40, (96, 128, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "photos" / model / f"{k}.jpg", quality=q)
    m = run_transfer(transfer_cfg(ckpts["b"], tmp_path / "photos", tmp_path, "transfer.bootstrap.reps=20"))["transfer"]
    fine, coarse = m["patch"]["same_photo@fine"], m["patch"]["same_photo@coarse"]
    assert fine["jpeg_band"] == "JPEG q ≥ 97" and coarse["jpeg_band"] == "JPEG q < 97"
    assert (fine["n_pos"], fine["n_neg"]) == (3 * 50, 100)  # 3 fine photos; one fine model pair
    assert (coarse["n_pos"], coarse["n_neg"]) == (4 * 50, 100)
    assert m["patch"]["other_photo@fine"]["n_pos"] == 20 and m["image"]["halves@coarse"]["n_pos"] == 4
    assert 0.0 <= fine["auc"]["value"] <= 1.0
    # equal qualities: Acme_Fine's and Acme_Coarse's photo pairs vs Acme_Fine–Bolt_Fine (99 and 99);
    # unequal: Bolt_Coarse's 85–90 vs every other model pair (100 patch pairs each)
    same_q, diff_q = m["patch"]["other_photo@same_q"], m["patch"]["other_photo@diff_q"]
    assert (same_q["n_pos"], same_q["n_neg"]) == (40, 100) and (diff_q["n_pos"], diff_q["n_neg"]) == (20, 500)
    assert same_q["jpeg_band"] == "equal JPEG quality" and "same_photo@same_q" not in m["patch"]
    # both photos at least transfer.far_jpeg_gap (4) quality steps apart: positives Bolt_Coarse's 85–90;
    # negatives every unequal-quality pair, the closest of which (Acme_Coarse–Bolt_Coarse, 80–85) is 5 apart
    far = m["patch"]["other_photo@far_q"]
    assert (far["n_pos"], far["n_neg"]) == (20, 500) and far["jpeg_band"] == "JPEG qualities ≥ 4 apart"
    # identical luminance tables (PIL writes one table per quality): here the same pairs as equal quality
    same_t, diff_t = m["patch"]["other_photo@same_table"], m["patch"]["other_photo@diff_table"]
    assert (same_t["n_pos"], same_t["n_neg"]) == (40, 100) and (diff_t["n_pos"], diff_t["n_neg"]) == (20, 500)
    assert same_t["jpeg_band"] == "identical JPEG tables" and diff_t["jpeg_band"] == "different JPEG tables"
    s = np.load(tmp_path / "run" / "scores.npz")
    tables = dict(zip(s["photo_jpeg_quality"].tolist(), s["photo_jpeg_table"].tolist()))
    assert len(set(tables.values())) == 4 and len(set(s["photo_jpeg_table"].tolist())) == 4  # 99, 80, 85, 90
    got = {Path(p).parent.name + "/" + Path(p).name: int(q) for p, q in zip(s["photo_path"], s["photo_jpeg_quality"])}
    assert got == {f"{mdl}/{k}.jpg": q for mdl, qs in quality.items() for k, q in enumerate(qs)}
    rows = {r["model"]: r for r in csv.DictReader((tmp_path / "run" / "per_model.csv").open())}
    assert rows["Acme_Fine"]["jpeg_quality"] == "99" and rows["Bolt_Coarse"]["jpeg_quality"] == "85–90"
    report = (tmp_path / "run" / "transfer.md").read_text()
    assert "same model, same photo (JPEG q ≥ 97)" in report and "3 photo(s) at q ≥ 97, 4 below" in report
    # off: no JPEG-quality rows; every photo in one band: no band rows (the equal/unequal rows stay)
    off = run_transfer(transfer_cfg(ckpts["b"], tmp_path / "photos", tmp_path, "transfer.bootstrap.reps=2",
                                    "transfer.fine_jpeg_quality=null"))["transfer"]
    assert not [k for level in ("patch", "image") for k in off[level] if "@" in k]
    one = run_transfer(transfer_cfg(ckpts["b"], tmp_path / "photos", tmp_path, "transfer.bootstrap.reps=2",
                                    "transfer.fine_jpeg_quality=50", "transfer.far_jpeg_gap=6"))["transfer"]
    assert not [k for k in one["patch"] if k.endswith(("@fine", "@coarse"))] and "other_photo@same_q" in one["patch"]
    assert "other_photo@far_q" not in one["patch"]  # no model's photos are 6 steps apart: no row
    assert any("One band only" in n for n in one["notes"])
    with pytest.raises(ValueError, match="transfer.fine_jpeg_quality"):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "photos", tmp_path, "transfer.fine_jpeg_quality=101"))
    with pytest.raises(ValueError, match="transfer.far_jpeg_gap"):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "photos", tmp_path, "transfer.far_jpeg_gap=0"))


def test_identical_table_rows_are_not_equal_quality_rows():
    """Two photos at one IJG-equivalent quality may carry different tables (a maker's own, scaled): the
    identical-table row takes only pairs whose photos share the table itself, positives and negatives alike."""
    from camsim.eval.transfer import LevelScores, contrasts_of

    # photos: 0, 1 model A (q 90, tables 7 and 8); 2 model B (q 90, table 7); 3 model B (q 80, table 9)
    quality, table = np.array([90, 90, 90, 80]), np.array([7, 8, 7, 9])
    pairs = [(0, 1, "other_photo"), (2, 3, "other_photo"), (0, 2, "diff_model"), (1, 2, "diff_model"), (0, 3, "diff_model")]
    p1, p2, cat = (np.array(v) for v in zip(*pairs))
    ls = LevelScores("patch", cat, p1, p2, np.full(len(pairs), -1), np.linspace(0.1, 0.9, len(pairs)), None)
    out, about = contrasts_of(ls, quality, 97, None, table)
    # equal quality: positives (0,1); negatives (0,2), (1,2). Identical table: no positive -> no row
    assert (about["patch/other_photo@same_q"]["n_pos"], about["patch/other_photo@same_q"]["n_neg"]) == (1, 2)
    assert "patch/other_photo@same_table" not in out
    diff = about["patch/other_photo@diff_table"]
    assert (diff["n_pos"], diff["n_neg"]) == (2, 2) and diff["band_label"] == "different JPEG tables"
    table[1] = 7  # now photos 0, 1, 2 share table 7
    out, about = contrasts_of(ls, quality, 97, None, table)
    same = about["patch/other_photo@same_table"]
    assert (same["n_pos"], same["n_neg"]) == (1, 2) and out["patch/other_photo@same_table"].positive.sum() == 1
    assert "patch/other_photo@same_table" not in contrasts_of(ls, quality, 97, None)[0]  # no tables given: no row


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("override, message", [
    ("transfer.bootstrap.reps=0", "transfer.bootstrap.reps: must be ≥ 1"),
    ("transfer.bootstrap.level=1.5", "transfer.bootstrap.level: must be in"),
    ("transfer.threshold=oracle", "transfer.threshold: 'oracle'"),
    ("transfer.fine_jpeg_quality=101", "transfer.fine_jpeg_quality"),
    ("transfer.pairs.per_photo=0", "transfer.pairs.per_photo: must be ≥ 1"),
])
def test_bad_settings_stop_before_any_photo_is_read(ckpts, tmp_path, override, message):
    from camsim.eval.transfer import run_transfer

    with pytest.raises(ValueError, match=message):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "no_such_folder", tmp_path, override))


def test_wrong_kind_corrupt_or_missing_checkpoint(ckpts, tmp_path):
    from camsim.eval.transfer import load_checkpoint

    with pytest.raises(ValueError, match=r"Phase A .*Phase B"):
        load_checkpoint(ckpts["a"])
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(ckpts["b"].read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut.ckpt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(ValueError, match="ckpt"):
        load_checkpoint(None)


@pytest.mark.slow  # a console entry point: ~7 s of imports on 2 idle cores
def test_cli_wrong_kind_is_one_line_and_writes_no_result(ckpts, tmp_path):
    root = make_folder(tmp_path / "photos", {"Acme_One": 1})
    res = run_cli("camsim-eval", f"ckpt={ckpts['a']}", "data=folder", f"data.root={root}",
                  f"paths.artefact_dir={tmp_path / 'a'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("camsim: error:")]
    assert len(errors) == 1 and "Phase A" in errors[0] and "Phase B" in errors[0]
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_empty_or_unreadable_folder(ckpts, tmp_path):
    from camsim.eval.transfer import run_transfer

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no camera-model folders"):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "empty", tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "missing", tmp_path))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o000)
        try:
            with pytest.raises(ValueError, match="cannot be read"):
                run_transfer(transfer_cfg(ckpts["b"], locked, tmp_path))
        finally:
            locked.chmod(0o755)
    # photos that give no patch: a clear error, nothing written
    (tmp_path / "tiny" / "Acme_One").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "tiny" / "Acme_One" / "a.png")
    with pytest.raises(ValueError, match="no patch could be cut"):
        run_transfer(transfer_cfg(ckpts["b"], tmp_path / "tiny", tmp_path))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_failure_while_writing_leaves_no_result(folder_run, ckpts, tmp_path, monkeypatch):
    import camsim.eval.transfer_report
    from camsim.eval.transfer import run_transfer

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(camsim.eval.transfer_report, "plot_roc", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_transfer(transfer_cfg(ckpts["b"], folder_run["root"], tmp_path, "transfer.bootstrap.reps=2"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_default_task_is_transfer_with_a_checkpoint():
    from camsim.cli.eval import resolve_task

    assert resolve_task(compose_cfg(["ckpt=x.ckpt"], config_name="eval")) == "transfer"
    assert resolve_task(compose_cfg([], config_name="eval")) == "pairs"
    assert resolve_task(compose_cfg(["ckpt=x.ckpt", "task=pairs"], config_name="eval")) == "pairs"
    with pytest.raises(ValueError, match="task"):
        resolve_task(compose_cfg(["task=nope"], config_name="eval"))


# --------------------------------------------------------------------------- maths


def test_weighted_roc_with_unit_weights_matches_the_metrics():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(400), 2)  # ties
    y = rng.random(400) < 0.4
    f = WeightedRoc(s, y).figures(0.5)
    assert f["auc"] == pytest.approx(roc_auc(s, y), abs=1e-12)
    assert f["eer"] == pytest.approx(equal_error_rate(s, y), abs=1e-12)
    for target, key in ((0.01, "tpr_far1"), (0.05, "tpr_far5")):
        t = threshold_at_far(s[~y], target)
        assert f[key] == pytest.approx((s[y] > t).mean(), abs=1e-12)
    assert f["tpr"] == pytest.approx((s[y] > 0.5).mean()) and f["tnr"] == pytest.approx((s[~y] <= 0.5).mean())
    # integer weights = repeating pairs
    w = rng.integers(0, 3, 400)
    rep = np.repeat(np.arange(400), w)
    assert WeightedRoc(s, y).figures(0.5, w)["auc"] == pytest.approx(roc_auc(s[rep], y[rep]), abs=1e-12)
    weighted, repeated = WeightedRoc(s, y).figures(0.5, w), WeightedRoc(s[rep], y[rep]).figures(0.5)
    for key in ("auc", "eer", "tpr", "tnr", "tpr_far1", "tpr_far5"):
        assert weighted[key] == pytest.approx(repeated[key], abs=1e-12), key
    no_negatives = WeightedRoc(s, y).figures(0.5, np.where(y, 1.0, 0.0))   # a resample without them
    assert no_negatives["tpr"] == pytest.approx((s[y] > 0.5).mean()) and np.isnan(no_negatives["auc"])


def synthetic_contrast(n_models: int, seed: int) -> tuple[Contrast, np.ndarray]:
    """3 photos per model; same-model pairs score by a per-model effect spread evenly from hard
    (logit -1) to easy (+3), so the spread between models is the same at every size."""
    rng = np.random.default_rng(seed)
    mop = np.repeat(np.arange(n_models), 3)
    photo = np.repeat(np.arange(len(mop)), 10)
    layout = PhotoLayout.from_patches(photo, mop)
    pp = sample_patch_pairs(layout, n_models, 5, 10, 30, 10, rng)
    keep = pp.category != 0
    i, j, cat = pp.i[keep], pp.j[keep], pp.category[keep]
    pos = cat == 1
    effect = rng.permutation(np.linspace(-1.0, 3.0, n_models))
    logit = np.where(pos, effect[mop[photo[i]]], -1.0) + rng.normal(0, 1, len(i))
    return Contrast(1 / (1 + np.exp(-logit)), pos, photo[i], photo[j], np.where(pos, 1, 2)), mop


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_models():
    widths = []
    for n_models in (5, 40):
        c, mop = synthetic_contrast(n_models, seed=1)
        point = c.figures(0.5)
        ci = bootstrap({"c": c}, {"c": 0.5}, mop, reps=200, level=0.95, seed=0)["c"]
        for k in ("auc", "tpr", "tnr"):
            assert ci[k]["lo"] <= point[k] <= ci[k]["hi"], (n_models, k)
        widths.append(ci["auc"]["hi"] - ci["auc"]["lo"])
    assert widths[1] < 0.6 * widths[0], widths


def test_bootstrap_in_parallel_threads_gives_the_same_intervals(monkeypatch):
    import camsim.eval.bootstrap as bs

    c, mop = synthetic_contrast(12, seed=2)
    runs = []
    for threshold in (10**12, 0):                                    # one thread, then every core
        monkeypatch.setattr(bs, "PARALLEL_PAIRS", threshold)
        monkeypatch.setattr(bs, "default_workers", lambda: 3)
        runs.append(bootstrap({"c": c, "d": c}, {"c": 0.5, "d": 0.3}, mop, reps=61, level=0.9, seed=4))
    assert runs[0] == runs[1]                                        # the same resamples


def test_pair_sampling_is_stratified():
    rng = np.random.default_rng(0)
    mop = np.array([0] * 10 + [1] * 2 + [2])  # 10, 2 and 1 photos
    photo = np.repeat(np.arange(13), 4)
    layout = PhotoLayout.from_patches(photo, mop)
    pp = sample_patch_pairs(layout, 3, per_photo=5, per_photo_pair=3, photo_pairs_per_model=6, per_model_pair=7, rng=rng)
    cats = np.asarray(pp.categories)[pp.category]
    pi, pj = photo[pp.i], photo[pp.j]
    assert (pi[cats == "same_photo"] == pj[cats == "same_photo"]).all() and (pp.i != pp.j).all()
    other = cats == "other_photo"
    assert (pi[other] != pj[other]).all() and (mop[pi[other]] == mop[pj[other]]).all()
    assert (mop[pi[other]] == 0).sum() == 6 * 3 and (mop[pi[other]] == 1).sum() == 1 * 3  # capped, then all
    diff = cats == "diff_model"
    assert (mop[pi[diff]] != mop[pj[diff]]).sum() == diff.sum() == 3 * 7
    assert (cats == "same_photo").sum() == 13 * 5
    # image level: halves need patches in both halves of a photo
    half = halves(np.tile([0, 8, 40, 64], 13), 32, np.full(52, 96))
    assert half.tolist()[:4] == [0, 0, -1, 1]
    ip = sample_image_pairs(layout, 3, half, 4, 6, 2, rng)
    names = np.asarray(ip.categories)[ip.category]
    assert (names == "halves").sum() == 13 and (names == "other_photo").sum() == 7
    assert (names == "diff_model").sum() == 2 + 2 + 2  # 2 photo pairs per model pair (1 x 2 has exactly 2)
    assert np.bincount(ip.group).tolist() == [4] * len(ip.photo_1)
    assert (half[ip.i[np.repeat(ip.category == 0, 4)]] == 0).all()


# --------------------------------------------------------------------------- layouts


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_dresden_layout(tmp_path):
    from hydra.utils import instantiate

    from camsim.data.layouts import camera_make, dresden_model_name

    for name in ("Canon_Ixus70_0_3215.JPG", "Canon_Ixus70_1_3300.JPG", "Olympus_mju_1050SW_0_1.JPG",
                 "Nikon_D70s_0_19.jpg", "Nikon_D70_0_19.jpg", "notes.txt", "Broken_name.JPG"):
        _touch(tmp_path / name)
    cfg = compose_cfg(["data=dresden", f"data.root={tmp_path}"])
    index = instantiate(cfg.data, _convert_="all").index()
    assert index.counts() == {"Canon_Ixus70": 2, "Nikon_D70": 1, "Nikon_D70s": 1, "Olympus_mju_1050SW": 1}
    assert {p.name for p, _ in index.skipped} == {"notes.txt", "Broken_name.JPG"}
    assert dresden_model_name("Agfa_DC-504_0_7.JPG") == "Agfa_DC-504" and camera_make("Olympus_mju_1050SW") == "olympus"
    with pytest.raises(ValueError, match="Dresden"):
        dresden_model_name("Canon_Ixus70.JPG")


def test_vision_layout(tmp_path):
    from hydra.utils import instantiate

    from camsim.data.layouts import VisionSource

    for dev, model in (("D01", "Samsung_GalaxyS3Mini"), ("D26", "Samsung_GalaxyS3Mini"), ("D02", "Apple_iPhone4s")):
        for variant in ("flat", "nat", "natWA"):
            for k in range(2):
                _touch(tmp_path / f"{dev}_{model}" / "images" / variant / f"{dev}_{variant}_{k}.jpg")
    (tmp_path / "D03_Huawei_P9" / "videos").mkdir(parents=True)
    cfg = compose_cfg(["data=vision", f"data.root={tmp_path}"])
    index = instantiate(cfg.data, _convert_="all").index()
    assert index.counts() == {"Apple_iPhone4s": 4, "Samsung_GalaxyS3Mini": 8}  # flat + nat, devices merged
    cfg = compose_cfg(["data=vision", f"data.root={tmp_path}", "data.variants=[natWA]"])
    index = instantiate(cfg.data, _convert_="all").index()
    assert index.counts() == {"Apple_iPhone4s": 2, "Samsung_GalaxyS3Mini": 4}
    assert all("natWA" in p.parts for paths in index.models.values() for p in paths)
    with pytest.raises(ValueError, match="variants"):
        VisionSource(tmp_path, variants=["whatsapp"])
    with pytest.raises(ValueError, match="no images"):
        VisionSource(tmp_path / "D03_Huawei_P9").index()


def test_vision_tree_end_to_end(ckpts, tmp_path):
    """A generated VISION tree through the whole transfer evaluation: model names without Dxx_."""
    from camsim.eval.transfer import run_transfer

    photos = make_folder(tmp_path / "gen", {"a": 2, "b": 2, "c": 1})
    for src, dev in (("a", "D01_Acme_Two"), ("b", "D02_Acme_Two"), ("c", "D03_Bolt_X")):
        for k, f in enumerate(sorted((photos / src).iterdir())):
            dst = tmp_path / "vision" / dev / "images" / ("flat" if k == 0 else "nat") / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dst)
    cfg = compose_cfg([f"ckpt={ckpts['b']}", "data=vision", f"data.root={tmp_path / 'vision'}", "data.extensions=[.png]",
                       f"paths.output_dir={tmp_path / 'run'}", f"paths.artefact_dir={tmp_path / 'arts'}",
                       "patches.workers=0", "transfer.bootstrap.reps=5", "transfer.patches_per_image=8"],
                      config_name="eval")
    m = run_transfer(cfg)["transfer"]
    assert {k: (v["photos"], v["set"]) for k, v in m["models"].items()} == {"Acme_Two": (4, "A"), "Bolt_X": (1, "unknown")}


def test_calibration_photos_that_are_also_benchmark_photos_are_refused(folder_run, ckpts, tmp_path):
    from camsim.pipeline import run

    root = folder_run["root"]
    args = ("task=splicing", f"splicing.authentic_dir={root}", f"splicing.calibration_dir={root / 'Acme_Two'}",
            "splicing.modes=[graph]", "logger=none", "split.a=2", "split.known=1", "split.b=1", "split.c=1")
    with pytest.raises(ValueError, match="calibration_dir: 3 of its images are also benchmark images"):
        run(transfer_cfg(ckpts["b"], root, tmp_path, *args), job="splicing", train=False)


def test_several_networks_in_the_splicing_benchmark(folder_run, ckpts, tmp_path):
    """``camsim-eval task=splicing ckpt=[a, b]``: the benchmark localises with both networks as one
    (FusedLocalizer, rule ``fusion``): each image's score is the fused localiser's, not either
    network's, the report names both networks and the rule; other entropy filters need one threshold."""
    from camsim.eval.splicing import PROTOCOLS, localize_options
    from camsim.lit.phase_b import load_similarity
    from camsim.localize.outputs import METRICS, image_confusions
    from camsim.localize.run import FusedLocalizer, Localizer
    from camsim.pipeline import run

    real = tmp_path / "forgeries"
    (real / "images").mkdir(parents=True)
    (real / "masks").mkdir()
    host = np.asarray(Image.open(folder_run["root"] / "Acme_Two" / "Acme_Two_0.png"))
    donor = np.asarray(Image.open(folder_run["root"] / "Bolt_Three" / "Bolt_Three_0.png"))
    fake, mask = host.copy(), np.zeros(host.shape[:2], np.uint8)
    fake[32:80, 48:112], mask[32:80, 48:112] = donor[32:80, 48:112], 255
    Image.fromarray(fake).save(real / "images" / "fake.png")
    Image.fromarray(mask).save(real / "masks" / "fake_mask.png")
    other = _other_network(tmp_path / "other")
    pair = f"[{ckpts['b']},{other}]"
    args = ("task=splicing", f"splicing.real_dir={real}", f"splicing.authentic_dir={folder_run['root']}",
            "splicing.modes=[graph]", "splicing.calibration_images=0", "logger=none",
            "split.a=2", "split.known=1", "split.b=1", "split.c=1")
    results = {}
    for rule in ("logit", "mean"):
        results[rule] = run(transfer_cfg(pair, folder_run["root"], tmp_path / rule, *args, f"fusion={rule}"),
                            job="splicing", train=False)["splicing"]["real"]["graph"]
        assert results[rule]["n_spliced"] == 1 and results[rule]["n_controls"] == sum(FOLDER.values())
    report = json.loads((tmp_path / "logit" / "run" / "splicing.json").read_text())
    assert " + " in report["checkpoint"] and "fusion=logit" in report["checkpoint"]
    opts = localize_options("graph", None, None, 0.5, None)
    sims = [load_similarity(ckpts["b"]), load_similarity(other)]
    photo = np.asarray(Image.open(real / "images" / "fake.png").convert("RGB"))
    green, gt = np.ascontiguousarray(photo[..., 1]), mask > 127

    def best(res) -> dict:  # the benchmark's pixel figures under the "best" protocol
        conf = image_confusions(res.heatmap, gt, PROTOCOLS["best"])
        return {m: float(fn(*conf[m])) for m, fn in METRICS.items()}

    alone = best(Localizer(sims[0], batch=64).run(green, opts, colour=photo))
    for rule in ("logit", "mean"):
        row = [r for r in csv.DictReader(open(tmp_path / rule / "run" / "splicing.csv")) if r["image"] == "fake"][0]
        fused = FusedLocalizer(sims, fusion=rule, batch=64).run(green, opts, colour=photo)
        assert float(row["score"]) == pytest.approx(fused.score, abs=1e-6)
        for m, v in best(fused).items():
            assert float(row[f"{m}_best"]) == pytest.approx(v, abs=1e-9), (rule, m)
        assert any(float(row[f"{m}_best"]) != pytest.approx(v, abs=1e-9) for m, v in alone.items()), rule
    assert results["logit"]["auc"] is not None and results["mean"]["auc"] is not None
    coarse = _other_network(tmp_path / "coarse", min_entropy=2.0)
    with pytest.raises(ValueError, match="different entropies"):
        run(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path / "coarse_run", *args),
            job="splicing", train=False)
    given = run(transfer_cfg(f"[{ckpts['b']},{coarse}]", folder_run["root"], tmp_path / "given", *args,
                             "splicing.min_entropy=2.0"), job="splicing", train=False)
    assert given["splicing"]["real"]["graph"]["n_spliced"] == 1
    # a list of one is that one network, as in the transfer evaluation
    run(transfer_cfg(f"[{ckpts['b']}]", folder_run["root"], tmp_path / "one", *args), job="splicing", train=False)
    one = [r for r in csv.DictReader(open(tmp_path / "one" / "run" / "splicing.csv")) if r["image"] == "fake"][0]
    assert float(one["score"]) == Localizer(sims[0], batch=64).run(green, opts, colour=photo).score
    assert json.loads((tmp_path / "one" / "run" / "splicing.json").read_text())["checkpoint"] == str(ckpts["b"])


def test_an_interval_from_fewer_replicates_says_how_many():
    """With two camera models, half the bootstrap replicates draw one model twice and have no
    different-model pair: AUC's interval comes from the rest, and the table says so."""
    from camsim.eval.bootstrap import percentile_interval
    from camsim.eval.transfer_report import fmt

    ci = percentile_interval([0.8, 0.9, np.nan, 0.85, np.nan, 0.95], reps=6, level=0.9)
    assert (ci["n"], ci["reps"]) == (4, 6)
    assert fmt(0.875, ci, pct=False).endswith("(4/6 reps)")
    assert "reps" not in fmt(0.875, percentile_interval([0.8, 0.9, 0.85], reps=3, level=0.9), pct=False)


def test_a_networks_training_folder_elsewhere_is_named_with_the_training_photos_caveat():
    """The same data settings under another root (a copy, another machine) are not "not its training
    data": the note says where it was trained and that known models' photos may include training ones."""
    from types import SimpleNamespace

    from camsim.eval.networks import Networks

    trained = {"_target_": "camsim.data.sources.FolderSource", "root": "/home/a/cams", "min_images": 2}

    class Recorded(Networks):  # the fingerprint its checkpoint recorded
        fingerprints = property(lambda self: [trained])

    sim = SimpleNamespace(training_sets={"a": ["CamA"], "b": ["CamB"]}, finetuning=False)
    nets = Recorded([Path("net/model.ckpt")], [sim])
    here = {**trained, "root": "/data/cams"}
    note = " ".join(nets.notes(["CamA"], here, baseline=False))
    assert "/home/a/cams" in note and "/data/cams" in note and "include photos it was trained on" in note
    assert "is not its training data" not in note
    assert "is not its training data" in " ".join(nets.notes(["CamA"], {**here, "min_images": 5}, baseline=False))
    assert "include photos it was trained on" in " ".join(nets.notes(["CamA"], trained, baseline=False))


def test_a_models_photo_pairs_are_drawn_without_listing_them():
    """``transfer.photo_pairs_per_model`` caps a model's pairs of two photos: the pairs kept are
    those of ``combinations``' order at the drawn indices (as when they were listed first — the
    figures stay), distinct photos of the model, each pair once, all of them under the cap."""
    from itertools import combinations

    photo_of_patch = np.repeat(np.arange(60), 2)
    model_of_photo = np.r_[np.zeros(3), np.ones(57)].astype(int)
    layout = PhotoLayout.from_patches(photo_of_patch, model_of_photo)
    for model, cap in ((0, 10), (1, 1), (1, 40), (1, 2000)):
        photos = layout.photos_of(model)
        listed = list(combinations(photos.tolist(), 2))
        want = listed if len(listed) <= cap else \
            [listed[k] for k in np.sort(np.random.default_rng(cap).choice(len(listed), cap, replace=False))]
        got = model_photo_pairs(layout, model, cap, np.random.default_rng(cap))
        assert got == want
        assert len(set(got)) == len(got) == min(cap, len(listed))
        assert all(p < q and model_of_photo[p] == model_of_photo[q] == model for p, q in got)
