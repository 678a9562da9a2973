"""The main job end to end (tiny simulated catalogue): outputs, artefact reuse, camsim-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from camsim.phases import RunState, record_phase
from tests.conftest import compose_cfg, run_cli


@pytest.fixture(scope="module")
def shared_artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artefact cache for the module: the tiny catalogue is rendered once."""
    return tmp_path_factory.mktemp("artefacts")


def _run(app: str, workdir: Path, artefacts: Path, *overrides: str):
    res = run_cli(app, "debug=fast", f"paths.artefact_dir={artefacts}", *overrides, cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _run_dir(workdir: Path) -> Path:
    dirs = sorted(p.parent for p in (workdir / "outputs").rglob("run.json"))
    assert dirs, "no run dir with run.json"
    return dirs[-1]


def test_main_job_writes_every_output(workdir: Path, shared_artefacts: Path) -> None:
    res = _run("camsim-run", workdir, shared_artefacts)
    out = _run_dir(workdir)
    for name in ("metrics.json", "report.md", "matrix.png", "matrix.csv", "roc.png", "matrix_baseline.png",
                 "run.json", "scores.npz", ".hydra/config.yaml"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for system in ("eval", "baseline"):
        assert set(metrics[system]["acc"]) == {"overall", "known_known", "known_unknown", "unknown_unknown"}
        assert 0.0 <= metrics[system]["auc"] <= 1.0
    run = json.loads((out / "run.json").read_text())
    assert set(run["timings_s"]) >= {"data"} and len(run["timings_s"]) == 4
    assert len(run["data"]["split"]["a"]) == 4 and len(run["data"]["split"]["c"]) == 2
    # the network the evaluation scored, with or without ckpt= (camsim-export's model card reads it)
    assert run["eval_checkpoint"] == str((Path(run["phase_b"]["artefact"]) / "model.ckpt").resolve())
    report = (out / "report.md").read_text()
    assert "unknown" in report and "matrix.png" in report
    # the protocol says how many same-model pairs are two patches of one photo
    assert 0.0 < run["eval_same_photo_share"] < 1.0
    assert f"{100 * run['eval_same_photo_share']:.1f} % of them are two patches of one photo" in report
    # one concise line per stage, with its timing
    assert res.stderr.count("✔") + res.stdout.count("✔") >= 4


def test_run_json_names_each_phases_artefact_with_its_metrics_or_reused() -> None:
    st = RunState(OmegaConf.create({}), Path("out"), Path("art"))
    record_phase(st, "phase_a", Path("art/phase_a-1"), {"phase_a/test/acc": 0.5, "per_class_acc": {"m": 1.0}})
    record_phase(st, "phase_b", Path("art/phase_b-2"))
    assert st.summary == {"phase_a": {"artefact": str(Path("art/phase_a-1")), "phase_a/test/acc": 0.5},
                          "phase_b": {"artefact": str(Path("art/phase_b-2")), "reused": True}}


def test_a_phase_resumes_and_tests_from_checkpoints_read_weights_only(tmp_path: Path, monkeypatch) -> None:
    """trainer.fit / trainer.test get weights_only=True where Lightning takes it: a checkpoint
    resumed or tested from is never fully unpickled, whatever torch's own default."""
    import functools
    import inspect

    import lightning as L

    from camsim.phases import _train_phase

    calls = {}
    takes = {m for m in ("fit", "test") if "weights_only" in inspect.signature(getattr(L.Trainer, m)).parameters}

    @functools.wraps(L.Trainer.fit)  # with its signature, which camsim reads
    def fit(self, *args, **kwargs):
        calls["fit"] = kwargs
        (tmp_path / "art" / "phase_a-x.partial" / "last.ckpt").write_bytes(b"")

    @functools.wraps(L.Trainer.test)
    def test(self, *args, **kwargs):
        calls["test"] = kwargs
        return []

    monkeypatch.setattr(L.Trainer, "fit", fit)
    monkeypatch.setattr(L.Trainer, "test", test)
    cfg = compose_cfg(["logger=none", "callbacks=none", f"trainer.default_root_dir={tmp_path / 'out'}"])
    st = RunState(cfg, tmp_path / "out", tmp_path / "art")
    pcfg = OmegaConf.create({"monitor": "phase_a/val/acc", "max_epochs": 1, "resume": True})
    _train_phase(st, "phase_a", {"kind": "phase_a"}, tmp_path / "art" / "phase_a-x", L.LightningModule(), None, pcfg,
                 test=True)
    assert {m for m in ("fit", "test") if calls[m].get("weights_only") is True} == takes
    assert (tmp_path / "art" / "phase_a-x" / "metrics.json").is_file()


def test_second_job_differing_only_in_eta_reuses_both_phases(workdir: Path, shared_artefacts: Path) -> None:
    _run("camsim-run", workdir, shared_artefacts)  # trains (or reuses the first test's artefacts)
    res = _run("camsim-run", workdir, shared_artefacts, "eval.eta=0.3")
    log = res.stdout + res.stderr
    assert log.count("reusing") >= 2, log[-2000:]
    finished = [d for d in shared_artefacts.glob("phase_a-*") if not d.name.endswith(".partial")]
    assert len(finished) == 1, finished
    metrics = json.loads((_run_dir(workdir) / "metrics.json").read_text())
    assert metrics["eval"]["eta"] == pytest.approx(0.3)
    # the Self cells from two photos only: same networks, no pair of one photo, the protocol says so
    _run("camsim-run", workdir, shared_artefacts, "eval.self_pairs=two_photos")
    out = _run_dir(workdir)
    assert json.loads((out / "run.json").read_text())["eval_same_photo_share"] == 0.0
    assert "two test patches of two photos of the model" in (out / "report.md").read_text()


def test_a_phase_b_trained_by_a_job_at_another_eta_records_no_job_eta(workdir: Path, shared_artefacts: Path) -> None:
    """eval.eta is not in Phase B's key: every job of the key shares the network, so the η it
    records (its training accuracies', what `camsim-export` and eval.eta=auto take) must not be
    the one of whichever job happened to train it (a +sweep=thresholds run's first job)."""
    import torch

    before = set(shared_artefacts.glob("phase_b-*"))
    _run("camsim-run", workdir, shared_artefacts, "eval.eta=0.3", "phase_b.train_pairs=48")
    (new,) = [d for d in set(shared_artefacts.glob("phase_b-*")) - before if not d.name.endswith(".partial")]
    hp = torch.load(new / "model.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["eta"] == 0.5


def test_trainer_settings_that_change_what_a_phase_learns_are_in_its_key() -> None:
    """A smoke test (limit_train_batches) or another effective batch (devices) is another artefact;
    speed and logging settings are not, and a default trainer adds nothing to the key."""
    from camsim.phases import trainer_key

    assert trainer_key(compose_cfg([])) == {}
    assert trainer_key(compose_cfg(["trainer.log_every_n_steps=1", "trainer.accelerator=cpu",
                                    "trainer.profiler=simple", "trainer.num_sanity_val_steps=2"])) == {}
    assert trainer_key(compose_cfg(["trainer.limit_train_batches=5"])) == {"limit_train_batches": 5}
    assert trainer_key(compose_cfg(["trainer=ddp_cpu"])) == {"devices": 2}
    assert trainer_key(compose_cfg(["trainer.precision=bf16-mixed"])) == {"precision": "bf16-mixed"}


def test_a_smoke_test_run_is_not_reused_by_a_full_one(tmp_path: Path, shared_artefacts: Path) -> None:
    import shutil

    _run("camsim-run", tmp_path, shared_artefacts)  # trains (or reuses the first test's artefacts)
    arts = tmp_path / "artefacts"
    shutil.copytree(shared_artefacts, arts)
    before = {k: {d.name for d in arts.glob(f"{k}-*")} for k in ("phase_a", "phase_b")}
    _run("camsim-run", tmp_path, arts, "trainer.limit_train_batches=1")
    for kind, names in before.items():
        assert len({d.name for d in arts.glob(f"{kind}-*")} - names) == 1, kind  # trained anew, not reused


def test_phase_b_is_the_same_whether_phase_a_was_trained_or_reused(tmp_path: Path, shared_artefacts: Path) -> None:
    """Each phase seeds itself: Phase B trained right after Phase A in one process equals Phase B
    trained in a later process that reuses the cached Phase A (same artefact key, same weights)."""
    import shutil

    import torch

    arts = tmp_path / "artefacts"
    shutil.copytree(shared_artefacts, arts, ignore=shutil.ignore_patterns("phase_a-*", "phase_b-*"))
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    _run("camsim-train", tmp_path / "w1", arts)  # trains Phase A, then Phase B, in one process
    first = [d for d in arts.glob("phase_b-*") if not d.name.endswith(".partial")]
    assert len(first) == 1
    kept = tmp_path / "phase_b_first"
    shutil.move(str(first[0]), kept)
    res = _run("camsim-train", tmp_path / "w2", arts)  # reuses Phase A, trains Phase B again
    assert "reusing" in res.stdout + res.stderr
    again = arts / first[0].name
    assert again.is_dir()  # the same artefact key
    w1 = torch.load(kept / "model.ckpt", weights_only=True)["state_dict"]
    w2 = torch.load(again / "model.ckpt", weights_only=True)["state_dict"]
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k



def test_a_phase_a_trained_again_under_its_name_retires_the_heads_of_the_old_one(tmp_path: Path) -> None:
    """A deleted Phase A trained again comes back under its name with other weights: a head keyed by
    that name must not be reused on it (it was set aside, still loadable), and the new head records
    the validation figures of the epoch it keeps."""
    import shutil

    arts = tmp_path / "artefacts"  # its own (artefact keys hold the files' paths: a copy would retrain)
    _run("camsim-train", tmp_path, arts)
    old = [d for d in arts.glob("phase_b-*") if "." not in d.name]
    phase_a = [d for d in arts.glob("phase_a-*") if "." not in d.name]
    assert len(old) >= 1 and len(phase_a) == 1
    (arts / "phase_b-other").mkdir()  # a head of another Phase A: untouched
    (arts / "phase_b-other" / "key.json").write_text(json.dumps({"phase_a": "phase_a-elsewhere"}))
    shutil.rmtree(phase_a[0])
    res = _run("camsim-train", tmp_path, arts)
    assert "trained on an earlier" in res.stdout + res.stderr
    for d in old:
        assert (arts / f"{d.name}.stale-1" / "model.ckpt").is_file()
    assert (arts / "phase_b-other").is_dir()
    new = [d for d in arts.glob("phase_b-*") if "." not in d.name and d.name != "phase_b-other"]
    assert {d.name for d in new} >= {old[0].name}  # trained again under the same key, not reused
    metrics = json.loads((arts / old[0].name / "metrics.json").read_text())
    assert isinstance(metrics["best_epoch"], int) and "phase_b/val/auc" in metrics


def test_a_phase_keeps_the_epoch_its_monitor_calls_best() -> None:
    from camsim.phases import EpochMetrics, monitor_mode

    assert [monitor_mode(m) for m in ("phase_b/val/auc", "phase_a/val/acc", "phase_b/val/loss", "val/EER")] == \
        ["max", "max", "min", "min"]
    em = EpochMetrics()
    em.by_step = {10: {"epoch": 0, "phase_b/val/auc": 0.7, "phase_b/val/acc": 0.6},
                  20: {"epoch": 1, "phase_b/val/auc": 0.9, "phase_b/val/acc": 0.8},
                  30: {"epoch": 2, "phase_b/val/auc": 0.8, "phase_b/val/acc": 0.85}}
    assert em.kept("phase_b/val/auc", 0.9) == {"phase_b/val/auc": 0.9, "phase_b/val/acc": 0.8, "best_epoch": 1}
    assert em.kept("phase_b/val/auc", 0.95) == {"best_epoch": None} and em.kept("phase_b/val/auc", None) == {}
    again = EpochMetrics()  # a resumed phase: the validations before the resume come from the checkpoint
    again.load_state_dict(em.state_dict())
    assert again.kept("phase_b/val/auc", 0.9)["best_epoch"] == 1
    # a phase that keeps its last epoch (Phase A with phase_a.average_from) reports the last validation
    assert em.latest() == {"phase_b/val/auc": 0.8, "phase_b/val/acc": 0.85, "best_epoch": 2}
    assert EpochMetrics().latest() == {}


def test_phase_a_with_weight_averaging_keeps_its_last_epoch(workdir: Path, shared_artefacts: Path) -> None:
    """``phase_a.average_from``: the kept network is the last epoch's — the whole average — with the
    last validation's figures, whatever an earlier epoch scored; its own artefact (keyed)."""
    import torch

    _run("camsim-train", workdir, shared_artefacts, "task=phase_a", "phase_a.max_epochs=2", "phase_a.average_from=1",
         "seed=4243")
    run = json.loads((_run_dir(workdir) / "run.json").read_text())
    art = Path(run["phase_a"]["artefact"])
    assert json.loads((art / "key.json").read_text())["phase_a"]["average_from"] == 1
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1
    ckpt = torch.load(art / "model.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["weight_average"]["count"] > 0


def test_training_without_a_logger_keeps_the_default_callbacks(workdir: Path, shared_artefacts: Path) -> None:
    """logger=none with the default callbacks (progress bar, learning-rate monitor) trains: the
    monitor, which Lightning refuses without a logger, is left out instead of failing the run."""
    res = _run("camsim-train", workdir, shared_artefacts, "task=phase_a", "logger=none", "callbacks=default",
               "seed=4242")  # a seed of its own: Phase A is trained here, not reused
    assert "reusing" not in res.stdout + res.stderr


def test_camsim_eval_needs_a_trained_model(workdir: Path, shared_artefacts: Path) -> None:
    res = run_cli("camsim-eval", "debug=fast", f"paths.artefact_dir={shared_artefacts}", "seed=12345", cwd=workdir)
    assert res.returncode == 2
    assert "no trained artefact" in res.stderr and "camsim-train" in res.stderr


def test_camsim_eval_with_checkpoint_and_auto_eta(workdir: Path, shared_artefacts: Path) -> None:
    _run("camsim-train", workdir, shared_artefacts)
    ckpts = sorted(shared_artefacts.glob("phase_b-*/model.ckpt"))
    assert ckpts
    _run("camsim-eval", workdir, shared_artefacts, "task=pairs", f"ckpt={ckpts[0]}", "eval.eta=auto")
    metrics = json.loads((_run_dir(workdir) / "metrics.json").read_text())
    assert 0.0 < metrics["eval"]["eta"] < 1.0
    # the report and run.json name the network evaluated, and check this split against its record
    assert json.loads((_run_dir(workdir) / "run.json").read_text())["eval_checkpoint"] == str(ckpts[0].resolve())
    report = (_run_dir(workdir) / "report.md").read_text()
    assert f"`ckpt={ckpts[0].resolve()}`" in report and "consistent: every known model is in its set A" in report
    assert f"η = {metrics['eval']['eta']:.4g} chosen on Phase B's validation pairs (`eval.eta=auto`" in report
    assert "- Protocol: patch pairs of this config's test photos" in report   # ckpt=: its training photos unknown
    assert "does not record the photos it trained on" in report
    # patches cut otherwise than the network's recipe: one line naming the overrides that match it
    res = run_cli("camsim-eval", "debug=fast", f"paths.artefact_dir={shared_artefacts}", "task=pairs",
                  f"ckpt={ckpts[0]}", "patches.min_entropy=3.5", cwd=workdir)
    assert res.returncode == 2 and "add patches.min_entropy=" in res.stderr, res.stderr[-2000:]


def test_patches_must_be_cut_as_the_networks_recipe() -> None:
    from types import SimpleNamespace

    from camsim.pipeline import check_patches_against_network

    sim = SimpleNamespace(patch_size=128, patch_settings={"size": 128, "align": 8, "min_entropy": 4.0})
    check_patches_against_network(sim, SimpleNamespace(size=128, align=8, min_entropy=4.0))
    with pytest.raises(ValueError, match=r"\(size 128 vs 64, min_entropy 4 vs 2\): add patches.size=128 "
                                         r"patches.min_entropy=4$"):
        check_patches_against_network(sim, SimpleNamespace(size=64, align=8, min_entropy=2.0))
    old = SimpleNamespace(patch_size=64, patch_settings=None)  # a checkpoint that recorded no recipe: its size
    check_patches_against_network(old, SimpleNamespace(size=64, align=16, min_entropy=0.0))


def test_a_split_that_contradicts_the_networks_training_record_is_named() -> None:
    from types import SimpleNamespace

    from camsim.pipeline import split_against_network

    sets = {"a": ["Canon_A", "Nikon_B"], "b": ["Sony_C"]}
    assert split_against_network(sets, SimpleNamespace(c=["Fuji_D"], known=["canon_a"])) == []
    notes = split_against_network(sets, SimpleNamespace(c=["Fuji_D", "sony-c", "Nikon_B"], known=["Canon_A", "Fuji_D"]))
    assert notes[0].startswith("unknown model(s) of this split that the network trained on: sony-c (B), Nikon_B (A)")
    assert notes[1] == "known model(s) of this split not in the network's set A: Fuji_D"
    held = split_against_network({**sets, "b_val": ["Pentax_E"]}, SimpleNamespace(c=["pentax-e"], known=["Canon_A"]))
    assert held == ["unknown model(s) of this split whose pairs chose the network's checkpoint (its split.b_val): "
                    "pentax-e"]


def test_missing_checkpoint_is_a_clear_error(workdir: Path, shared_artefacts: Path) -> None:
    res = run_cli("camsim-eval", "debug=fast", f"paths.artefact_dir={shared_artefacts}",
                  f"ckpt={workdir / 'nope.ckpt'}", cwd=workdir)
    assert res.returncode == 2 and "nope.ckpt" in res.stderr and "not found" in res.stderr


def test_splicing_benchmark_simulated_and_real(workdir: Path, shared_artefacts: Path) -> None:
    """camsim-eval task=splicing: simulated splices from known/unknown cameras get a scenario and
    scores per mode; real forgeries (images/ + masks/<stem>_mask.png) and authentic photos (their
    controls) give a real-data detection AUC and false-alarm rate; an unreadable authentic file
    is listed as an error, never dropped; every pixel figure names its protocol."""
    import numpy as np
    from PIL import Image

    real = workdir / "forgeries"
    (real / "images").mkdir(parents=True)
    (real / "masks").mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (160, 224, 3), dtype=np.uint8)
    mask = np.zeros((160, 224), np.uint8)
    mask[40:120, 60:160] = 255
    Image.fromarray(img).save(real / "images" / "fake.png")
    Image.fromarray(mask).save(real / "masks" / "fake_mask.png")
    authentic = workdir / "authentic" / "some_camera"
    authentic.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (160, 224, 3), dtype=np.uint8)).save(authentic / "a.png")
    (authentic / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    _run("camsim-eval", workdir, shared_artefacts, "task=splicing", "splicing.num_images=4",
         "splicing.image_size=[160,224]", "splicing.examples=1", f"splicing.real_dir={real}",
         f"splicing.authentic_dir={authentic.parent}", "logger=csv")
    out = sorted(p.parent for p in (workdir / "outputs").rglob("splicing.json"))[-1]
    res = json.loads((out / "splicing.json").read_text())
    logged = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")  # the job's loggers get its figures
    assert "splicing/synthetic/graph/f1" in logged and "splicing/real/reference/auc" in logged
    assert res["protocols"]["fixed"]["threshold"] == "fixed" and res["protocols"]["best"]["inversion"] is True
    assert set(res["synthetic"]) == {"graph", "reference"}
    for m in res["synthetic"].values():
        assert m["n_spliced"] + m["n_controls"] + len(m["errors"]) == 4
        assert set(m["by_scenario"]) <= {"known_known", "known_unknown", "unknown_unknown"}
        assert sum(v["n"] for v in m["by_scenario"].values()) == m["n_spliced"]
        assert set(m["pixel"]) == {"fixed", "best"} and set(m["pixel"]["fixed"]) == {"per_image", "pooled"}
    assert set(res["real"]) == {"graph", "reference"}
    for m in res["real"].values():
        assert m["n_spliced"] == 1 and m["n_controls"] == 1 and m["auc"] is not None
        assert 0.0 <= m["f1"] <= m["f1_best"] <= 1.0 and m["false_alarm_rate"] in (0.0, 1.0)
        assert m["f1_gated"] == (m["f1"] if m["detection_rate"] else 0.0)  # the one forgery: its map only if called
        assert [e["image"] for e in m["errors"]] == ["some_camera__broken"]
    report = (out / "splicing.md").read_text()
    assert "Real images" in report and "broken.jpg" in report and (out / "examples" / "fake_graph.png").is_file()
    assert "fixed threshold, no inversion" in report and "best threshold, best of map/inverse" in report
    assert "decided at thresholds set on simulated images" in report and "splicing.calibration_dir=" in report
    assert "clipped highlights not excluded" in report and res["max_clipped"] is None
    import csv

    kinds = [r["kind"] for r in csv.DictReader(open(out / "splicing.csv"))]
    assert kinds.count("synthetic") == 2 * 4 and kinds.count("real") == 2 * 3
    cal = [r for r in csv.DictReader(open(out / "splicing.csv")) if r["kind"] == "calibration" and r["status"] == "ok"]
    for mode, c in res["calibration"].items():  # calibrated on simulated unspliced images, each row decided there
        mine = [r for r in cal if r["mode"] == mode]
        assert len(mine) == c["images"] and all(float(r["threshold"]) == c["threshold"] for r in mine)
        assert c["achieved_far"] == np.mean([float(r["score"]) >= c["threshold"] for r in mine]) <= c["target_far"]
        assert all(r["decision"] == str(float(r["score"]) >= c["threshold"]) for r in mine)
        assert all(r["message"].endswith(("at the calibrated threshold " + format(c["threshold"], ".4g") + ": "
                                          + ("spliced" if r["decision"] == "True" else "not spliced")))
                   for r in mine)
    # the same network through ckpt= with another draw of the sets: cameras it trained on are "unknown" here
    ckpt = sorted(shared_artefacts.glob("phase_b-*/model.ckpt"))[0]
    res = run_cli("camsim-eval", "debug=fast", f"paths.artefact_dir={shared_artefacts}", "task=splicing",
                  f"ckpt={ckpt}", "split.seed=5", "split.c_seed=5", "splicing.num_images=2",
                  "splicing.image_size=[160,224]", "splicing.examples=0", "splicing.calibration_images=2", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    out = sorted(p.parent for p in (workdir / "outputs").rglob("splicing.json"))[-1]
    notes = json.loads((out / "splicing.json").read_text())["notes"]
    assert notes and "that the network trained on" in notes[0]
    assert "**Note:** unknown model(s) of this split that the network trained on" in (out / "splicing.md").read_text()


def test_localize_and_the_splicing_benchmark_give_the_same_map(workdir: Path, shared_artefacts: Path) -> None:
    """One network, one image: camsim-localize's options and the benchmark's give the same mask."""
    import numpy as np
    from PIL import Image

    from camsim.config import to_plain
    from camsim.eval.splicing import localize_options
    from camsim.lit.phase_b import load_similarity
    from camsim.localize.run import Localizer
    from tests.conftest import compose_cfg

    _run("camsim-train", workdir, shared_artefacts)
    ckpt = sorted(shared_artefacts.glob("phase_b-*/model.ckpt"))[0]
    green = np.asarray(Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 264), dtype=np.uint8)))
    cli = compose_cfg([f"image={workdir}", f"ckpt={ckpt}"], config_name="localize")
    loc = Localizer(load_similarity(ckpt), batch=int(cli.batch), **to_plain(cli.feature_pass))
    for mode in ("graph", "reference"):
        cli.mode, cli.reference = mode, ("auto" if mode == "reference" else None)
        a = loc.run(green, cli)
        b = loc.run(green, localize_options(mode, None, None, loc.eta(cli)[0], None))
        assert np.array_equal(a.mask, b.mask) and a.score == b.score and a.threshold == b.threshold, mode
    # clipped highlights left out (max_clipped) the same way by both
    glare = np.random.default_rng(2).integers(0, 240, green.shape).astype(np.uint8)
    glare[:, :96][np.random.default_rng(3).random((200, 96)) < 0.2] = 255
    cli.mode, cli.reference, cli.max_clipped = "graph", None, 0.01
    a = loc.run(glare, cli)
    b = loc.run(glare, localize_options("graph", None, None, loc.eta(cli)[0], None, max_clipped=0.01))
    assert np.array_equal(a.decidable, b.decidable) and a.score == b.score and a.stats["n_clipped"] > 0


