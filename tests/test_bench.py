"""camsim.bench: the smoke mode runs and writes the expected rows; the fast paths it measures
give the reference results (correctness only — no timing asserts; speed is the benchmark's job)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from camsim.bench import synth
from camsim.bench.ceiling import ceiling_gflops, roofline_gflops
from camsim.bench.cli import main
from camsim.bench.common import table_line, texture
from camsim.bench.plan import recipe
from camsim.bench.report import annotate, targets
from camsim.bench.rows_model import compare_variant
from camsim.data.patches import patch_entropy
from camsim.lit.phase_b import ForensicSimilarity
from camsim.models.similarity import SimilarityNet


def _cfg(group: str, name: str) -> dict:
    """A model / similarity config as camsim-run composes it (``model=name`` / ``similarity=name``)."""
    if group == "model":
        return recipe(model=name)["model"]
    return recipe(head=name)["similarity"]


# ----------------------------------------------------------------------------- smoke mode


def test_smoke_runs_every_row_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    # compile rows need a C++ toolchain and ~1 min cold: covered by the slow test below
    report = main(["--smoke", "--in-process", "--quiet", "--out", str(out),
                         "--variants", "eager", "channels_last", "composed", "bf16"])
    on_disk = json.loads(out.read_text())
    assert on_disk["rows"].keys() == report["rows"].keys()
    expected = {"gemm", "stream", "gemm/end", "phase_a/mislnet/32/eager", "phase_a/mislnet/32/channels_last",
                "phase_a/mislnet/32/composed", "phase_a/mislnet/32/bf16", "phase_a/quick/eager",
                "phase_a/quick/channels_last", "phase_a/quick/composed", "data/extract/jpeg", "data/extract/png",
                "data/loader/32", "data/decode", "data/synth", "phase_b/train", "phase_b/eval", "phase_b/localize",
                "phase_b/localize/photo", "job/quick"}
    rows = on_disk["rows"]
    assert set(rows) == expected
    for name, row in rows.items():
        if name == "data/synth" and row["status"] == "skip":  # simulator not importable here
            assert "synth" in row["reason"]
            continue
        assert row["status"] == "ok", (name, row.get("reason"), row.get("traceback"))
        assert row["lines"], name
        assert all(line["value"] is not None and line["value"] >= 0 for line in row["lines"]), name
        assert row["memory"]["peak_rss_mb"] > 0, name
    assert on_disk["meta"]["smoke"] is True and on_disk["meta"]["ceiling_gflops"] > 0
    # shares of the ceiling are filled in for every line with FLOPs
    inf = rows["phase_a/mislnet/32/eager"]["lines"][0]
    assert inf["share"] == pytest.approx(inf["gflops"] / on_disk["meta"]["ceiling_gflops"])
    # ... and of the roofline bound, from the stream row's bandwidth and the row's bytes
    assert rows["stream"]["gbs"] > 0 and inf["bytes"] > 0 and 0 < inf["roofline_gflops"] <= on_disk["meta"]["ceiling_gflops"]
    assert inf["roofline_share"] == pytest.approx(inf["gflops"] / inf["roofline_gflops"])
    assert rows["phase_a/mislnet/32/channels_last"]["agreement"]["agree"] is True
    assert rows["phase_a/quick/composed"]["agreement"]["agree"] is True
    assert rows["data/decode"]["identical"] is True
    assert rows["phase_b/eval"]["max_abs_diff"] < 1e-5
    loc = rows["phase_b/localize"]
    assert loc["pairs"] == loc["decidable"] ** 2 and loc["features_s"] > 0 and loc["pairs_s"] > 0
    # camsim-localize end to end on a folder of two photos in its own process: the parts within each photo
    photo = rows["phase_b/localize/photo"]
    assert len(photo["photos"]) == 2 and photo["startup_s"] > 0 and photo["later_s"] == photo["photos"][1]["seconds"]
    for ph in photo["photos"]:
        parts = sum(ph[k] for k in ("read_s", "features_s", "scoring_s", "graph_s", "write_s"))
        assert ph["features_s"] > 0 and parts <= ph["seconds"] + 0.02 and ph["patches"] > 0
    assert {"overlay.png", "heatmap.png", "mask.png", "patches.npz"} <= set(photo["output_bytes"])
    assert "scores.npy" not in photo["output_bytes"]                       # a folder: scores only on request
    if Path("/proc/stat").is_file():  # the row says how busy the rest of the machine was meanwhile
        assert 0 <= photo["others_cores"] <= (os.cpu_count() or 1)
    # the main job (debug=fast here) from an empty directory in its own process: its stages, in order
    job = rows["job/quick"]
    assert job["overrides"] == ["debug=fast"] and 0 < job["startup_s"] < job["job_s"] <= job["wall_s"]
    assert job["stages"][0][0] == "data" and "Phase A" in job["stages"][1][0] and "Phase B" in job["stages"][2][0]
    assert job["stages"][-1][0].startswith("evaluation") and 0 <= job["overall"] <= 1
    assert all(s >= 0 for _, s in job["stages"]) and job["startup_s"] < 30  # imports + config + report
    names = [t["target"] for t in on_disk["targets"]]
    assert "job/quick: main job from an empty directory" in names
    assert any(n.startswith("loader / quick-recipe training") for n in names)
    assert any("pair scoring < feature extraction" in n for n in names)
    assert any(n.startswith("phase_b/localize/photo: later") for n in names)
    assert any("inference share" in n for n in names) and any("training share" in n for n in names)


def test_rows_run_in_fresh_subprocesses(tmp_path):
    out = tmp_path / "b.json"
    report = main(["--smoke", "--quiet", "--out", str(out), "--only", "gemm", "data/decode"])
    # the ceiling is measured at the start and again at the end of a run
    assert list(report["rows"]) == ["gemm", "data/decode", "gemm/end"]
    for row in report["rows"].values():
        assert row["status"] == "ok", row.get("reason")
        assert row["memory"]["method"].startswith("fresh subprocess")
        assert row["memory"]["peak_rss_mb"] >= row["memory"]["start_rss_mb"] > 0


def test_only_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="matches no row"):
        main(["--smoke", "--quiet", "--out", str(tmp_path / "x.json"), "--only", "no_such_row"])
    with pytest.raises(SystemExit, match="--model"):
        main(["--smoke", "--quiet", "--out", str(tmp_path / "x.json"), "--model", "no_such_model"])


@pytest.mark.slow
def test_smoke_with_compile_rows(tmp_path):
    report = main(["--smoke", "--in-process", "--quiet", "--out", str(tmp_path / "c.json"),
                         "--only", "phase_a/*/compile"])
    rows = {k: v for k, v in report["rows"].items() if k not in ("gemm", "stream", "gemm/end")}  # yardsticks
    assert set(rows) == {"phase_a/mislnet/32/compile", "phase_a/quick/compile"}
    for row in rows.values():
        assert row["status"] == "ok", row.get("traceback")
        assert row["agreement"]["agree"] is True
        assert row["compile_s"]["infer_cold"] >= 0


# ----------------------------------------------------------------------------- targets (pure)


def test_ceiling_is_the_faster_of_the_start_and_end_gemm_rows():
    gemm = {"gemm": {"status": "ok", "kind": "gemm", "gflops": 100.0},
            "gemm/end": {"status": "ok", "kind": "gemm", "gflops": 125.0}}
    line = {"value": 500.0, "unit": "patches/s", "flops": 2e8}
    results = {**gemm, "phase_a/m/64/eager": {"status": "ok", "kind": "phase_a", "lines": [line]}}
    annotate(results)
    assert line["share"] == pytest.approx(100.0 / 125.0)  # 100 GFLOP/s achieved / the faster ceiling
    assert ceiling_gflops({"gemm": gemm["gemm"], "gemm/end": {"status": "error", "kind": "gemm"}}) == 100.0


def test_roofline_bound_and_share_by_hand():
    """Bound = min(ceiling, bandwidth x intensity): 100 GFLOP/s ceiling, 20 GB/s; a line of 2e8
    FLOPs and 1e8 bytes per patch (intensity 2) is bandwidth-bound at 40 GFLOP/s."""
    yard = {"gemm": {"status": "ok", "kind": "gemm", "gflops": 100.0},
            "stream": {"status": "ok", "kind": "stream", "gbs": 20.0}}
    line = {"value": 100.0, "unit": "patches/s", "flops": 2e8, "bytes": 1e8}
    compute = {"value": 100.0, "unit": "patches/s", "flops": 2e8, "bytes": 1e6}  # intensity 200: compute-bound
    annotate({**yard, "r": {"status": "ok", "kind": "phase_a", "lines": [line, compute]}})
    assert line["roofline_gflops"] == pytest.approx(40.0) and line["roofline_share"] == pytest.approx(20.0 / 40.0)
    assert compute["roofline_gflops"] == pytest.approx(100.0) and compute["roofline_share"] == pytest.approx(0.2)
    assert roofline_gflops(1.0, 1.0, 100.0, None) is None


def test_count_bytes_of_a_hand_sized_conv_bn_pool_stack():
    """Every leaf's inputs + outputs + parameters, fp32: conv 1->2 (3x3, no bias) on 8x8 -> 6x6,
    batch norm, ReLU, 2x2 max pool -> 3x3; FLOPs from count_flops: 2 x 36 x 2 x 9."""
    import torch.nn as nn

    from camsim.bench.ceiling import count_bytes, count_flops

    class Stack(nn.Module):
        in_channels = 1

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, bias=False)
            self.bn, self.act, self.pool = nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(self.act(self.bn(self.conv(x.float()))))

    x, y, z = 64, 2 * 36, 2 * 9  # elements: input 8x8, conv/bn/act output 2x6x6, pooled 2x3x3
    conv = (x + y + 18) * 4  # + 18 weights
    bn = (y + y + 2 + 2 + 2 + 2) * 4 + 8  # + weight, bias, running mean, var (fp32) + num_batches_tracked (int64)
    act, pool = (y + y) * 4, (y + z) * 4
    assert count_bytes(Stack(), 8) == conv + bn + act + pool
    assert count_flops(Stack(), 8) == 2 * 36 * 2 * 9
    # a batch reads the weights once: per patch, 1/B of them (the rows' batches are 64-128)
    weights = 18 * 4 + (2 + 2 + 2 + 2) * 4 + 8
    assert count_bytes(Stack(), 8, batch=4) == pytest.approx(conv + bn + act + pool - weights * 3 / 4)


def test_targets_pass_and_miss_from_hand_made_results():
    results = {
        "gemm": {"status": "ok", "kind": "gemm", "gflops": 100.0, "lines": []},
        # 800 patches/s x 0.1 GFLOP = 80 GFLOP/s = 80 % (pass); training 100 x 0.3 = 30 % (miss)
        "phase_a/m/64/eager": {"status": "ok", "kind": "phase_a", "variant": "eager", "patch": 64,
                               "flops_forward": 1e8, "inference": {"best": 800.0}, "training": {"best": 100.0},
                               "lines": []},
        "phase_a/quick/eager": {"status": "ok", "kind": "phase_a", "variant": "eager", "patch": 64,
                                "flops_forward": 1e7, "inference": {"best": 5000.0}, "training": {"best": 1000.0},
                                "lines": []},
        "data/loader/64": {"status": "ok", "kind": "loader", "patch": 64, "quick": {"best": 2500.0}, "lines": []},
        "phase_b/localize": {"status": "ok", "kind": "localize", "features_s": 2.0, "pairs_s": 3.0, "lines": []},
        "job/quick": {"status": "ok", "kind": "job", "job_s": 151.0, "wall_s": 152.0, "overrides": [],
                      "others_cores": 0.02, "lines": []},
        "job/fast": {"status": "ok", "kind": "job", "job_s": 149.5, "overrides": ["debug=fast"],
                     "others_cores": None, "lines": []},
    }
    got = {t["target"]: t for t in targets(results)}
    job = got["job/quick: main job from an empty directory"]  # the job's own seconds, not the row's
    assert job["value"] == 151.0 and job["pass"] is False and "0.02 cores" in job["note"]
    assert got["job/fast: main job from an empty directory"]["pass"] is True
    inf = got["phase_a/m/64/eager: eager, default layout, inference share of GEMM ceiling"]
    assert inf["value"] == pytest.approx(0.8) and inf["pass"] is True
    tr = got["phase_a/m/64/eager: eager, default layout, training share of GEMM ceiling"]
    assert tr["value"] == pytest.approx(0.3) and tr["pass"] is False
    loader = got["loader / quick-recipe training (64 px)"]
    assert loader["value"] == pytest.approx(2.5) and loader["pass"] is False
    loc = got["phase_b/localize: pair scoring < feature extraction"]
    assert loc["value"] == pytest.approx(1.5) and loc["pass"] is False
    # with the stream row, the shares are of each line's roofline bound (issue 21: training >= 50 %)
    results["stream"] = {"status": "ok", "kind": "stream", "gbs": 10.0, "lines": []}
    results["phase_a/m/64/eager"]["lines"] = [
        table_line("inference", 800.0, "patches/s", 1e8, bytes=1e7),      # 10 FLOP/B x 10 GB/s: bound 100
        table_line("training", 30.0, "patches/s", 3e8, bytes=3e7 * 4)]    # 2.5 FLOP/B: bound 25 GFLOP/s
    annotate(results)
    got = {t["target"]: t for t in targets(results)}
    inf = got["phase_a/m/64/eager: eager, default layout, inference share of the roofline bound"]
    assert inf["value"] == pytest.approx(0.8) and inf["pass"] is True
    tr = got["phase_a/m/64/eager: eager, default layout, training share of the roofline bound"]
    assert tr["value"] == pytest.approx(0.36) and tr["pass"] is False  # 9 GFLOP/s of a 25 bound (9 % of the ceiling)
    assert "phase_a/m/64/eager: eager, default layout, training share of GEMM ceiling" not in got


def test_texture_patches_are_decidable():
    img = texture(1024, 1280, seed=0)
    assert img.dtype == np.uint8 and img.shape == (1024, 1280)
    cells = img.reshape(32, 32, 40, 32).swapaxes(1, 2).reshape(-1, 32, 32)
    assert (patch_entropy(cells) > 4.0).mean() >= 0.999
    assert np.array_equal(img, texture(1024, 1280, seed=0))


# ----------------------------------------------------------------------------- fast paths agree


def test_channels_last_matches_fp32_eager():
    cmp = compare_variant(_cfg("model", "mislnet"), 32, "channels_last", batch=4)
    assert cmp["agree"] is True
    assert cmp["worst_vs_fp64"] <= 1e-3
    assert cmp["eval_logits"]["vs_fp32_eager"] <= 1e-4


def test_composed_first_layers_match_fp32_eager():
    """The recipe's Phase A path at its own patch size and batch — where the image's mean, left in,
    made the composed kernels' gradients ~150x less accurate than fp32 eager."""
    cmp = compare_variant(_cfg("model", "mislnet_small_jpeg"), 64, "composed", batch=64)
    assert cmp["agree"] is True
    assert cmp["grads"]["vs_fp64"] <= 4 * cmp["grads"]["fp32_eager_vs_fp64"]


