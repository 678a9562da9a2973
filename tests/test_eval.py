"""Evaluation maths (Fig. 2 matrix, scenarios, ROC, matched FAR, Bray–Curtis), plots and report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from camsim.eval import metrics as M
from camsim import plots as P
from camsim.eval.report import md_table, write_report

# A tiny hand-scored set: known = {A, B}, unknown = {C}; eta = 0.5 (same iff S > 0.5).
PAIRS = [
    ("A", "A", 0.90), ("A", "A", 0.40),              # self A: 1 of 2 right
    ("B", "B", 0.80), ("B", "B", 0.70),              # self B: 2 of 2
    ("C", "C", 0.30), ("C", "C", 0.60),              # self C: 1 of 2
    ("A", "B", 0.20), ("A", "B", 0.60), ("B", "A", 0.10),  # A|B: 2 of 3 said "different"
    ("A", "C", 0.50), ("A", "C", 0.55),              # A|C: 1 of 2 (0.50 is not > 0.5)
    ("C", "B", 0.05), ("C", "B", 0.45), ("C", "B", 0.95),  # B|C: 2 of 3
]
KNOWN = {"A", "B"}
ETA = 0.5


def _arrays(pairs=PAIRS):
    m1 = np.array([p[0] for p in pairs])
    m2 = np.array([p[1] for p in pairs])
    s = np.array([p[2] for p in pairs])
    return s, m1, m2


def _auc_bruteforce(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# ------------------------------------------------------------------ matrix, scenarios

def test_order_models_known_first_then_sorted():
    assert M.order_models(["C", "A", "B"], {"B", "A"}) == ["A", "B", "C"]
    assert M.order_models(["C", "B", "A", "B"], {"C"}) == ["C", "A", "B"]
    assert M.order_models(["Y", "X"], set()) == ["X", "Y"]


def test_pair_counts_and_matrix_match_hand_counts():
    s, m1, m2 = _arrays()
    right, total = M.pair_counts(s, m1, m2, ETA, ["A", "B", "C"])
    np.testing.assert_array_equal(total, [[2, 0, 0], [3, 2, 0], [2, 3, 2]])
    np.testing.assert_array_equal(right, [[1, 0, 0], [2, 2, 0], [1, 2, 1]])
    mat = M.pair_matrix(s, m1, m2, ETA, ["A", "B", "C"])
    expected = np.array([[1 / 2, np.nan, np.nan], [2 / 3, 1.0, np.nan], [1 / 2, 2 / 3, 1 / 2]])
    np.testing.assert_allclose(mat, expected, equal_nan=True)


def test_pair_matrix_other_order_and_unknown_model_raises():
    s, m1, m2 = _arrays()
    mat = M.pair_matrix(s, m1, m2, ETA, ["C", "A", "B"])
    assert mat[0, 0] == pytest.approx(0.5)        # self C
    assert mat[2, 0] == pytest.approx(2 / 3)      # B|C
    assert mat[1, 0] == pytest.approx(0.5)        # A|C
    assert np.isnan(mat[0, 2])
    with pytest.raises(ValueError, match="not in models"):
        M.pair_matrix(s, m1, m2, ETA, ["A", "B"])


def test_console_line_says_n_a_for_a_scenario_without_pairs():
    from camsim.eval.evaluate import scenario_line

    line = scenario_line({"eval/acc/overall": 0.5, "eval/acc/known_known": float("nan"), "eval/auc": 0.75})
    assert line.startswith("overall 50.0% · known–known n/a · known–unknown n/a") and line.endswith("AUC 0.750")


def test_pair_matrix_cell_without_pairs_is_nan():
    s, m1, m2 = _arrays()
    mat = M.pair_matrix(s, m1, m2, ETA, ["A", "B", "C", "D"])
    assert np.isnan(mat[3, 3]) and np.isnan(mat[3, 0])


def test_scenario_accuracies_hand_case():
    s, m1, m2 = _arrays()
    acc = M.scenario_accuracies(s, m1, m2, KNOWN, ETA)
    assert acc["known_known"] == pytest.approx(5 / 7)
    assert acc["known_unknown"] == pytest.approx(3 / 5)
    assert acc["unknown_unknown"] == pytest.approx(1 / 2)
    assert acc["overall"] == pytest.approx(9 / 14)
    assert acc["same_rate"] == pytest.approx(4 / 6)
    assert acc["diff_rate"] == pytest.approx(5 / 8)


def test_metrics_dict_values_hand_case():
    s, m1, m2 = _arrays()
    d = M.source_differentiation_metrics(s, m1, m2, KNOWN, ETA)
    assert d["acc/overall"] == pytest.approx(9 / 14)
    assert d["n_pairs"] == 14
    assert (d["n/known_known"], d["n/known_unknown"], d["n/unknown_unknown"]) == (7, 5, 2)
    assert d["far"] == pytest.approx(3 / 8)
    assert d["frr"] == pytest.approx(2 / 6)
    assert d["far_unknown"] == pytest.approx(2 / 5)  # 0.55 (A|C) and 0.95 (B|C)
    assert d["alarm_unknown"] == pytest.approx(1 - d["pairs/C|C"])  # C's same pairs called different
    assert d["pairs/A|B"] == pytest.approx(2 / 3)
    assert d["pairs/B|C"] == pytest.approx(2 / 3)
    assert d["pairs/C|C"] == pytest.approx(1 / 2)
    same = m1 == m2
    assert d["auc"] == pytest.approx(_auc_bruteforce(s[same], s[~same]))
    np.testing.assert_allclose(M.matrix_from_metrics(d, ["A", "B", "C"]),
                               M.pair_matrix(s, m1, m2, ETA, ["A", "B", "C"]), equal_nan=True)


def test_metrics_schema_is_stable():
    s, m1, m2 = _arrays()
    d = M.source_differentiation_metrics(s, m1, m2, KNOWN, ETA)
    expected = {
        "acc/overall", "acc/known_known", "acc/known_unknown", "acc/unknown_unknown",
        "n/known_known", "n/known_unknown", "n/unknown_unknown", "n_pairs",
        "auc", "eer", "far", "frr", "far_unknown", "alarm_unknown", "same_rate", "diff_rate", "eta",
        "pairs/A|A", "pairs/A|B", "pairs/B|B", "pairs/A|C", "pairs/B|C", "pairs/C|C",
    }
    assert set(d) == expected
    assert list(d) == M.metric_keys(["C", "B", "A"], KNOWN)
    # an evaluated model without pairs still has its keys (NaN)
    d4 = M.source_differentiation_metrics(s, m1, m2, KNOWN, ETA, models=["A", "B", "C", "D"])
    assert set(d4) == expected | {"pairs/A|D", "pairs/B|D", "pairs/C|D", "pairs/D|D"}
    assert math.isnan(d4["pairs/D|D"])
    assert isinstance(d["n_pairs"], int) and all(isinstance(d[k], float) for k in expected if not k.startswith("n"))
    json.dumps(M.nest(M.prefixed(d, "eval")))


def test_metrics_reject_separator_in_model_name():
    with pytest.raises(ValueError, match="model name"):
        M.source_differentiation_metrics([0.1, 0.9], ["a|b", "a|b"], ["c", "a|b"], {"c"}, 0.5)


def test_nest_flatten_round_trip():
    s, m1, m2 = _arrays()
    flat = {**M.prefixed(M.source_differentiation_metrics(s, m1, m2, KNOWN, ETA), "eval"),
            **M.prefixed(M.source_differentiation_metrics(s, m1, m2, KNOWN, 0.3), "baseline"),
            "phase_a/test/acc": 0.9}
    nested = M.nest(flat)
    assert nested["eval"]["acc"]["overall"] == flat["eval/acc/overall"]
    assert nested["eval"]["pairs"]["A|C"] == flat["eval/pairs/A|C"]
    assert M.flatten(nested) == flat
    with pytest.raises(ValueError):
        M.nest({"a": 1, "a/b": 2})


# ----------------------------------------------------------------------------- ROC

def test_roc_curve_points_follow_strict_rule():
    score = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    far, tpr, thr = M.roc_curve(score, same)
    assert (far[0], tpr[0], far[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.isneginf(thr[-1])
    for f, t, th in zip(far, tpr, thr):
        assert f == pytest.approx(np.mean(score[~same] > th))
        assert t == pytest.approx(np.mean(score[same] > th))


def test_auc_perfect_inverted_random():
    rng = np.random.default_rng(0)
    same = rng.random(2000) < 0.4
    perfect = same + 0.1 * rng.random(2000)
    assert M.roc_auc(perfect, same) == pytest.approx(1.0)
    assert M.roc_auc(-perfect, same) == pytest.approx(0.0)
    assert M.roc_auc(rng.random(2000), same) == pytest.approx(0.5, abs=0.05)
    assert M.roc_auc(np.full(2000, 0.5), same) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same"):
        M.roc_auc([0.1, 0.2], [True, True])


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 5, 60) / 4
    same = rng.random(60) < 0.5
    assert M.roc_auc(score, same) == pytest.approx(_auc_bruteforce(score[same], score[~same]))


def test_equal_error_rate_hand_cases():
    # exact crossing: S > 0.3 gives FAR = FRR = 1/3
    assert M.equal_error_rate([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0]) == pytest.approx(1 / 3)
    # interpolated: between (FAR 1/4, FRR 1/3) at S > 0.4 and (FAR 1/4, FRR 0) at S > 0.3
    assert M.equal_error_rate([0.9, 0.5, 0.4, 0.6, 0.3, 0.2, 0.1],
                              [1, 1, 1, 0, 0, 0, 0]) == pytest.approx(1 / 4)
    assert M.equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_far_frr_at_and_sweep():
    score = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert M.far_frr_at(score, same, 0.5) == pytest.approx((1 / 3, 1 / 3))
    rows = M.threshold_sweep(score, same, [0.0, 0.5, 0.95])
    assert rows[0] == pytest.approx((0.0, 0.5, 1.0, 0.0))
    assert rows[1] == pytest.approx((0.5, 4 / 6, 1 / 3, 1 / 3))
    assert rows[2] == pytest.approx((0.95, 0.5, 0.0, 1.0))
    assert len(M.threshold_sweep(score, same)) == 19


def test_choose_eta_rules():
    score = np.array([0.9, 0.8, 0.6, 0.55, 0.7, 0.2, 0.1])
    same = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)
    assert M.choose_eta(score, same, "max_acc") == pytest.approx(0.2)  # S > 0.2: 6 of 7 right
    # S > 0.7 and S > 0.2 are both 5 of 6 right here: the higher threshold wins
    assert M.choose_eta(score[[0, 1, 2, 4, 5, 6]], same[[0, 1, 2, 4, 5, 6]], "max_acc") == pytest.approx(0.7)
    # exact crossing at S > 0.3 (FAR = FRR = 1/3), see test_equal_error_rate_hand_cases
    assert M.choose_eta([0.9, 0.8, 0.3, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0, 0], "eer") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="rule"):
        M.choose_eta(score, same, "best")


# --------------------------------------------------------------- matched FAR threshold

@pytest.mark.parametrize("seed", range(6))
def test_threshold_at_far_within_one_sample(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 3000))
    d = rng.beta(2, 5, n)
    for target in [0.0, 0.045, float(rng.random()), 1.0]:
        t = M.threshold_at_far(d, target)
        assert abs(np.mean(d > t) - target) <= 1.0 / n + 1e-12


def test_threshold_at_far_with_ties_gives_nearest_achievable():
    d = np.array([0.5] * 10)
    assert np.mean(d > M.threshold_at_far(d, 0.3)) == 0.0
    assert np.mean(d > M.threshold_at_far(d, 0.7)) == 1.0
    with pytest.raises(ValueError, match="target_far"):
        M.threshold_at_far(d, 1.5)


def test_baseline_matches_the_papers_false_alarm_then_detection_rates_differ():
    """docs/method.md "Baseline": the threshold gives the baseline the proposed system's false-alarm
    rate on the unknown models — same pairs called "different" — and then the detection rates
    (different pairs called "different") are compared. Matching instead the different pairs
    called "same" fixed the mean detection rate of both systems: a zero-sum comparison."""
    rng = np.random.default_rng(3)
    models, known = ["k1", "k2", "u1", "u2", "u3"], {"k1", "k2"}
    m1 = np.repeat(models, 600)
    m2 = np.where(rng.random(len(m1)) < 0.4, m1, rng.choice(models, len(m1)))
    same = m1 == m2
    strong = np.clip(rng.normal(np.where(same, 0.75, 0.25), 0.12), 0, 1)  # separates well
    weak = np.clip(rng.normal(np.where(same, 0.6, 0.4), 0.2), 0, 1)       # separates poorly
    prop = M.source_differentiation_metrics(strong, m1, m2, known, 0.5)
    d = M.baseline_metrics(weak, m1, m2, known, target_alarm=prop["alarm_unknown"])
    unk = M.unknown_same_pairs(m1, m2, known)
    assert unk.sum() > 0 and not (unk & np.isin(m1, list(known))).any()
    assert abs(d["alarm_unknown"] - prop["alarm_unknown"]) <= 1.0 / unk.sum()
    assert np.mean(weak[unk] <= d["eta"]) == pytest.approx(d["alarm_unknown"])
    # at one false-alarm rate the better system detects more: its rates are not tied by the matching
    assert prop["far_unknown"] < d["far_unknown"] - 0.1
    assert set(d) == set(M.metric_keys(models, known))


def test_threshold_at_alarm_counts_same_pairs_called_different():
    s = np.array([0.1, 0.2, 0.2, 0.4, 0.9])
    assert np.mean(s <= M.threshold_at_alarm(s, 0.0)) == 0.0
    assert np.mean(s <= M.threshold_at_alarm(s, 0.6)) == pytest.approx(0.6)   # 0.1, 0.2, 0.2
    assert np.mean(s <= M.threshold_at_alarm(s, 0.5)) == pytest.approx(0.6)   # 0.4 and 0.6 achievable: nearest
    assert M.threshold_at_alarm(s, 1.0) == np.inf
    # of the thresholds with that rate, the highest: just below the next same-pair score, so a different
    # pair scored 0.39 is called "different" (the lowest, 0.2, called it "same")
    t = M.threshold_at_alarm(s, 0.6)
    assert 0.2 < t < 0.4 and 0.39 <= t and t == np.nextafter(0.4, -np.inf)
    with pytest.raises(ValueError, match="target"):
        M.threshold_at_alarm(s, -0.1)


# ------------------------------------------------------------------------ Bray–Curtis

def test_bray_curtis_hand_cases():
    u = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 0.0]])
    v = np.array([[0.1, 0.6, 0.3], [0.0, 1.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 0.0]])
    bc = M.bray_curtis(u, v)
    # (0.4 + 0.3 + 0.1) / (0.6 + 0.9 + 0.5) = 0.8 / 2 = 0.4
    np.testing.assert_allclose(bc, [0.4, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(M.bray_curtis_similarity(u, v), [0.6, 0.0, 1.0, 1.0])
    assert float(M.bray_curtis([1.0, 2.0], [3.0, 0.0])) == pytest.approx((2 + 2) / (4 + 2))
    with pytest.raises(ValueError, match="shapes"):
        M.bray_curtis(np.ones((2, 3)), np.ones((2, 4)))


def test_bray_curtis_matches_formula_on_random_softmax():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 50, 7))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    bc = M.bray_curtis(p[0], p[1])
    for i in range(50):
        assert bc[i] == pytest.approx(np.abs(p[0, i] - p[1, i]).sum() / np.abs(p[0, i] + p[1, i]).sum())
    assert ((bc >= 0) & (bc <= 1)).all()
    np.testing.assert_allclose(M.bray_curtis(p[0], p[0]), 0.0)


# ----------------------------------------------------------------- plots and report

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path):
    s, m1, m2 = _arrays()
    models = M.order_models(["A", "B", "C"], KNOWN)
    mat = M.pair_matrix(s, m1, m2, ETA, models)
    P.plot_pair_matrix(mat, models, KNOWN, tmp_path / "matrix.png", title="proposed")
    same = m1 == m2
    far, tpr, _ = M.roc_curve(s, same)
    P.plot_roc({"proposed": (far, tpr, M.roc_auc(s, same)), "baseline": (far[::2], tpr[::2], 0.5)},
               tmp_path / "roc.png", points={"proposed": M.far_frr_at(s, same, ETA)})
    P.plot_confusion(np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]]), ["a", "b", "c"], tmp_path / "confusion.png")
    P.plot_threshold_sweep(M.threshold_sweep(s, same), tmp_path / "sweep.png", eta=ETA)
    for name in ("matrix", "roc", "confusion", "sweep"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 2000, name
    csv_path = P.write_matrix_csv(mat, models, KNOWN, tmp_path / "matrix.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "model,set,A,B,C,self"
    assert lines[3] == "C,unknown,0.500000,0.666667,,0.500000"


def test_md_table():
    assert md_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| :--- | ---: |\n| 1 | x\\|y |"


def test_write_report_has_scenario_table(tmp_path):
    s, m1, m2 = _arrays()
    proposed = M.source_differentiation_metrics(s, m1, m2, KNOWN, ETA)
    bc = np.clip(s + 0.1, 0, 1)
    base = M.baseline_metrics(bc, m1, m2, KNOWN, proposed["far_unknown"])
    metrics = M.nest({**M.prefixed(proposed, "eval"), **M.prefixed(base, "baseline"), "phase_a/test/acc": 0.93})
    path = write_report(tmp_path, metrics, ["C", "A", "B"], KNOWN,
                        figures={"matrix": "matrix.png", "roc": "roc.png", "extra": "x.png"},
                        extra_sections=[("Command", "`camsim-run experiment=quick`")],
                        sweeps={"proposed": M.threshold_sweep(s, m1 == m2, [0.25, 0.5])})
    text = path.read_text()
    assert path == tmp_path / "report.md"
    for row in ("| overall | 14 | 64.3 % |", "| known vs known | 7 | 71.4 % |",
                "| known vs unknown | 5 | 60.0 % |", "| unknown vs unknown | 2 | 50.0 % |"):
        assert row in text, row
    assert "baseline (Bray–Curtis)" in text and "![pair matrix, proposed](matrix.png)" in text
    assert "| C | unknown | 50.0 | 66.7 | 50.0 |" in text
    assert "## Command" in text and "phase_a/test/acc" in text and "(x.png)" in text
    assert "| 0.25 |" in text
    with pytest.raises(ValueError, match="eval"):
        write_report(tmp_path, {"baseline": {}}, ["A"], KNOWN)


def test_splicing_inputs_fail_clearly(tmp_path: Path) -> None:
    """Authentic folders with masks, masks of another size, forgeries without a mask: one clear
    error each, naming the file."""
    import numpy as np
    from PIL import Image

    from camsim.eval.splicing import _read_mask, authentic_records, real_records

    auth = tmp_path / "authentic" / "cam"
    auth.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(auth / "a.png")
    (auth / "notes.txt").write_text("not an image")
    recs = authentic_records(auth.parent)
    assert [r["name"] for r in recs] == ["cam__a"] and not recs[0]["spliced"] and recs[0]["mask"] is None
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(auth / "a_mask.png")
    with pytest.raises(ValueError, match="holds ground-truth masks .*a_mask.png"):
        authentic_records(auth.parent)
    with pytest.raises(ValueError, match="mask m.png is 48x32, its image 40x30"):
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "m.png")
        _read_mask(tmp_path / "m.png", (30, 40))
    forged = tmp_path / "forged"
    (forged / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(forged / "images" / "x.png")
    with pytest.raises(FileNotFoundError, match="no ground-truth mask for .*x.png"):
        real_records(forged)


def test_an_unreadable_image_in_the_splicing_benchmark_is_a_row_naming_it_once(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from camsim.eval.splicing import ImageSet, _localise_all, authentic_records

    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "bad.jpg").write_bytes(b"")
    image_set = ImageSet("authentic", tmp_path, authentic_records(tmp_path))
    rows = _localise_all(None, OmegaConf.create({"modes": ["graph", "reference"]}), image_set, 0.5, None, None, {})
    assert [r["mode"] for r in rows] == ["graph", "reference"] and {r["status"] for r in rows} == {"error"}
    assert rows[0]["message"] == f"{tmp_path / 'cam' / 'bad.jpg'}: empty file (0 bytes)"


def test_real_forgeries_skip_files_that_are_not_images_and_an_unreadable_mask_is_named(tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from PIL import Image

    from camsim.eval.splicing import ImageSet, _localise_all, real_records

    forged = tmp_path / "forged"
    (forged / "images").mkdir(parents=True)
    (forged / "masks").mkdir()
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(forged / "images" / "x.png")
    (forged / "images" / "README.txt").write_text("where these came from")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48), np.uint8)).save(forged / "masks" / "x_mask.png")
    whole = (forged / "masks" / "x_mask.png").read_bytes()
    (forged / "masks" / "x_mask.png").write_bytes(whole[:len(whole) // 2])    # truncated: PIL's error names no file
    recs = real_records(forged)
    assert [r["name"] for r in recs] == ["x"]
    rows = _localise_all(None, OmegaConf.create({"modes": ["graph"]}), ImageSet("real", forged, recs), 0.5, None,
                         None, {})
    assert rows[0]["status"] == "error" and f"ground-truth mask {forged / 'masks' / 'x_mask.png'}" in rows[0]["message"]


class _FailingLoc:
    """Stands in for a Localizer: a perfect map of every image, raising ``errors[i]`` on the i-th call."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0

    def run(self, green, opts, colour=None):
        from types import SimpleNamespace

        self.calls += 1
        err = self.errors[self.calls - 1] if self.calls <= len(self.errors) else None
        if err is not None:
            raise err
        mask = np.zeros(green.shape, bool)
        return SimpleNamespace(decision=False, score=0.1 * self.calls, threshold=0.5, message="ok", mask=mask,
                               heatmap=mask.astype(float))


