"""Sweeps: every study composes; a multirun trains Phase A once; W&B runs per job; camsim-compare;
submitit launchers; DDP on CPU evaluates the same pairs as a single process."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from camsim.config import validate
from tests.conftest import REPO, compose_cfg, run_cli

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


def test_there_is_one_file_per_study() -> None:
    assert {"set_composition", "thresholds", "architectures", "feature_layers"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_and_its_parameters_exist(name: str) -> None:
    cfg = compose_cfg([f"+sweep={name}"])
    HydraConfig().set_config(cfg)
    validate(cfg)
    params = cfg.hydra.sweeper.params
    assert params, f"sweeps/{name}.yaml defines no hydra.sweeper.params"
    for key, values in params.items():
        for value in str(values).split(","):
            # every point of the grid composes into a valid config
            point = compose_cfg([f"+sweep={name}", f"{key}={value}"])
            HydraConfig().set_config(point)
            validate(point)


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("recipe", [["experiment=quick"], ["experiment=paper"],
                                    ["experiment=paper", "data=folder", "data.root=/data/cameras"]])
def test_a_sweep_keeps_the_recipes_data_source(name: str, recipe: list[str]) -> None:
    """A study varies what its grid names: it composes with every recipe and real folders (the
    README's SLURM example) and leaves the data source as the recipe has it — set_composition's
    catalogue of 30 models once replaced the quick recipe's 40 and the paper's 65, unannounced."""
    assert compose_cfg([f"+sweep={name}", *recipe]).data == compose_cfg(recipe).data


def test_every_logger_closes_with_the_jobs_outcome_even_when_one_fails(monkeypatch, caplog) -> None:
    """A failed job is "failed" in every logger (W&B: exit code 1, not "finished"); a logger whose
    close fails does not keep the others open (an open W&B run takes the next job's metrics)."""
    import sys
    import types

    from camsim.loggers import finish_loggers

    finished = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(finish=lambda exit_code=0: finished.append(exit_code)))
    closed = []

    class CSVLogger:
        def finalize(self, status):
            raise OSError("disk full")

    class WandbLogger:
        def finalize(self, status):
            closed.append(status)

    for succeeded, status, code in ((False, "failed", 1), (True, "success", 0)):
        closed.clear(), finished.clear()
        finish_loggers([CSVLogger(), WandbLogger()], succeeded)
        assert closed == [status] and finished == [code]
    assert "CSVLogger failed to close (OSError: disk full)" in caplog.text


def test_slurm_launcher_config_composes() -> None:
    res = run_cli("camsim-run", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert res.returncode == 0, res.stderr
    launcher = OmegaConf.create(res.stdout).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.mem_gb > 0


def _jobs(workdir: Path) -> list[Path]:
    return sorted(p.parent for p in (workdir / "outputs" / "multirun").rglob("metrics.json"))


@pytest.mark.slow
def test_two_job_multirun_trains_phase_a_once_and_logs_one_wandb_run_per_job(workdir: Path) -> None:
    res = run_cli("camsim-run", "-m", "debug=fast", "logger=wandb", "eval.eta=0.4,0.6", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _jobs(workdir)
    assert len(jobs) == 2
    art = workdir / "outputs" / "artefacts"
    assert len([p for p in art.glob("phase_a-*") if p.is_dir() and not p.name.endswith(".partial")]) == 1
    assert "reusing" in (jobs[1] / "run.log").read_text()
    for job in jobs:
        runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{job}: expected one finished W&B run"
        blob = runs[0].read_bytes()
        assert b"A4-B2-C2" in blob and b"layer=fc_a2.pre" in blob  # tags
        assert job.parent.name.encode() in blob  # grouped by sweep
    # camsim-compare: a table and a plot of the two jobs
    cmp = run_cli("camsim-compare", str(jobs[0].parent), cwd=workdir)
    assert cmp.returncode == 0, cmp.stderr
    assert "eval.eta" in cmp.stdout and "…" not in cmp.stdout  # piped: headers not cut
    rows = list(csv.DictReader(open(jobs[0].parent / "comparison.csv")))
    assert [r["eval.eta"] for r in rows] == ["0.4", "0.6"] and all(r["eval/auc"] for r in rows)
    assert (jobs[0].parent / "comparison.png").stat().st_size > 0


def test_a_sweep_job_with_a_user_error_does_not_stop_the_others(workdir: Path) -> None:
    """patches.size=60 is refused (not a multiple of the 8-px grid) in its one line; the sweep's other
    job still runs, and the sweep ends with the user error's exit code."""
    res = run_cli("camsim-run", "-m", "debug=fast", "patches.size=60,64", cwd=workdir)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "patches.size" in res.stderr and "a sweep job failed" in res.stderr
    assert len(_jobs(workdir)) == 1   # the second job ran to its metrics

@pytest.mark.slow
def test_a_job_runs_through_submitits_local_executor(workdir: Path) -> None:
    res = run_cli("camsim-run", "-m", "hydra/launcher=local", "debug=fast", "eval.eta=0.5", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _jobs(workdir)
    assert len(jobs) == 1 and (jobs[0] / "report.md").is_file()
    assert list((jobs[0].parent / ".submitit").rglob("*_result.pkl"))


def test_a_rank_above_0_follows_rank_0s_decision_on_a_phase(tmp_path: Path, monkeypatch) -> None:
    """Ranks started beside rank 0 (SLURM, torchrun) neither train a phase another job is
    training (rank 0 waits on its lock) nor skip one rank 0 trains: they wait for rank 0's marker
    (join its fit) or the finished phase (reuse it)."""
    import threading

    from camsim.phases import fit_marker, rank0_trains

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "1")
    final = tmp_path / "phase_a-x"
    work = final.with_name(final.name + ".partial")
    work.mkdir()
    work.with_name(f".{work.name}.fit-slurm-76--0").touch()  # another job's marker: not ours
    threading.Timer(0.3, lambda: final.mkdir()).start()  # another job publishes the phase
    assert rank0_trains(final, work, poll_s=0.05) is False
    final.rmdir()
    threading.Timer(0.3, lambda: fit_marker(work).touch()).start()  # our rank 0 will train it
    assert rank0_trains(final, work, poll_s=0.05) is True
    assert fit_marker(work) == tmp_path / ".phase_a-x.partial.fit-slurm-77--0"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_evaluates_the_same_pairs(workdir: Path) -> None:
    single = run_cli("camsim-run", "debug=fast", "hydra.run.dir=outputs/single", cwd=workdir)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("camsim-run", "debug=fast", "trainer=ddp_cpu", "hydra.run.dir=outputs/ddp",
                  "paths.artefact_dir=outputs/artefacts_ddp", cwd=workdir)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = np.load(workdir / "outputs/single/scores.npz")
    b = np.load(workdir / "outputs/ddp/scores.npz")
    for key in ("i", "j", "model_1", "model_2"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (workdir / "outputs/ddp/metrics.json").is_file()
    phases = list((workdir / "outputs/artefacts_ddp").glob("phase_*"))
    assert len(phases) == 2 and not list((workdir / "outputs/artefacts_ddp").glob(".*.fit-*"))  # markers removed
    assert "exists and is not empty" not in ddp.stderr + ddp.stdout  # a fresh phase's folder holds no marker


def test_compare_names_each_job_by_its_folder_and_what_it_lacks(tmp_path: Path) -> None:
    """Two sweeps under one root stay apart; a job without a figure says so; a figure no job has
    (a typo, or a transfer sweep's keys) is an error listing what the jobs do have."""
    import json

    import yaml

    from camsim.compare import load_rows

    def job(path: Path, overrides: list[str], metrics: dict | None) -> None:
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if metrics is not None:
            (path / "metrics.json").write_text(json.dumps(metrics))

    job(tmp_path / "a" / "0", ["eval.eta=0.3"], {"eval": {"auc": 0.9, "eta": 0.3}})
    job(tmp_path / "a" / "1", ["eval.eta=0.5"], {"eval": {"eta": 0.5}})
    job(tmp_path / "b" / "0", ["eval.eta=0.7"], None)
    swept, rows = load_rows(tmp_path, ["eval/auc", "eval/eta"])
    assert swept == ["eval.eta"]
    assert [(r["job"], r["status"]) for r in rows] == [("a/0", "ok"), ("a/1", "missing: eval/auc"),
                                                        ("b/0", "no metrics.json")]
    with pytest.raises(ValueError, match=r"no job .* has eval/acc/unknown-unknown; .* 2 figures, e.g. eval/auc, eval/eta"):
        load_rows(tmp_path, ["eval/acc/unknown-unknown"])
    # the default columns: those no job has (a sweep with eval.baseline=false) are left out, not an error
    from camsim.compare import write_comparison

    _, _, columns, rows = write_comparison(tmp_path, tmp_path / "cmp")
    assert "eval/auc" in columns and "baseline/acc/unknown_unknown" not in columns
    assert [r["status"] for r in rows] == ["ok", "missing: eval/auc", "no metrics.json"]


def test_compare_over_seeds_gives_each_setting_in_expectation_and_its_spread(tmp_path: Path, capsys) -> None:
    """``--over seed``: one row per setting of the other swept parameters — the mean, min and max of
    each metric over its seeds and how many jobs; a job lacking a figure is named, not averaged as 0;
    a parameter the jobs do not differ in is an error naming the swept ones."""
    import csv
    import json

    import yaml

    from camsim.cli.compare import main
    from camsim.compare import summarise, load_rows

    auc = {("null", 0): 0.80, ("null", 1): 0.90, ("null", 2): 0.70, ("5", 0): 0.85, ("5", 1): 0.75, ("5", 2): None}
    for k, ((avg, seed), value) in enumerate(auc.items()):
        job = tmp_path / str(k)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"phase_a.average_from={avg}", f"seed={seed}"]))
        (job / "metrics.json").write_text(json.dumps({"eval": {"auc": value, "eta": 0.5}}))
    swept, rows = load_rows(tmp_path, ["eval/auc"])
    columns, summary = summarise(rows, swept, ["eval/auc"], ["seed"])
    assert columns == ["phase_a.average_from", "n", "eval/auc", "eval/auc min", "eval/auc max", "status"]
    off, on = summary
    assert (off["phase_a.average_from"], off["n"], off["status"]) == ("null", 3, "ok")
    assert off["eval/auc"] == pytest.approx(0.8) and (off["eval/auc min"], off["eval/auc max"]) == (0.7, 0.9)
    assert on["eval/auc"] == pytest.approx(0.8) and on["status"] == "only eval/auc in 2 of 3"
    with pytest.raises(ValueError, match=r"--over split.seed: not a parameter the jobs differ in; swept: "
                                         r"phase_a.average_from, seed"):
        summarise(rows, swept, ["eval/auc"], ["split.seed"])

    main([str(tmp_path), "--metrics", "eval/auc", "--over", "seed"])
    printed = capsys.readouterr().out
    assert "mean [min, max] over seed" in printed and "0.800 [0.700, 0.900]" in printed
    with open(tmp_path / "comparison_over.csv") as fh:
        written = list(csv.DictReader(fh))
    assert [r["n"] for r in written] == ["3", "3"] and float(written[1]["eval/auc max"]) == 0.85
    with pytest.raises(SystemExit):
        main(["--paired", str(tmp_path), str(tmp_path), "--over", "seed"])
