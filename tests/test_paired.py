"""Paired comparison of two transfer evaluations (``camsim-compare --paired``): both runs are
weighed by the same bootstrap draws of camera models and photos, so the interval of their
difference is not the photos' luck twice over."""

from __future__ import annotations

import json

import numpy as np
import pytest

from camsim.eval.bootstrap import SAME_MODEL, SAME_PHOTO, Contrast, bootstrap, pair_weights, resample_counts
from camsim.eval.paired import (TransferScores, across_pairs, left_out, markdown, markdown_across, paired_bootstrap,
                               read_scores)
from tests.conftest import run_cli
from tests.test_transfer import ckpts, folder_run, transfer_cfg  # noqa: F401 - fixtures


def test_a_run_against_itself_differs_by_nothing(folder_run):  # noqa: F811
    out = folder_run["out"]
    res = paired_bootstrap(read_scores(out), read_scores(out), reps=50)
    m = folder_run["metrics"]
    assert set(res) >= {"patch/same_photo", "patch/other_photo", "image/halves", "image/other_photo"}
    for name, figs in res.items():
        level, _, key = name.partition("/")
        assert figs["auc"]["a"] == pytest.approx(m[level][key]["auc"]["value"], abs=1e-12), name
        assert figs["auc"]["delta"] == 0.0 and figs["auc"]["lo"] == 0.0 and figs["auc"]["hi"] == 0.0
        assert figs["auc"]["p_b_better"] == 0.5  # every replicate a tie: neither run is better


def test_baseline_side_reads_the_runs_bray_curtis_scores(folder_run):  # noqa: F811
    out = folder_run["out"]
    res = paired_bootstrap(read_scores(f"{out}:baseline"), read_scores(out), reps=50)
    m = folder_run["metrics"]
    for name in ("patch/other_photo", "image/halves"):
        level, _, key = name.partition("/")
        assert res[name]["auc"]["a"] == pytest.approx(m[level][key]["baseline_auc"]["value"], abs=1e-12)
        assert res[name]["auc"]["b"] == pytest.approx(m[level][key]["auc"]["value"], abs=1e-12)
        r = res[name]["auc"]
        assert r["lo"] <= r["delta"] <= r["hi"]


def test_runs_with_other_pairs_on_the_same_photos_compare(folder_run, ckpts, tmp_path):  # noqa: F811
    from camsim.eval.transfer import run_transfer

    run_transfer(transfer_cfg(ckpts["b"], folder_run["root"], tmp_path, "transfer.patches_per_image=8"))
    a, b = read_scores(folder_run["out"]), read_scores(tmp_path / "run")
    assert not np.array_equal(a.contrasts["patch/other_photo"].score, b.contrasts["patch/other_photo"].score)
    res = paired_bootstrap(a, b, reps=40)
    assert res["patch/other_photo"]["auc"]["n"] > 0


def test_the_same_photos_under_another_spelling_of_the_root_pair_up(folder_run, ckpts, tmp_path):  # noqa: F811
    """A root given as ``x/../photos`` in one run and ``photos`` (or through a link) in the other:
    the same photos, so a run against its own rerun differs by nothing, not by the luck of two
    photo sets."""
    from camsim.eval.transfer import run_transfer

    root = folder_run["root"]
    (tmp_path / "x").mkdir()
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    for name, spelled in (("dots", tmp_path / "x" / ".." / ".." / root.parent.name / root.name),
                          ("link", tmp_path / "link")):
        run_transfer(transfer_cfg(ckpts["b"], spelled, tmp_path / f"out_{name}"))
        a, b = read_scores(folder_run["out"]), read_scores(tmp_path / f"out_{name}" / "run")
        res = paired_bootstrap(a, b, reps=30)
        for figs in res.values():
            assert figs["auc"]["lo"] == 0.0 and figs["auc"]["hi"] == 0.0, name
        assert "only in" not in markdown(a, b, res, 30, 0.95)


