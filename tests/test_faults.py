"""Faults a user meets (issue 19): simultaneous runs, killed and interrupted renders, debug=fast,
skipped files, long CPU runs, one-line errors, file modes, --help."""

from __future__ import annotations

import errno
import io
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camsim.artefacts import atomic_dir, atomic_write_json, cached_dir, clean_artefact_dir, file_lock, lock_path
from camsim.progress import parallel_iter
from tests.conftest import REPO, compose_cfg, run_cli

LINUX = sys.platform.startswith("linux")


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(cond, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- 1. run dirs


def test_runs_started_in_the_same_second_get_their_own_dirs() -> None:
    cfgs = [compose_cfg([]) for _ in range(4)]
    runs = [c.hydra.run.dir for c in cfgs]
    sweeps = [c.hydra.sweep.dir for c in cfgs]
    assert len(set(runs)) == len(runs), runs
    assert len(set(sweeps)) == len(sweeps), sweeps
    assert runs == sorted(runs)  # still sorts by start time
    assert all(Path(r).parent.name.count("-") == 2 for r in runs)  # outputs/<date>/<time>


# --------------------------------------------------------------------------- 3. killed render

_KILLED_BUILDER = """
import sys, time
from pathlib import Path
from camsim.artefacts import cached_dir
from camsim.progress import parallel_map

def build(tmp):
    (tmp / "started").write_text("1")
    parallel_map(time.sleep, [120] * 4, desc="sleeping", workers=2)

cached_dir(Path(sys.argv[1]), "synth", {"k": 1}, build)
"""


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_sigkilled_parallel_build_leaves_no_workers_and_the_next_call_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "artefacts"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILDER, str(root)], cwd=REPO,
                            env={**os.environ, "CAMSIM_QUIET": "1"})
    try:
        assert _wait_for(lambda: list(root.glob(".synth-*.tmp-*/started")) and len(_children(proc.pid)) >= 2)
        workers = _children(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert _wait_for(lambda: not any(_alive(w) for w in workers), timeout=30), "pool workers outlived their owner"
    assert list(root.glob(".synth-*.tmp-*"))  # the dead builder's temp folder is still there ...
    final = cached_dir(root, "synth", {"k": 1}, lambda tmp: (tmp / "ok").write_text("1"))
    assert (final / "ok").is_file()
    assert not list(root.glob(".synth-*.tmp-*"))  # ... until the next call


def test_empty_partial_folders_are_removed_unless_in_use(tmp_path: Path) -> None:
    empty, busy, resumable = (tmp_path / f"phase_a-{n}.partial" for n in ("aaa", "bbb", "ccc"))
    for d in (empty, busy, resumable):
        d.mkdir()
    (resumable / "last.ckpt").write_bytes(b"x")
    with file_lock(lock_path(tmp_path / "phase_a-bbb")):
        removed = clean_artefact_dir(tmp_path)
    assert removed == [empty] and not empty.exists() and busy.is_dir() and (resumable / "last.ckpt").is_file()


# --------------------------------------------------------------------------- 5. debug=fast


def test_debug_fast_keeps_the_experiments_data_and_split() -> None:
    from camsim.cli import shrink_for_debug

    cfg = compose_cfg(["experiment=cameras", "debug=fast"])
    assert cfg.data.root.endswith("shared/data/cameras") and "FolderSource" in cfg.data._target_
    assert list(cfg.split.a) == ["NIKON_D70", "LG_D605", "SAMSUNG_GT_I9300"]
    assert cfg.patches.min_entropy == 1.0  # the recipe's, checked on its own photos
    assert cfg.phase_a.max_epochs == 1 and cfg.patches.per_model.train_a == 40  # but shrunk
    assert shrink_for_debug(cfg, dict(cfg.hydra.runtime.choices), set()) == []


def test_debug_fast_shrinks_the_default_experiment_and_says_what_it_changed(caplog) -> None:
    from camsim.cli import shrink_for_debug

    cfg = compose_cfg(["debug=fast"])
    with caplog.at_level(logging.INFO, logger="camsim"):
        changes = shrink_for_debug(cfg, dict(cfg.hydra.runtime.choices), set())
    assert cfg.data.num_models == 8 and cfg.data.images_per_model == 6 and cfg.split.a == 4 and cfg.split.c == 2
    assert cfg.data.seed == 0 and "SynthSource" in cfg.data._target_  # still the experiment's simulator
    assert any(c.startswith("data.num_models: 40 → 8") for c in changes)
    assert "debug=fast changed" in caplog.text
    kept = compose_cfg(["debug=fast", "data.num_models=12"])
    shrink_for_debug(kept, dict(kept.hydra.runtime.choices), {"data.num_models"})
    assert kept.data.num_models == 12  # a value given on the command line wins


# --------------------------------------------------------------------------- 6. skipped files


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())