def test_an_image_that_fails_in_the_splicing_benchmark_or_its_calibration_is_a_row(tmp_path: Path, monkeypatch) -> None:
    """Out of memory (CPU or not), LinAlgError, ArpackError — in the engine or the pixel metrics —
    stop one image, not the benchmark (and not its calibration); any other RuntimeError stops it."""
    import scipy.sparse.linalg
    from omegaconf import OmegaConf
    from PIL import Image

    import camsim.eval.splicing as S

    for i in range(5):
        Image.fromarray(np.full((32, 48), 40 * i, np.uint8)).save(tmp_path / f"img{i}.png")
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / f"img{i}_mask.png")
    recs = [{"name": f"img{i}", "image": f"img{i}.png", "mask": f"img{i}_mask.png", "spliced": True}
            for i in range(5)]
    sc = OmegaConf.create({"modes": ["graph"], "stride": None, "examples": 0, "target_far": 0.0})
    cpu_oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9000000000 bytes")
    loc = _FailingLoc([MemoryError(), cpu_oom, np.linalg.LinAlgError("SVD did not converge"),
                       scipy.sparse.linalg.ArpackError(-9999)])
    rows = S._localise_all(loc, sc, S.ImageSet("real", tmp_path, recs), 0.5, None, None, {})
    assert [r["status"] for r in rows] == ["error"] * 4 + ["ok"] and rows[4]["f1_fixed"] == 0.0
    assert rows[0]["message"] == f"{tmp_path / 'img0.png'}: out of memory" and rows[1]["message"].endswith("out of memory")
    assert "LinAlgError: SVD did not converge" in rows[2]["message"] and "ArpackError" in rows[3]["message"]

    real = S.image_confusions

    def best_runs_out(pred, *args):                   # the best protocol's metrics (continuous map) run out
        if pred.dtype == float:
            raise MemoryError
        return real(pred, *args)

    monkeypatch.setattr(S, "image_confusions", best_runs_out)
    rows = S._localise_all(_FailingLoc([]), sc, S.ImageSet("real", tmp_path, recs[:1]), 0.5, None, None, {})
    assert rows[0]["status"] == "error" and rows[0]["message"].endswith("out of memory") and "f1_fixed" not in rows[0]
    monkeypatch.setattr(S, "image_confusions", real)

    controls = [{**r, "mask": None, "spliced": False} for r in recs]
    cal, cal_rows = S.calibrate(_FailingLoc([cpu_oom]), sc, S.ImageSet("synthetic", tmp_path, controls), 0.5, None)
    assert cal["graph"]["images"] == 4 and cal["graph"]["errors"] == 1
    assert [r["status"] for r in cal_rows] == ["error"] + ["ok"] * 4
    with pytest.raises(RuntimeError, match="expected scalar type"):
        S._localise_all(_FailingLoc([RuntimeError("expected scalar type Float")]), sc,
                        S.ImageSet("real", tmp_path, recs), 0.5, None, None, {})