def test_runs_on_other_photos_are_refused_or_told(folder_run, ckpts, tmp_path):  # noqa: F811
    from camsim.eval.transfer import run_transfer
    from tests.test_transfer import make_folder

    other = make_folder(tmp_path / "other", {"Acme_Two": 3, "Bolt_Three": 3}, seed=5)
    run_transfer(transfer_cfg(ckpts["b"], other, tmp_path / "o"))
    with pytest.raises(ValueError, match="share no photo"):
        paired_bootstrap(read_scores(folder_run["out"]), read_scores(tmp_path / "o" / "run"), reps=10)
    # one photo fewer in B: compared, and the report says what is not shared
    fewer = tmp_path / "fewer"
    for model in folder_run["root"].iterdir():
        (fewer / model.name).mkdir(parents=True)
        for photo in sorted(model.iterdir())[: 2 if model.name == "Acme_Two" else None]:
            (fewer / model.name / photo.name).symlink_to(photo)
    run_transfer(transfer_cfg(ckpts["b"], fewer, tmp_path / "f"))
    a, b = read_scores(folder_run["out"]), read_scores(tmp_path / "f" / "run")
    text = markdown(a, b, paired_bootstrap(a, b, reps=10), 10, 0.95)
    assert "7 scored in both runs, 1 only in A, 0 only in B" in text


def _side(score: np.ndarray, positive: np.ndarray, photo_1: np.ndarray, photo_2: np.ndarray, link: np.ndarray,
          photo_model: np.ndarray, label: str) -> TransferScores:
    paths = np.array([f"p{k}.jpg" for k in range(len(photo_model))])
    return TransferScores(label, paths, np.array([f"m{m}" for m in photo_model]),
                          {"patch/other_photo": Contrast(score, positive, photo_1, photo_2, link)})


def test_pairing_cancels_the_photos_luck():
    """B = A plus a small, steady gain: the paired interval of B − A is far narrower than either
    run's own interval, lies above zero, and the unpaired intervals overlap."""
    rng = np.random.default_rng(0)
    models, photos_per = 12, 4
    photo_model = np.repeat(np.arange(models), photos_per)
    n = 6000
    p1 = rng.integers(0, len(photo_model), n)
    p2 = rng.integers(0, len(photo_model), n)
    same = photo_model[p1] == photo_model[p2]
    link = np.where(p1 == p2, SAME_PHOTO, np.where(same, SAME_MODEL, 2))
    # hard and easy models: the photos' luck moves a run's AUC a lot
    hard = rng.uniform(0.0, 1.5, models)[photo_model[p1]]
    base = rng.normal(0, 1, n) + same * (1.5 - hard)
    a = _side(base, same, p1, p2, link, photo_model, "A")
    b = _side(base + 0.25 * same, same, p1, p2, link, photo_model, "B")
    res = paired_bootstrap(a, b, reps=300, seed=1)["patch/other_photo"]["auc"]
    assert res["delta"] > 0 and res["lo"] > 0 and res["p_b_better"] == 1.0
    own = bootstrap({"a": a.contrasts["patch/other_photo"]}, {"a": 0.5}, photo_model, 300, 0.95, 1)["a"]["auc"]
    assert (res["hi"] - res["lo"]) < 0.5 * (own["hi"] - own["lo"])
    assert own["hi"] > res["b"]  # unpaired, A's interval reaches B's estimate: no verdict without pairing