def test_rgb_network_trains_evaluates_localises_and_exports(workdir: Path, shared_artefacts: Path) -> None:
    """model.in_channels=3: RGB patches through the main job, transfer evaluation on a folder,
    camsim-localize (which refuses a green-only call) and the exported network."""
    import numpy as np
    from PIL import Image

    from camsim.lit.phase_b import load_similarity
    from camsim.localize.grid import LocalizationError
    from camsim.localize.run import Localizer
    from camsim.models.portable import load_exported

    _run("camsim-run", workdir, shared_artefacts, "model.in_channels=3")
    ckpt = max(shared_artefacts.glob("phase_b-*/model.ckpt"), key=lambda p: p.stat().st_mtime)
    sim = load_similarity(ckpt)
    assert sim.backbone.in_channels == 3
    rng = np.random.default_rng(0)
    photos = workdir / "photos"
    for m in range(3):
        (photos / f"cam{m}").mkdir(parents=True)
        for k in range(2):
            rgb = rng.integers(0, 256, (160, 192, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(photos / f"cam{m}" / f"p{k}.jpg", quality=90 - 5 * m)
    _run("camsim-eval", workdir, shared_artefacts, f"ckpt={ckpt}", "data=folder", f"data.root={photos}",
         "transfer.patches_per_image=4", "transfer.bootstrap.reps=20", "logger=csv")
    logged = next((workdir / "outputs").rglob("transfer.md")).parent / "csv" / "metrics.csv"
    assert "transfer/patch/other_photo/auc/value" in logged.read_text().splitlines()[0].split(",")
    assert "task: transfer" in (logged.parent / "hparams.yaml").read_text()  # task=auto, resolved (W&B job type)
    res = run_cli("camsim-eval", "debug=fast", f"paths.artefact_dir={shared_artefacts}", "task=pairs", f"ckpt={ckpt}",
                  cwd=workdir)  # this config cuts green patches
    assert res.returncode == 2 and "add model.in_channels=3" in res.stderr
    sets = [json.loads(p.read_text()) for p in shared_artefacts.glob("patches-*/info.json")]
    assert any(s.get("channels") == 3 and "cam0" == s["model"] for s in sets)
    for app, *args in (("camsim-localize", f"image={photos / 'cam1' / 'p0.jpg'}"), ("camsim-export", f"out={workdir / 'net'}")):
        res = run_cli(app, f"ckpt={ckpt}", *args, cwd=workdir)
        assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((workdir / "outputs").rglob("mask.png"))) == 1
    loc = Localizer(sim)
    with pytest.raises(LocalizationError, match="RGB"):
        loc.run(rng.integers(0, 256, (160, 192), dtype=np.uint8), None)
    net = load_exported(workdir / "net")
    x = rng.integers(0, 256, (2, 3, sim.patch_size, sim.patch_size), dtype=np.uint8)
    s = net.score(x, x[::-1].copy())
    assert s.shape == (2,) and ((s >= 0) & (s <= 1)).all()
    assert json.loads((workdir / "net" / "config.json").read_text())["input"]["channel"] == "rgb"
    card = (workdir / "net" / "README.md").read_text()  # the card's loading snippet cuts RGB patches
    assert "the RGB channels" in card and ".transpose(2, 0, 1)" in card and "[:, :, 1]" not in card
    # ... and runs: the card's snippet for RGB networks scores two photos
    import re
    import subprocess
    import sys

    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    code = code.replace('"net"', f'"{workdir / "net"}"').replace("PHOTO_1", str(photos / "cam0" / "p0.jpg")) \
        .replace("PHOTO_2", str(photos / "cam1" / "p1.jpg"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("S = "), run.stderr[-2000:]