@pytest.mark.slow
def test_compiled_channels_last_matches_fp32_eager():
    cmp = compare_variant(_cfg("model", "mislnet_small"), 32, "compile", batch=4)
    assert cmp["agree"] is True
    assert cmp["worst_vs_fp64"] <= 1e-3
    assert cmp["eval_logits"]["vs_fp32_eager"] <= 1e-4


def test_compare_variant_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        compare_variant(_cfg("model", "mislnet_small"), 32, "fp8")


@pytest.mark.parametrize("combine", ["concat", "concat_mul", "absdiff"])
def test_batched_pair_scoring_equals_pairwise(combine):
    torch.manual_seed(0)
    head = {**_cfg("similarity", "small"), "combine": combine}
    phase_a = {"backbone": _cfg("model", "mislnet_small"), "class_names": ["a", "b"], "patch_size": 32}
    sim = ForensicSimilarity(phase_a, head, "fc_a2.pre").eval()
    rng = np.random.default_rng(0)
    f = rng.normal(0, 1, (13, sim.backbone.feature_dim("fc_a2.pre"))).astype(np.float32)
    i, j = rng.integers(0, 13, 50), rng.integers(0, 13, 50)
    with torch.no_grad():
        ft = torch.from_numpy(f)
        pairwise = np.array([torch.sigmoid(sim.head(ft[a:a + 1], ft[b:b + 1]))[0].item() for a, b in zip(i, j)])
        matrix = sim.head.score_matrix(ft, batch=4).numpy()  # blocks smaller than N
    batched = sim.score_pairs(f, i, j, batch_size=7)  # several batches, one partial
    np.testing.assert_allclose(batched, pairwise, rtol=0, atol=1e-6)
    np.testing.assert_allclose(matrix[i, j], pairwise, rtol=0, atol=1e-6)