def test_two_photo_pairs_weigh_one_in_expectation_whatever_the_models_size():
    """A replicate weighs a pair of two photos of one model as the point estimate does, on
    average, for a model of 2 photos as for one of 10 (without the n/(n − 1) factor: 0.5 and
    0.9 — intervals leaned towards models with many photos); photo counts stay whole draws."""
    photo_model = np.repeat([0, 1, 2], [2, 10, 3])
    first = np.array([0, 2, 12])                       # each model's first two photos form a pair
    p1, p2, link = first, first + 1, np.full(3, SAME_MODEL)
    rng = np.random.default_rng(0)
    weights, totals = [], []
    for _ in range(6000):
        total, per_copy = resample_counts(photo_model, rng)
        weights.append(pair_weights(link, p1, p2, total, per_copy))
        totals.append(total)
    np.testing.assert_allclose(np.mean(weights, axis=0), 1.0, atol=0.05)
    assert np.array_equal(np.round(totals), totals)
    np.testing.assert_allclose(np.mean(totals, axis=0), 1.0, atol=0.06)


def four_photos(photo_model: np.ndarray, label: str) -> TransferScores:
    """Two models of two photos each, four pairs; ``photo_model`` labels the photos."""
    p1, p2 = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])
    same = np.array([0, 0, 1, 1])[p1] == np.array([0, 0, 1, 1])[p2]
    return _side(np.arange(4.0), same, p1, p2, np.where(same, SAME_MODEL, 2), photo_model, label)


def test_a_figure_one_run_lacks_reads_as_a_dash():
    a = four_photos(np.array([0, 0, 1, 1]), "A")
    nan = float("nan")
    missing = {"a": nan, "b": 0.8, "delta": nan, "lo": nan, "hi": nan, "n": 0, "p_b_better": nan}
    text = markdown(a, a, {"patch/other_photo": {"auc": missing, "eer": missing}}, 10, 0.95)
    assert "nan" not in text and "| – | 0.800 | – |" in text
    assert "ties counted ½" in text


def test_photo_labelled_differently_is_refused():
    a, b = four_photos(np.array([0, 0, 1, 1]), "A"), four_photos(np.array([0, 0, 1, 0]), "B")
    with pytest.raises(ValueError, match=r"p3.jpg: camera model 'm1' in one run and 'm0' in the other"):
        paired_bootstrap(a, b, reps=5)


def test_quality_rows_drawn_with_other_limits_are_not_compared():
    """A JPEG-quality row is compared only where both runs drew it with the same limit: a band
    (``fine`` / ``coarse``) at one ``fine_jpeg_quality``, the far-apart row at one ``far_jpeg_gap``."""
    photo_model = np.array([0, 0, 1, 1])
    p1, p2 = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])
    same = photo_model[p1] == photo_model[p2]
    link = np.where(same, SAME_MODEL, 2)
    c = Contrast(np.arange(4.0), same, p1, p2, link)
    names = ("patch/other_photo", "patch/other_photo@fine", "patch/other_photo@far_q", "patch/other_photo@diff_q")
    side = _side(np.arange(4.0), same, p1, p2, link, photo_model, "A")

    def run(fine: int, far: int) -> TransferScores:
        return TransferScores(side.label, side.photo_path, side.photo_model, dict.fromkeys(names, c), fine, far)

    assert set(paired_bootstrap(run(97, 4), run(97, 4), reps=5)) == set(names)
    assert set(paired_bootstrap(run(97, 4), run(97, 6), reps=5)) == set(names) - {"patch/other_photo@far_q"}
    assert set(paired_bootstrap(run(97, 4), run(95, 4), reps=5)) == set(names) - {"patch/other_photo@fine"}
    # and the report says which rows it left out, and why
    a, b = run(97, 4), run(97, 6)
    del b.contrasts["patch/other_photo@diff_q"]
    text = markdown(a, b, paired_bootstrap(a, b, reps=5), 5, 0.95)
    assert "(image level: mean of the photo pair's patch-pair scores)" in text
    b.aggregate = "median"  # transfer.image.aggregate=median in one run: the protocol says so
    assert "A takes the mean, B the median of the photo pair's patch-pair scores" in \
        markdown(a, b, paired_bootstrap(a, b, reps=5), 5, 0.95)
    assert ("Not compared (2): patch, two photos of one model — the two photos ≥ 4 JPEG quality steps apart — drawn "
            "at another limit in each run (4 / 6); patch, two photos of one model — the two photos at unequal JPEG "
            "quality — only in A.") in text
    # across pairs of runs (seeds): a row drawn at another limit in some pair has no mean
    pairs = [(run(97, 4), run(97, 4)), (run(97, 6), run(97, 6))]
    results = [paired_bootstrap(x, y, reps=5) for x, y in pairs]
    summary = across_pairs(results, pairs)
    assert set(summary) == set(names) - {"patch/other_photo@far_q"}
    left = left_out(results, pairs)
    assert left == [("patch/other_photo@far_q", "drawn at another JPEG-quality limit in some run (4 / 6)")]
    assert ("Not summarised (1): patch, two photos of one model — the two photos ≥ 4 JPEG quality steps apart — "
            "drawn at another JPEG-quality limit in some run (4 / 6).") in markdown_across(pairs, summary, 5, 0.95, left)
    summary["patch/other_photo"]["auc"]["deltas"] = [0.0002, 0.0]  # counted better: shown so, not as +0.000
    assert "| +0.0002, +0.000 |" in markdown_across(pairs, summary, 5, 0.95)
    # a row one pair lacks is named too, not dropped silently
    del results[1]["patch/other_photo@diff_q"]
    assert ("patch/other_photo@diff_q", "compared in 1 of the 2 pairs only") in left_out(results, pairs)
    assert "patch/other_photo@diff_q" not in across_pairs(results, pairs)