def _photo_folder(root: Path) -> Path:
    for m, model in enumerate(("CamA", "CamB")):
        d = root / model
        d.mkdir(parents=True)
        _photo(d / "1.jpg", m)
        _photo(d / "2.jpg", m + 10)
    (root / "CamA" / "empty.jpg").write_bytes(b"")  # unreadable: counted as an image before
    (root / "CamA" / "notes.txt").write_text("x")  # listing-level skip
    os.symlink(root / "nowhere.jpg", root / "CamB" / "broken.jpg")  # listing-level skip
    return root


def test_every_skipped_file_counted_once_the_same_in_describe_and_in_the_patch_summary(tmp_path: Path) -> None:
    from camsim.data.sources import FolderSource
    from camsim.data.store import PatchRequest, PatchSettings, PatchStore, summarise

    root = _photo_folder(tmp_path / "photos")
    index = FolderSource(root).index()
    described = index.probe()
    assert described.counts() == {"CamA": 2, "CamB": 2}  # the empty file is not an image
    names = sorted(p.name for p, _ in described.skipped)
    assert names == ["broken.jpg", "empty.jpg", "notes.txt"]
    store = PatchStore(tmp_path / "artefacts", PatchSettings.from_config(size=64, min_entropy=0.0), workers=0)
    sets = store.get([PatchRequest(m, "train", tuple(ps), 4) for m, ps in index.models.items()])
    summary = summarise(sets.values(), index.skipped)
    files = [Path(s["file"]).name for s in summary["skipped_files"]]
    assert sorted(files) == names  # the same files, each once, each with its reason
    assert all(s["reason"] for s in summary["skipped_files"])
    res = run_cli("camsim-data", "describe", "data=folder", f"data.root={root}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("skipped /")]
    assert len(lines) == 3 and all(any(n in ln for ln in lines) for n in names), out
    # two photos each: too few for a training split, which describe says before a run stops on it
    assert "2 model(s) with fewer than 3 images (CamA (2), CamB (2))" in out and "data.min_images=3" in out, out


# --------------------------------------------------------------------------- 8. long CPU runs, Ctrl-C


def test_paper_recipe_on_a_cpu_is_refused_naming_the_override() -> None:
    from camsim.guard import SlowRunRefused, check_run, estimate_seconds

    cfg = compose_cfg(["experiment=paper"])
    with pytest.raises(SlowRunRefused) as err:
        check_run(cfg, has_gpu=False)
    assert "allow_slow_cpu=true" in str(err.value) and "days" in str(err.value)
    assert "already trained under paths.artefact_dir" in str(err.value)  # a rerun of a trained job: the way
    assert check_run(cfg, has_gpu=True) is None  # on a GPU it starts
    allowed = compose_cfg(["experiment=paper", "allow_slow_cpu=true"])
    assert check_run(allowed, has_gpu=False).total > 86400
    quick = compose_cfg([])
    assert estimate_seconds(quick).total < estimate_seconds(cfg).total / 1000
    assert check_run(quick, has_gpu=False) is not None  # minutes: not refused
    tuned = compose_cfg(["phase_b.finetune.enabled=true"])  # patch pairs through the backbone: counted
    assert estimate_seconds(tuned).phase_b > estimate_seconds(quick).phase_b + 10
    assert "fine-tuned end to end" in estimate_seconds(tuned).detail


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_training_on_a_cpu_without_bf16_units_is_warned_about(has_bf16, monkeypatch, caplog) -> None:
    import camsim.guard as guard

    monkeypatch.setattr(guard, "cpu_has_bf16", lambda: has_bf16)
    with caplog.at_level(logging.WARNING, logger="camsim"):
        guard.check_run(compose_cfg(["trainer.precision=bf16-mixed"]), has_gpu=False)
        guard.check_run(compose_cfg([]), has_gpu=False)
    warned = [r for r in caplog.records if "without bf16 units" in r.getMessage()]
    assert len(warned) == (0 if has_bf16 else 1)


@pytest.mark.slow
def test_paper_recipe_refused_from_the_command_line_in_one_line(tmp_path: Path) -> None:
    res = run_cli("camsim-run", "experiment=paper", "trainer=cpu", f"paths.artefact_dir={tmp_path}/a", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "allow_slow_cpu=true" in res.stderr and not list(tmp_path.glob("a/synth-*"))  # nothing rendered


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_ctrl_c_during_the_render_stops_cleanly_in_one_line(tmp_path: Path) -> None:
    art = tmp_path / "artefacts"
    exe = Path(sys.executable).parent / "camsim-data"
    proc = subprocess.Popen([str(exe), "describe", "data=synth", "data.workers=2", f"paths.artefact_dir={art}"],
                            cwd=tmp_path, env={**os.environ, "CAMSIM_QUIET": "1"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # rendering: the catalogue's folder is there, its images are being written by the workers
        assert _wait_for(lambda: list(art.glob("synth-*/*/*.jpg")) and len(_children(proc.pid)) >= 2, timeout=120)
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.startswith("camsim: interrupted") and len(err.strip().splitlines()) == 1, err
    assert _wait_for(lambda: not any(_alive(w) for w in workers), timeout=10)
    assert not [p for p in art.rglob("*") if ".tmp-" in p.name]  # no half-written image or folder left


def _write_slowly(job: tuple[str, str, str]) -> str:
    """Pool task: "wait" returns once the other task's temp folder exists; "hold" writes into an
    atomic folder and never finishes."""
    kind, final, marker = job
    if kind == "wait":
        _wait_for(lambda: Path(marker).exists(), timeout=60)
        return kind
    with atomic_dir(Path(final)) as tmp:
        (tmp / "half.jpg").write_bytes(b"\xff\xd8")
        Path(marker).touch()
        time.sleep(120)
    return kind


def test_a_pool_stopped_mid_write_leaves_no_temp(tmp_path: Path) -> None:
    # what Ctrl-C in the owner does to a render: the pool is stopped while a worker is inside an
    # atomic write; the worker unwinds it (its temp goes) before it exits
    final, marker = tmp_path / "out" / "img", tmp_path / "started"
    jobs = [("wait", str(final), str(marker)), ("hold", str(final), str(marker))]
    results = parallel_iter(_write_slowly, jobs, desc="writing", workers=2)
    t0 = time.monotonic()
    assert next(results) == "wait"  # the other worker is inside its write now
    results.close()  # the consumer stops: the pool is stopped
    assert time.monotonic() - t0 < 30
    assert not final.exists() and not [p.name for p in final.parent.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- 9. one-line errors


def test_missing_mandatory_value_is_one_line(tmp_path: Path) -> None:
    res = run_cli("camsim-data", "describe", "data=folder", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "data.root is not set" in res.stderr and "data.root=<value>" in res.stderr


def _app(task, tmp_path: Path, monkeypatch, *args: str):
    """Run ``task`` under :func:`camsim.cli.hydra_app` in-process, as a user's command would."""
    from camsim.cli import hydra_app

    main = hydra_app("data")(task)
    monkeypatch.setattr(sys, "argv", ["camsim-test", f"hydra.run.dir={tmp_path}/run", *args])
    with pytest.raises(SystemExit) as ex:
        main()
    return ex.value.code


def test_disk_full_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch, capsys) -> None:
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, fd: int):
            self.fh = real_fdopen(fd, "wb")

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.fh.close()
            super().close()

    out = tmp_path / "out"

    def task(cfg):
        monkeypatch.setattr("camsim.artefacts.os.fdopen", lambda fd, mode: Full(fd))
        atomic_write_json(out / "metrics.json", {"a": 1})

    code = _app(task, tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code != 0 and "disk full" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"disk full ({out / 'metrics.json'})" in err  # which disk: the file it was writing
    assert not list(out.iterdir())  # the temp file is gone too
    monkeypatch.undo()
    monkeypatch.setenv("CAMSIM_DEBUG", "1")  # the switch shows the real error

    def task2(cfg):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from camsim.cli import hydra_app

    monkeypatch.setattr(sys, "argv", ["camsim-test", f"hydra.run.dir={tmp_path}/run2"])
    with pytest.raises(OSError):
        hydra_app("data")(task2)()


def test_unwritable_run_dir_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def refuse(self):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.baseFilename)

    monkeypatch.setattr(logging.FileHandler, "_open", refuse)
    code = _app(lambda cfg: None, tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "hydra.run.dir" in err and "Permission denied" in err


def test_gpu_trainer_without_a_gpu_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from camsim.cli import explain
    from camsim.guard import check_run

    def task(cfg):
        raise MisconfigurationException("CUDAAccelerator can not run on your system since the accelerator is not "
                                        "available. The following accelerator(s) is available and can be passed "
                                        "into `accelerator` argument of `Trainer`: ['cpu'].")

    code = _app(task, tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "trainer=cpu" in err
    with pytest.raises(ValueError, match="trainer=cpu"):
        check_run(compose_cfg(["trainer=gpu"]), has_gpu=False)  # caught before any data work
    assert explain(OSError(errno.ENOSPC, "No space left on device", "/x/last.ckpt"))[0].startswith("disk full (/x")
    # camsim's own message about a folder it cannot read is the one shown (not "cannot write")
    try:
        try:
            raise PermissionError(errno.EACCES, "Permission denied", "/photos")
        except PermissionError as inner:
            raise ValueError("data.root: /photos cannot be read (Permission denied)") from inner
    except ValueError as err:
        assert explain(err) == ("data.root: /photos cannot be read (Permission denied)", 2)
    assert explain(PermissionError(errno.EACCES, "Permission denied", "/out"))[0].startswith("cannot write (/out)")


def test_usage_errors_of_entry_points_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    res = run_cli("camsim-data", "describ", cwd=tmp_path)
    assert res.returncode == 2 and "usage: camsim-data" in res.stderr
    res = run_cli("camsim-eval", "model=out/my-modl", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no such folder" in res.stderr


# --------------------------------------------------------------------------- 10. file modes


def test_written_files_and_artefact_folders_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "patches-x") as tmp:
            (tmp / "f").write_text("1")
        built = cached_dir(tmp_path, "synth", {"k": 2}, lambda tmp: None)
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "patches-x").stat().st_mode & 0o777 == 0o755
    assert built.stat().st_mode & 0o777 == 0o755 and (built / "key.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- 11. --help


@pytest.mark.parametrize("module,prog", [("run", "camsim-run"), ("train", "camsim-train"), ("data", "camsim-data"),
                                         ("eval", "camsim-eval"), ("localize", "camsim-localize")])
def test_help_says_what_the_command_does_with_an_example(module: str, prog: str, monkeypatch, capsys) -> None:
    import importlib

    mod = importlib.import_module(f"camsim.cli.{module}")
    monkeypatch.setattr(sys, "argv", [prog, "--help"])
    with pytest.raises(SystemExit) as ex:
        mod.main()
    out = capsys.readouterr().out
    assert ex.value.code == 0
    assert out.startswith(f"{prog}:") and f"{prog} " in out.split("\n", 2)[2]  # what it does, then examples
    assert "schema" not in out and "$CONFIG" not in out and len(out.splitlines()) < 80
    if module in ("run", "train", "data"):
        assert "examples:" in out and "experiment:" in out
    if module == "localize":
        assert "experiment" not in out and "split:" not in out  # only the groups it uses


# ---------------------------------------------------------------------- item 2: checkpoints


def test_resume_skips_a_truncated_checkpoint_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A last.ckpt cut short by a full disk is not resumed from: the warning names it and the
    previous good checkpoint (best.ckpt) is taken; with none left the phase starts afresh."""
    import torch

    from camsim.lit.checkpoints import resume_from

    good = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "optimizer_states": [], "epoch": 2}, good)
    last = tmp_path / "last.ckpt"
    last.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with caplog.at_level(logging.WARNING, logger="camsim"):
        assert resume_from([last, good]) == good
    assert any("last.ckpt" in r.getMessage() and "trying the next" in r.getMessage() for r in caplog.records)
    good.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="camsim"):
        assert resume_from([last, good]) is None
    assert any("starting this phase afresh" in r.getMessage() for r in caplog.records)
    caplog.clear()
    good.unlink()  # the last one unreadable and no best.ckpt: nothing next to try
    with caplog.at_level(logging.WARNING, logger="camsim"):
        assert resume_from([last, good]) is None
    assert [r.getMessage() for r in caplog.records if "last.ckpt" in r.getMessage()][0].endswith("afresh")


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails half-way (disk full) leaves the previous checkpoint whole and no temp file."""
    import torch

    from camsim.lit.checkpoints import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_.save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()

    def full_disk(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        io_.save_checkpoint({"epoch": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# ---------------------------------------------------------------------- item 4: empty class


def test_camera_model_without_usable_images_is_an_error_naming_it(tmp_path: Path) -> None:

    from camsim.data.datamodules import CameraData
    from camsim.data.sources import FolderSource

    rng = np.random.default_rng(0)
    for m in ("cam0", "cam1", "cam2", "cam3"):
        d = tmp_path / "photos" / m
        d.mkdir(parents=True)
        for k in range(4):
            if m == "cam2":
                (d / f"{k}.jpg").write_bytes(b"")  # zero bytes: every file unusable
            else:
                Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(d / f"{k}.png")
    cfg = compose_cfg(["split.a=[cam0,cam2]", "split.b=[cam1]", "split.c=[cam3]", "split.known=[cam0]",
                       "patches.size=64", "patches.workers=0"])
    data = CameraData(FolderSource(tmp_path / "photos"), cfg.split, cfg.patches, tmp_path / "art")
    with pytest.raises(ValueError, match="camera model 'cam2' has no usable 64x64 patch"):
        data.prepare(["phase_a"])


def _model_folders(root: Path, counts: dict[str, int], flat: tuple[str, ...] = ()) -> Path:
    """``root/<model>/<k>.png``: ``counts[model]`` textured 192-px images (for ``flat`` models, each
    a flat grey of its own: no usable patch, and no two files alike)."""
    rng = np.random.default_rng(0)
    for i, (m, n) in enumerate(counts.items()):
        (root / m).mkdir(parents=True)
        for k in range(n):
            px = np.full((192, 192), 20 + 10 * i + k, np.uint8) if m in flat \
                else rng.integers(0, 256, (192, 192), dtype=np.uint8)
            Image.fromarray(px).save(root / m / f"{k}.png")
    return root


def test_models_with_too_few_images_are_named_together_with_the_remedy(tmp_path: Path) -> None:
    """A public folder often holds several models with one or two photos: one error names them
    all with their counts, and data.min_images=3 (its remedy) leaves them out."""
    from camsim.data.datamodules import CameraData
    from camsim.data.sources import FolderSource

    root = _model_folders(tmp_path / "photos", {"cam0": 4, "cam1": 2, "cam2": 4, "cam3": 1, "cam4": 4})
    cfg = compose_cfg(["split.a=2", "split.b=2", "split.c=1", "split.known=1", "patches.workers=0"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    with pytest.raises(ValueError, match=r"2 camera model\(s\) .*fewer than 3 images.*cam1 \(2\), cam3 \(1\)"
                                         r".*data\.min_images=3"):
        data.images
    cfg = compose_cfg(["split.a=1", "split.b=1", "split.c=1", "split.known=1", "patches.workers=0"])
    kept = CameraData(FolderSource(root, min_images=3), cfg.split, cfg.patches, tmp_path / "art")
    assert sorted(kept.images) == ["cam0", "cam2", "cam4"]


def test_every_model_without_usable_patches_is_named_at_once(tmp_path: Path) -> None:
    from camsim.data.datamodules import CameraData
    from camsim.data.sources import FolderSource

    root = _model_folders(tmp_path / "photos", {f"cam{i}": 4 for i in range(5)}, flat=("cam1", "cam2"))
    cfg = compose_cfg(["split.a=[cam0,cam1,cam2]", "split.b=[cam3]", "split.c=[cam4]", "split.known=[cam0]",
                       "patches.size=64", "patches.workers=0"])
    data = CameraData(FolderSource(root), cfg.split, cfg.patches, tmp_path / "art")
    with pytest.raises(ValueError) as err:
        data.prepare(["phase_a"])
    msg = str(err.value)
    assert msg.startswith("6 patch sets are too small")  # cam1 and cam2, each in train / val / test
    assert all(f"camera model {m!r} has no usable 64x64 patch in its {sub} images" in msg
               for m in ("cam1", "cam2") for sub in ("train", "val", "test"))
    assert "cam0" not in msg and "patches.min_entropy" in msg


# ---------------------------------------------------------------------- item 7: config errors


@pytest.mark.parametrize("override,message", [
    ("+patches.sizee=64", "patches.sizee"),
    ("phase_a.max_epochs=0", "phase_a.max_epochs=0"),
    ("patches.per_model.train_a=0", "patches.per_model.train_a=0"),
    ("patches.size=8", "patches.size=8: a 8x8 patch has at most ln.64. = 4.16 nats"),
    ("phase_b.recompress.share=1.5", "phase_b.recompress.share=1.5"),
    ("phase_b.recompress.quality=[90,80]", r"phase_b.recompress.quality=\[90, 80\]"),
    ("phase_b.recompress.quality=[0,50]", r"phase_b.recompress.quality=\[0, 50\]"),
    ("phase_b.recompress.share=0.5 phase_b.cache_features=false", "needs phase_b.cache_features=true"),
])
def test_config_mistakes_name_the_setting(override: str, message: str) -> None:
    from camsim.config import validate

    with pytest.raises(ValueError, match=message):
        validate(compose_cfg(override.split()))


# --------------------------------------------------------------------------- a shared machine


@pytest.mark.skipif(not (LINUX and Path("/proc/stat").is_file()), reason="reads /proc/stat")
def test_another_busy_process_is_seen_on_this_process_cpus() -> None:
    from camsim.machine import busy_cpu_seconds, others_busy_cores

    assert busy_cpu_seconds() is not None and busy_cpu_seconds([10**6]) is None  # no such CPU
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert others_busy_cores(1.0) >= 0.4  # one core's worth, less whatever the scheduler gave others
    finally:
        spinner.kill()
        spinner.wait()


def test_malloc_settings_reach_the_job_and_its_children_and_the_users_win() -> None:
    from camsim.machine import MALLOC_SETTINGS, tune_malloc

    env = {"MALLOC_TOP_PAD_": "0"}
    assert "set by you" in tune_malloc(env) and env == {"MALLOC_TOP_PAD_": "0"}
    env = {}
    note = tune_malloc(env)
    if LINUX and platform.libc_ver()[0] == "glibc":
        assert env == {k: str(v) for k, v in MALLOC_SETTINGS.items()} and "MALLOC_MMAP_THRESHOLD_" in note
        # a process started with them (a simulator worker) runs, and sees them
        out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_TOP_PAD_'])"],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == str(MALLOC_SETTINGS["MALLOC_TOP_PAD_"])
    else:
        assert env == {} and "own settings" in note


def test_omp_wait_policy_follows_the_machine_and_the_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from camsim import cli

    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert "set by you" in cli.choose_omp_wait_policy(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"GOMP_SPINCOUNT": "1000"}
    assert "set by you" in cli.choose_omp_wait_policy(env) and "OMP_WAIT_POLICY" not in env
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh CLI process, before torch loads
    monkeypatch.setattr(cli, "others_busy_cores", lambda: 0.05)  # a quiet machine: libgomp's short spin
    env = {}
    assert "spin" in cli.choose_omp_wait_policy(env) and env == {}
    for busy in (1.0, None):  # a shared machine, or one whose load cannot be read: passive waits
        monkeypatch.setattr(cli, "others_busy_cores", lambda busy=busy: busy)
        env = {}
        assert "passive" in cli.choose_omp_wait_policy(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize("v2, v1, quota", [
    ("400000 100000\n", None, 4), ("150000 100000\n", None, 2), ("max 100000\n", None, None),
    (None, ("200000\n", "100000\n"), 2), (None, ("-1\n", "100000\n"), None), (None, None, None),
])
def test_workers_stay_within_a_containers_cpu_quota(tmp_path, monkeypatch, v2, v1, quota):
    """Docker's --cpus=4 on a many-core host leaves every core in the affinity mask: camsim's worker
    pools (and the CPU guard's estimate) take the quota, rounded up, where there is one."""
    import camsim.progress as progress

    def file(name: str, text: str | None) -> str:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        return str(path)

    monkeypatch.setattr(progress, "CGROUP_CPU_MAX", file("cpu.max", v2))
    monkeypatch.setattr(progress, "CGROUP_V1_QUOTA", (file("q", v1 and v1[0]), file("p", v1 and v1[1])))
    assert progress.cpu_quota() == quota
    monkeypatch.setattr(progress.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert progress.default_workers() == (quota or 64)