def test_score_matrix_cross_matrix_equals_pairwise():
    torch.manual_seed(1)
    head = SimilarityNet(16, branch=[8], hidden=[4], combine="concat").eval()
    F_, G_ = torch.randn(5, 16), torch.randn(3, 16)
    with torch.no_grad():
        m = head.score_matrix(F_, G_, batch=2)
        ref = torch.sigmoid(head(F_.repeat_interleave(3, 0), G_.repeat(5, 1))).reshape(5, 3)
    torch.testing.assert_close(m, ref, rtol=0, atol=1e-6)


def test_simulator_benchmark_prints_its_figures(capsys):
    """python -m camsim.bench.synth (CPU per scene / frame, a whole catalogue) at a tiny size."""
    synth.main(["--models", "2", "--families", "1", "--images", "1", "--size", "64", "96", "--workers", "1"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0].startswith("single process: scene ") and "MP/s per core" in out[0]
    assert out[1].startswith("catalogue (data=synth): 2 models x 1 images of 64x96 = 2 images, 1 workers: ")
    assert out[2].startswith("CPU time ")


def test_pool_order_ab_script_runs():
    """benchmarks/pool_order.py (pool before vs after the activation) in a tiny configuration."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pool_order.py"
    res = subprocess.run([sys.executable, str(script), "--models", "mislnet_small", "--batch", "2", "--rounds", "1",
                          "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("mislnet_small")]
    assert len(lines) == 2 and all("ratio" in line for line in lines)


def test_real_sets_script_keeps_camera_originals_and_names_every_drop(tmp_path):
    """benchmarks/real_sets.py: a digicam-like tree -> <Make>_<Model>/; a flat EXIF folder (mei)
    -> grouped by EXIF make and model, dropping small photos, editors' re-saves, scanners,
    files without make/model and duplicates, each with its reason in manifest.csv."""
    import csv
    import subprocess
    import sys

    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_sets.py"
    rng = np.random.default_rng(0)

    def photo(path: Path, make=None, model=None, software=None, size=(64, 48), quality=90) -> None:
        exif = Image.Exif()
        for tag, v in ((0x010F, make), (0x0110, model), (0x0131, software)):
            if v:
                exif[tag] = v
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            path, quality=quality, exif=exif)

    dc = tmp_path / "digicam"
    photo(dc / "Canon" / "PowerShot G2" / "a.JPG", quality=97)
    photo(dc / "Canon" / "PowerShot G2" / "sub" / "b.jpg", quality=80)
    photo(dc / "Sony" / "FD5" / "c.jpg")
    res = subprocess.run([sys.executable, str(script), "digicam", str(dc), str(tmp_path / "out_dc")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out_dc").iterdir()) == ["Canon_PowerShot_G2", "Sony_FD5", "manifest.csv"]
    assert len(list((tmp_path / "out_dc" / "Canon_PowerShot_G2").iterdir())) == 2
    rows = {r["file"]: r for r in csv.DictReader((tmp_path / "out_dc" / "manifest.csv").open())}
    assert rows["Canon/PowerShot G2/a.JPG"]["jpeg_quality"] == "97"

    mei = tmp_path / "mei" / "jpg"
    photo(mei / "ok.jpg", "NIKON CORPORATION", "NIKON D90", "Ver.1.00")
    photo(mei / "ok2.jpg", "NIKON CORPORATION", "NIKON D90")
    (mei / "ok_copy.jpg").write_bytes((mei / "ok.jpg").read_bytes())
    photo(mei / "small.jpg", "Canon", "Canon EOS 7D", size=(20, 20))
    photo(mei / "edited.jpg", "Canon", "Canon EOS D60", "Adobe Photoshop 7.0")
    photo(mei / "scan.jpg", "Kodak", "CLAS Digital Film Scanner")
    photo(mei / "anon.jpg")
    (mei / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    res = subprocess.run([sys.executable, str(script), "mei", str(tmp_path / "mei"), str(tmp_path / "out_mei"),
                          "--min-pixels", "1000"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 camera models, 2 photos" in res.stdout
    reasons = {r["file"][4:]: r["reason"] for r in csv.DictReader((tmp_path / "out_mei" / "manifest.csv").open())}
    assert reasons["ok.jpg"] == reasons["ok2.jpg"] == ""
    assert reasons["ok_copy.jpg"] == "identical to jpg/ok.jpg" and "< 1000" in reasons["small.jpg"]
    assert "Photoshop" in reasons["edited.jpg"] and "camera's photo" in reasons["scan.jpg"]
    assert "Make and Model missing" in reasons["anon.jpg"] and "unreadable" in reasons["broken.jpg"]
    # an existing output folder is refused, nothing overwritten
    res = subprocess.run([sys.executable, str(script), "mei", str(tmp_path / "mei"), str(tmp_path / "out_mei")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "not empty" in res.stderr

    # a list of files in repositories (benchmarks/sets/*.csv): found in the clones, checked by md5
    import hashlib

    clones = tmp_path / "clones"
    photo(clones / "alice+photos" / "a" / "IMG_1.JPG", "Google", "Pixel 5")
    photo(clones / "photos2" / "IMG_1.JPG", "Google", "Pixel 5")  # a clone named <name> only; same file name
    photo(clones / "alice+photos" / "b.jpg", "Apple", "iPhone 7")

    def md5(f: Path) -> str:
        return hashlib.md5(f.read_bytes()).hexdigest()

    listing = tmp_path / "list.csv"
    listing.write_text("model,repo,commit,path,md5\n"
                       f"Google_Pixel_5,alice/photos,c1,a/IMG_1.JPG,{md5(clones / 'alice+photos' / 'a' / 'IMG_1.JPG')}\n"
                       f"Google_Pixel_5,bob/photos2,c2,IMG_1.JPG,{md5(clones / 'photos2' / 'IMG_1.JPG')}\n"
                       f"Apple_iPhone_7,alice/photos,c1,b.jpg,{'0' * 32}\n"
                       f"Apple_iPhone_7,carol/gone,c3,x.jpg,{'0' * 32}\n"
                       f"Google_Pixel_5,alice/photos,c1,a/IMG_1.JPG,{md5(clones / 'alice+photos' / 'a' / 'IMG_1.JPG').upper()}\n"
                       f"Google_Pixel_5,photos,c1,a/IMG_1.JPG,{'0' * 32}\n")
    res = subprocess.run([sys.executable, str(script), "list", str(clones), str(tmp_path / "out_list"),
                          "--list", str(listing)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 camera models, 2 photos (4 files dropped" in res.stdout
    kept = sorted(p.name for p in (tmp_path / "out_list" / "Google_Pixel_5").iterdir())
    assert len(kept) == 2 and kept[0].startswith("IMG_1")  # the second of one name is renamed, not overwritten
    reasons = {r["file"]: r["reason"] for r in csv.DictReader((tmp_path / "out_list" / "manifest.csv").open())}
    assert "md5 differs" in reasons["alice/photos:b.jpg"] and "check out c1" in reasons["alice/photos:b.jpg"]
    assert reasons["carol/gone:x.jpg"].startswith("no clone of carol/gone")
    rows = list(csv.DictReader((tmp_path / "out_list" / "manifest.csv").open()))
    assert rows[4]["reason"] == "identical to alice/photos:a/IMG_1.JPG"  # listed twice (md5 in capitals): kept once
    assert rows[5]["reason"] == "repo 'photos': not owner/name"
    nothing = tmp_path / "nothing.csv"
    nothing.write_text(f"model,repo,commit,path,md5\nX,carol/gone,c3,x.jpg,{'0' * 32}\n")
    res = subprocess.run([sys.executable, str(script), "list", str(clones), str(tmp_path / "out_n"), "--list", str(nothing)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no photo kept" in res.stderr and "no clone of carol/gone" in res.stderr
    res = subprocess.run([sys.executable, str(script), "list", str(clones), str(tmp_path / "out_x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--list goes with" in res.stderr


def test_real_splices_script_pastes_a_donor_region_on_the_jpeg_grid(tmp_path):
    """benchmarks/real_splices.py: each splice is its host crop outside the mask and its donor crop,
    from another camera model, inside; crops start on the 8-px JPEG grid; each host once; the
    unspliced host crop is the splice's control."""
    import csv
    import subprocess
    import sys

    from PIL import Image

    rng = np.random.default_rng(1)
    src = tmp_path / "cameras"
    for model, shape in (("A_One", (200, 264)), ("B_Two", (264, 200)), ("C_Three", (208, 272))):
        for k in range(3):
            (src / model).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(src / model / f"{k}.jpg", quality=90)
    (src / "C_Three" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_splices.py"
    res = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "out"), "--n", "5",
                          "--size", "128", "192", "--area", "0.2", "0.3"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "broken.jpg" in res.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "manifest.csv").open()))
    assert len(rows) == 5 and len({r["host"] for r in rows}) == 5
    for r in rows:
        assert r["host_model"] != r["donor_model"]
        spliced = np.asarray(Image.open(tmp_path / "out" / "images" / f"{r['id']}.png"))
        control = np.asarray(Image.open(tmp_path / "out" / "authentic" / f"{r['id']}.png"))
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{r['id']}_mask.png")) > 0
        assert spliced.shape[:2] == mask.shape == tuple(int(v) for v in r["crop"].split("x"))
        assert 0.15 < mask.mean() < 0.35 and abs(mask.mean() - float(r["area"])) < 1e-3
        assert np.array_equal(spliced[~mask], control[~mask])
        for who in ("host", "donor"):
            y, x = (int(v) for v in r[f"{who}_origin"].split())
            assert y % 8 == 0 and x % 8 == 0
            full = np.asarray(Image.open(src / r[who]).convert("RGB"))[y:y + mask.shape[0], x:x + mask.shape[1]]
            assert np.array_equal(full[mask], spliced[mask] if who == "donor" else control[mask])


def test_a_selection_of_flop_rows_keeps_the_ceiling_and_the_bandwidth():
    """`--only 'phase_a/quick/*'` (benchmarks/README's example) once gave empty % columns and no
    share targets: the rows' shares need the gemm and stream rows of the same run."""
    from camsim.bench.cli import _parser
    from camsim.bench.plan import build_plan

    names = [s.name for s in build_plan(_parser().parse_args(["--smoke", "--only", "phase_a/quick/*"]))]
    assert names[:2] == ["gemm", "stream"] and names[-1] == "gemm/end"
    assert {n for n in names[2:-1]} and all(n.startswith("phase_a/quick/") for n in names[2:-1])
    # rows without FLOPs get no yardstick they did not ask for
    assert [s.name for s in build_plan(_parser().parse_args(["--smoke", "--only", "data/decode"]))] == ["data/decode"]