def test_cli_writes_the_table_with_its_protocol(folder_run, tmp_path):  # noqa: F811
    out = folder_run["out"]
    r = run_cli("camsim-compare", "--paired", f"{out}:baseline", str(out), "--reps", "30", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "paired.md").read_text()
    assert "Protocol:" in text and "paired bootstrap" in text and "two photos of one model" in text
    assert read_scores(out).aggregate == "mean"  # read from the run's scores.npz
    record = json.loads((tmp_path / "paired.json").read_text())
    assert record["reps"] == 30 and "patch/other_photo" in record["contrasts"]
    # bad input: one line naming the file
    r = run_cli("camsim-compare", "--paired", str(tmp_path / "nowhere"), str(out))
    assert r.returncode == 2 and "nowhere: no scores.npz" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("camsim-compare")
    assert r.returncode == 2 and "either a multirun dir or --paired" in r.stderr


def _fig(a: float, b: float, lo: float, hi: float) -> dict:
    return {"a": a, "b": b, "delta": b - a, "lo": lo, "hi": hi, "p_b_better": 0.5, "n": 10}


def test_across_pairs_counts_each_seed_the_right_way_for_each_figure():
    """Three seeds: AUC up, up beyond its interval, down; EER (lower is better) the mirror. A
    contrast missing from one seed's comparison is left out of the summary, not averaged over two."""
    results = [
        {"patch/other_photo": {"auc": _fig(0.70, 0.75, -0.01, 0.10), "eer": _fig(0.30, 0.25, -0.10, 0.01)},
         "image/halves": {"auc": _fig(0.9, 0.9, 0, 0), "eer": _fig(0.1, 0.1, 0, 0)}},
        {"patch/other_photo": {"auc": _fig(0.70, 0.80, 0.02, 0.15), "eer": _fig(0.30, 0.20, -0.15, -0.02)}},
        {"patch/other_photo": {"auc": _fig(0.72, 0.70, -0.05, 0.01), "eer": _fig(0.28, 0.31, -0.01, float("nan"))}},
    ]
    s = across_pairs(results)
    assert set(s) == {"patch/other_photo"}
    auc, eer = s["patch/other_photo"]["auc"], s["patch/other_photo"]["eer"]
    assert auc["deltas"] == pytest.approx([0.05, 0.10, -0.02]) and auc["delta"] == pytest.approx(0.13 / 3)
    assert auc["a"] == pytest.approx(0.7066666, abs=1e-6) and auc["b"] == pytest.approx(0.75)
    assert (auc["better"], auc["worse"], auc["beyond_better"], auc["beyond_worse"], auc["n"]) == (2, 1, 1, 0, 3)
    # EER: B lower is better; the second seed's interval lies below 0 (better), a NaN bound counts neither way
    assert (eer["better"], eer["worse"], eer["beyond_better"], eer["beyond_worse"]) == (2, 1, 1, 0)
    assert (auc["with_interval"], eer["with_interval"]) == (3, 2)  # a NaN bound: that pair has no interval
    # a pair without the figure (NaN in one run) counts nowhere, and the means are over the others
    results[2]["patch/other_photo"]["auc"] = _fig(float("nan"), 0.70, float("nan"), float("nan"))
    auc = across_pairs(results)["patch/other_photo"]["auc"]
    assert auc["n"] == 2 and auc["a"] == pytest.approx(0.70) and auc["b"] == pytest.approx(0.775)
    assert auc["delta"] == pytest.approx(0.075) and (auc["better"], auc["worse"]) == (2, 0)
    with pytest.raises(ValueError, match="no comparison"):
        across_pairs([])


def test_two_runs_equal_but_for_rounding_tie_across_pairs():
    """One AUC summed in two orders differs in the 16th digit: a tie (Δ 0, neither better), not a
    "-1e-16" that counts as worse and prints as such."""
    same = {"patch/same_photo": {"auc": _fig(0.9, 0.9 - 1e-16, -0.01, 0.01), "eer": _fig(0.1, 0.1 + 1e-16, -0.01, 0.01)}}
    s = across_pairs([same, same])["patch/same_photo"]
    assert s["auc"]["deltas"] == [0.0, 0.0] and s["eer"]["deltas"] == [0.0, 0.0]
    assert (s["auc"]["better"], s["auc"]["worse"], s["eer"]["better"], s["eer"]["worse"]) == (0, 0, 0, 0)


def test_cli_compares_several_pairs_and_summarises_across_them(folder_run, tmp_path):  # noqa: F811
    """``--paired`` repeated, one pair per training seed: each pair's table, then the summary whose
    mean Δ is the mean of the pairs' Δ (here: the run against itself, and the run against its baseline)."""
    out = folder_run["out"]
    r = run_cli("camsim-compare", "--paired", str(out), str(out), "--paired", f"{out}:baseline", str(out),
                "--reps", "20", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "paired.md").read_text()
    assert "## Pair 1:" in text and "## Pair 2:" in text and "## Across the 2 pairs" in text
    assert "Protocol: the mean over the pairs" in text and "Δ AUC per pair" in text
    record = json.loads((tmp_path / "paired.json").read_text())
    assert len(record["pairs"]) == 2 and record["reps"] == 20
    one, two = (p["contrasts"]["patch/other_photo"]["auc"] for p in record["pairs"])
    summ = record["summary"]["patch/other_photo"]["auc"]
    assert one["delta"] == 0.0 and summ["deltas"] == [0.0, pytest.approx(two["delta"])]
    assert summ["delta"] == pytest.approx(two["delta"] / 2) and summ["n"] == 2
    assert summ["better"] + summ["worse"] == (0 if two["delta"] == 0 else 1)
    # a pair that cannot be compared is refused, named, before any pair's bootstrap runs
    z = dict(np.load(out / "scores.npz"))
    z["photo_path"] = np.array([f"/elsewhere/{k}.jpg" for k in range(len(z["photo_path"]))])
    (tmp_path / "other").mkdir()
    np.savez(tmp_path / "other" / "scores.npz", **z)
    r = run_cli("camsim-compare", "--paired", str(out), str(out), "--paired", str(out), str(tmp_path / "other"),
                "--reps", "20")
    assert r.returncode == 2 and f"pair 2 ({out}, {tmp_path / 'other'})" in r.stderr and "share no photo" in r.stderr
    assert "## Pair 1" not in r.stdout


def test_content_script_bins_a_runs_scores_by_the_patches_differences(folder_run, tmp_path):  # noqa: F811
    """benchmarks/content.py: a transfer run's same-photo and different-model patch pairs, cut again
    from their photos, binned by difference in brightness, texture and clipping — every pair in
    exactly one bin of each table —, then two-photo and different-model pairs by whether their
    photos share one quantisation table; a folder without scores is one line naming it."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "content.py"
    out = folder_run["out"]
    res = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    z = np.load(out / "scores.npz")
    patch = z["level"] == "patch"
    n_same, n_diff = int(((z["category"] == "same_photo") & patch).sum()), int(((z["category"] == "diff_model") & patch).sum())
    binned, by_table = res.stdout.split("| the two photos' luminance quantisation tables |")
    tables = binned.split("| difference in ")[1:]
    assert [t.split(" ")[0] for t in tables] == ["brightness", "texture", "clipped"]
    for t in tables:
        cells = re.findall(r"\| (\d+), [0-9.–]+, [0-9.–]+ \| (\d+), ", t)
        assert sum(int(a) for a, _ in cells) == n_same and sum(int(b) for _, b in cells) == n_diff
        assert "rank correlation of S with the difference" in t
    # two photos of one model and different models, by identical / different luminance table: each pair once
    n_other = int(((z["category"] == "other_photo") & patch).sum())
    cells = re.findall(r"\| (identical|different[^|]*) \| (\d+), [0-9.–]+, [0-9.–]+ \| (\d+), ", by_table)
    assert [c[0].split()[0] for c in cells] == ["identical", "different"]
    assert sum(int(c[1]) for c in cells) == n_other and sum(int(c[2]) for c in cells) == n_diff
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no scores.npz" in res.stderr


def test_content_script_measures_how_a_folders_patch_brightness_spreads(tmp_path):
    """benchmarks/content.py --light: a photo half in shadow spreads its patches' brightness over a
    wider span, with more pairs far apart, than a photo of one light; every patch in one bin; a
    folder without images is one line naming it."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(0)
    texture = rng.integers(-40, 41, (256, 256, 3))
    for name, light in (("even", np.full(256, 120)), ("shadow", np.where(np.arange(256) < 128, 40, 200))):
        d = tmp_path / name / "Cam_A"
        d.mkdir(parents=True)
        Image.fromarray(np.clip(light[None, :, None] + texture, 0, 255).astype(np.uint8)).save(d / "a.png")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "content.py"
    res = subprocess.run([sys.executable, str(script), "--light", str(tmp_path / "even"), str(tmp_path / "shadow")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {line.split(" | ")[0].strip("| ").rsplit("/", 1)[-1]: line.strip("|").split(" | ")
            for line in res.stdout.splitlines() if line.startswith(f"| {tmp_path}")}
    even, shadow = rows["even"], rows["shadow"]  # folder, photos, patches, bins, span, far, clipped
    assert even[1].strip() == "1" and abs(sum(map(float, even[3].split(" / "))) - 100) < 0.2
    assert float(shadow[4]) > float(even[4]) + 100 and float(shadow[5]) > 40 > float(even[5]), rows
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run([sys.executable, str(script), "--light", str(empty)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no images" in res.stderr


def test_content_script_patch_stats_of_a_photo_scored_on_one_side_only():
    """A photo whose patches appear only as the first (or second) patch of its pairs has none on the
    other side: its statistics there are an empty [0, 3], not an error."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("content", Path(__file__).resolve().parents[1] / "benchmarks" / "content.py")
    content = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(content)
    green = np.arange(128 * 128, dtype=np.uint8).reshape(128, 128)
    assert content.patch_stats(green, np.zeros((0, 2), np.int64), 64).shape == (0, 3)
    st = content.patch_stats(green, np.array([[0, 0], [64, 64]]), 64)
    assert st.shape == (2, 3) and st[0, 0] == pytest.approx(green[:64, :64].mean())
