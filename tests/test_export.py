"""Sharing a trained network (camsim-export): the exported folder gives the very scores of its
checkpoint — through camsim (load_similarity, the feature pass, the transfer evaluation,
camsim-localize) and through the README's plain-PyTorch snippet, which imports neither
Lightning nor Hydra — its files are checked on load, and bad input is one clear error.

A tiny Phase B network (32-px patches) with random weights and random batch-norm statistics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from camsim.cli import CONF_DIR
from camsim.cli.export import model_dir_argv
from camsim.eval.export import SNIPPET, export_network
from camsim.eval.metrics import nest
from camsim.lit.phase_b import ForensicSimilarity, load_similarity
from camsim.models.feature_pass import extract_features
from camsim.data.features import checkpoint_backbone_id
from camsim.models.portable import CONFIG, WEIGHTS, load_exported, read_exported, weights_file
from tests.conftest import REPO, TINY, run_cli

P = 32
HEAD = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "similarity" / "small.yaml"))
TRAINING = {"sets": {"a": ["Acme_Two", "Zed_X"], "b": ["Bolt_Three"], "b_val": ["Bolt_Four"], "b_with_a": True,
                      "b_table_balance": True},
            "data": {"_target_": "camsim.data.sources.FolderSource", "root": "/photos/elsewhere",
                     "extensions": [".png"], "min_images": 1},
            "patches": {"size": P, "align": 8, "min_entropy": 4.0}}
VALIDATION = {"phase_b/val/acc": 0.8125, "phase_b/val/auc": 0.875, "phase_b/val/loss": 0.5}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """``phase_b-x/model.ckpt`` (every tensor random, batch-norm statistics included) with the
    Phase B validation figures beside it, as the pipeline leaves them."""
    torch.manual_seed(0)
    sim = ForensicSimilarity({"backbone": TINY, "class_names": TRAINING["sets"]["a"], "patch_size": P}, HEAD,
                             "fc_a2.pre", eta=0.4, training=TRAINING)
    with torch.no_grad():
        for name, t in sim.state_dict().items():
            if t.is_floating_point():
                t.copy_(0.5 + torch.rand_like(t) if name.endswith("running_var") else t + 0.1 * torch.randn_like(t))
    d = tmp_path_factory.mktemp("artefacts") / "phase_b-x"
    d.mkdir()
    torch.save({"state_dict": sim.state_dict(), "hyper_parameters": dict(sim.hparams),
                "pytorch-lightning_version": L.__version__}, d / "model.ckpt")
    (d / "metrics.json").write_text(json.dumps(VALIDATION))
    return d / "model.ckpt"


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    return export_network(ckpt, tmp_path_factory.mktemp("share") / "my-model")


def patches(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 1, P, P), dtype=np.uint8))


def write_photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(np.clip(rng.uniform(60, 190) + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- the folder


def test_folder_holds_weights_config_and_model_card(exported, ckpt):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", CONFIG, WEIGHTS]
    cfg = json.loads((exported / CONFIG).read_text())
    assert cfg["architecture"]["backbone"] == TINY and cfg["architecture"]["head"] == HEAD
    assert cfg["architecture"]["patch_size"] == P and cfg["architecture"]["feature_layer"] == "fc_a2.pre"
    assert cfg["eta"] == {"value": 0.4, "source": "checkpoint", "training": 0.4}
    net = load_exported(exported)  # the recipe's patch filter travels with the network
    assert (net.min_entropy, net.align, net.eta) == (4.0, 8, 0.4)
    assert cfg["training"]["sets"] == TRAINING["sets"] and cfg["training"]["data"] == TRAINING["data"]
    assert cfg["input"]["channel"] == "green" and cfg["input"]["align"] == 8 and cfg["input"]["min_entropy"] == 4.0
    assert re.fullmatch(r"[0-9a-f]{12}", cfg["training_data_fingerprint"])
    assert cfg["versions"]["torch"] == torch.__version__ and cfg["versions"]["safetensors"]
    import hashlib
    assert cfg["files"][WEIGHTS]["sha256"] == hashlib.sha256((exported / WEIGHTS).read_bytes()).hexdigest()
    assert cfg["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    card = (exported / "README.md").read_text()
    for heading in ("## Intended use", "## Limits", "## Training data", "## Evaluation", "## Load it", "## Files"):
        assert heading in card, heading
    assert f"{100 * VALIDATION['phase_b/val/acc']:.1f} %" in card  # the figure beside the checkpoint
    assert card.count("Not measured") == 2  # pairs and transfer: no run given
    assert "Acme_Two, Zed_X" in card and "validated on Bolt_Four" in card
    assert "training pairs also from set A's models" in card  # phase_b.with_a
    assert "pairs balanced by JPEG table (`phase_b.table_balance`)" in card
    assert SNIPPET.replace("MODEL_DIR", "my-model").strip() in card


def test_model_card_shows_pairs_and_transfer_figures_with_protocol(ckpt, tmp_path):
    pairs = nest({"eval/acc/overall": 0.75, "eval/acc/known_known": 0.875, "eval/auc": 0.8125, "eval/eta": 0.4,
                  "eval/n_pairs": 40, "baseline/acc/overall": 0.625})
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "metrics.json").write_text(json.dumps(pairs))
    transfer = {"transfer": {"source": "FolderSource(/x)", "eta": 0.4, "protocol": ["one protocol line"],
                             "patch": {"other_photo": {"n_pos": 12, "n_neg": 30, "auc": {"value": 0.6875, "lo": 0.5,
                                                                                         "hi": 0.8125}}}}}
    (tmp_path / "transfer.json").write_text(json.dumps(transfer))
    out = export_network(ckpt, tmp_path / "m", metrics=[tmp_path / "pairs", tmp_path / "transfer.json"])
    card = (out / "README.md").read_text()
    assert "Not measured" not in card
    assert "87.5 %" in card and "62.5 %" in card and "0.812" in card  # pairs: known-known, baseline, AUC
    assert "one protocol line" in card and "0.688 [0.500, 0.812]" in card  # transfer with its interval
    assert "TPR at η" in card and "oracle" not in card
    # transfer.threshold=best: each row at its own threshold, picked on its test pairs — the card says so
    best = {"transfer": {**transfer["transfer"], "threshold": "best"}}
    best["transfer"]["patch"]["other_photo"]["eta"] = 0.3125
    (tmp_path / "best.json").write_text(json.dumps(best))
    card = (export_network(ckpt, tmp_path / "mb", metrics=[tmp_path / "best.json"]) / "README.md").read_text()
    assert "(transfer.threshold=best: an oracle, optimistic)" in card and "TPR at the row's threshold" in card
    assert "| 0.312 |" in card
    assert "this network decides" not in card  # the evaluations decided at the checkpoint's η
    # an evaluation at another η (eval.eta=auto chose it): the card says so, and eta= exports with it
    (tmp_path / "auto").mkdir()
    (tmp_path / "auto" / "metrics.json").write_text(json.dumps(nest({"eval/eta": 0.25, "eval/auc": 0.8})))
    other = export_network(ckpt, tmp_path / "m1", metrics=[tmp_path / "auto"])
    assert "decided at η = 0.25, this network decides at η = 0.4" in (other / "README.md").read_text()
    again = export_network(ckpt, tmp_path / "m2", metrics=[tmp_path / "auto"], eta=0.25)
    assert json.loads((again / "config.json").read_text())["eta"] == {"value": 0.25, "source": "export option eta",
                                                                           "training": 0.4}
    assert "this network decides" not in (again / "README.md").read_text()
    # Phase B's validation accuracy is the one training took at its own η, whatever the export's
    assert "accuracy at η = 0.4 | 81.2 %" in (again / "README.md").read_text()
    with pytest.raises(ValueError, match="eta=1.5: a threshold in"):
        export_network(ckpt, tmp_path / "m3", eta=1.5)
    # figures measured with another network are marked; with this one (here a copy of it) they are not
    (tmp_path / "copy.ckpt").write_bytes(Path(ckpt).read_bytes())
    (tmp_path / "other.ckpt").write_bytes(b"another network")
    for name, marked in (("copy.ckpt", False), ("other.ckpt", True)):
        transfer["transfer"]["checkpoint"] = str(tmp_path / name)
        (tmp_path / f"t_{name}.json").write_text(json.dumps(transfer))
        out = export_network(ckpt, tmp_path / f"m_{name}", metrics=[tmp_path / f"t_{name}.json"])
        card = (out / "README.md").read_text()
        assert (f"were measured with `{tmp_path / name}`, not with the checkpoint exported here" in card) == marked
    assert not (tmp_path / "m3").exists()


def test_bad_metrics_path_is_one_clear_error(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics: .*nowhere.*not found"):
        export_network(ckpt, tmp_path / "m", metrics=[tmp_path / "nowhere"])
    (tmp_path / "other.json").write_text(json.dumps({"phase_a": {"acc": 1.0}}))
    with pytest.raises(ValueError, match="other.json holds no evaluation"):
        export_network(ckpt, tmp_path / "m", metrics=[tmp_path / "other.json"])
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- same scores


def test_folder_gives_the_checkpoints_scores_bit_for_bit(exported, ckpt):
    from_ckpt, from_dir, portable = load_similarity(ckpt), load_similarity(exported), load_exported(exported)
    a, b = patches(24, 1), patches(24, 2)
    with torch.no_grad():
        ref = torch.sigmoid(from_ckpt(a, b))
        assert torch.equal(torch.sigmoid(from_dir(a, b)), ref)
    assert torch.equal(portable.score(a, b), ref)
    assert torch.equal(portable.score(a[:, 0].numpy(), b[:, 0].numpy()), ref)  # numpy [N, P, P] too
    # camsim's own path: the channels-last feature pass, then pairs scored on the features
    f_ck = extract_features(from_ckpt, a[:, 0].numpy(), "fc_a2.pre", desc=None)
    f_dir = extract_features(from_dir, a[:, 0].numpy(), "fc_a2.pre", desc=None)
    assert np.array_equal(f_ck, f_dir)
    i, j = np.arange(24), np.arange(24)[::-1].copy()
    assert np.array_equal(from_ckpt.score_pairs(f_ck, i, j), from_dir.score_pairs(f_dir, i, j))
    # what evaluation and localisation read from the network
    assert from_dir.training_sets == from_ckpt.training_sets and from_dir.patch_settings == from_ckpt.patch_settings
    assert from_dir.data_fingerprint == from_ckpt.data_fingerprint and from_dir.hparams.eta == 0.4 == portable.eta


def _readme_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Share a trained network")
    return re.search(r"```python\n(.*?)```", readme[start:], re.S).group(1)


def test_readme_snippet_scores_like_the_checkpoint_without_lightning_or_hydra(exported, ckpt, tmp_path):
    code = _readme_snippet()
    assert code == SNIPPET, "README's snippet and the model card's (camsim.eval.export.SNIPPET) differ"
    photos = [write_photo(tmp_path / f"photo_{k}.png", k) for k in (1, 2)]
    code = code.replace("MODEL_DIR", str(exported)).replace("PHOTO_1", str(photos[0])).replace("PHOTO_2", str(photos[1]))
    code += ("import json, sys\n"
             "print(json.dumps({'loaded': sorted({m.split('.')[0] for m in sys.modules} & "
             "{'lightning', 'pytorch_lightning', 'hydra', 'omegaconf'}), 's': s.numpy().tobytes().hex()}))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("S = ") and ("same camera model" in lines[0] or "different" in lines[0])
    out = json.loads(lines[-1])
    assert out["loaded"] == []
    green = [np.asarray(Image.open(p))[:, :, 1] for p in photos]
    with torch.no_grad():
        ref = torch.sigmoid(load_similarity(ckpt)(torch.from_numpy(green[0][None, None, :P, :P].copy()),
                                                  torch.from_numpy(green[1][None, None, :P, :P].copy())))
    assert out["s"] == ref.numpy().tobytes().hex()


def test_transfer_evaluation_of_the_folder_equals_the_checkpoints(exported, ckpt, tmp_path):
    from camsim.eval.transfer import run_transfer
    from tests.test_transfer import make_folder, transfer_cfg

    root = make_folder(tmp_path / "photos", {"Acme_Two": 2, "Bolt_Three": 2, "Other_One": 1})
    runs = {}
    for name, model in (("ckpt", ckpt), ("dir", exported)):
        run_transfer(transfer_cfg(model, root, tmp_path / name, "transfer.bootstrap.reps=20"))
        runs[name] = np.load(tmp_path / name / "run" / "scores.npz")
    assert len(runs["ckpt"]["score"]) > 0 and np.array_equal(runs["ckpt"]["score"], runs["dir"]["score"])
    run = json.loads((tmp_path / "dir" / "run" / "run.json").read_text())
    assert run["checkpoint"].endswith(WEIGHTS)


def test_folder_and_its_weights_file_share_one_feature_cache_id(exported, ckpt):
    assert weights_file(exported) == exported / WEIGHTS and weights_file(ckpt) == ckpt
    assert checkpoint_backbone_id(exported) == checkpoint_backbone_id(exported / WEIGHTS) != checkpoint_backbone_id(ckpt)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("damage, message", [
    ("missing weights", r"model.safetensors: missing"),
    ("changed weights", r"model.safetensors: sha256 [0-9a-f]+… does not match config.json's"),
    ("missing config", r"config.json: missing .* not a camsim-export folder"),
    ("bad json", r"config.json: not valid JSON"),
    ("newer format", r"format_version 99 is not 1"),
])
def test_damaged_folder_is_one_clear_error(exported, tmp_path, damage, message):
    import shutil

    d = shutil.copytree(exported, tmp_path / "copy")
    if damage == "missing weights":
        (d / WEIGHTS).unlink()
    elif damage == "changed weights":
        blob = bytearray((d / WEIGHTS).read_bytes())
        blob[-1] ^= 1
        (d / WEIGHTS).write_bytes(bytes(blob))
    elif damage == "missing config":
        (d / CONFIG).unlink()
    elif damage == "bad json":
        (d / CONFIG).write_text("{not json")
    else:
        cfg = json.loads((d / CONFIG).read_text())
        (d / CONFIG).write_text(json.dumps({**cfg, "format_version": 99}))
    for load in (load_exported, load_similarity, read_exported):
        with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
            load(d)
        assert "\n" not in str(err.value)


def test_export_refuses_a_non_empty_folder_unless_overwrite(ckpt, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"out=.*m: the folder exists and is not empty.*overwrite=true"):
        export_network(ckpt, out)
    assert (out / "notes.txt").read_text() == "mine"
    export_network(ckpt, out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / WEIGHTS).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind
    # an export that fails while writing leaves the previous one as it was
    import camsim.eval.export as export_module

    def broken(tmp, *args, **kwargs):
        (tmp / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    before = sorted(p.name for p in out.iterdir())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_module, "write_export", broken)
        with pytest.raises(OSError, match="disk full"):
            export_network(ckpt, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before and [p.name for p in tmp_path.iterdir()] == ["m"]
    with pytest.raises(ValueError, match="holds the checkpoint"):
        export_network(ckpt, ckpt.parent, overwrite=True)
    assert ckpt.is_file()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_export_into_dot_and_through_a_symbolic_link(ckpt, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export_network(ckpt, Path(".")) == here  # out=.: the folder itself, named on the card
    assert (here / WEIGHTS).is_file() and 'load_exported("here")' in (here / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latest").symlink_to(here)  # a link to the folder: that folder is replaced, the link stays
    assert export_network(ckpt, tmp_path / "latest", overwrite=True) == here
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "latest" / WEIGHTS).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "latest"]
    assert 'load_exported("latest")' in (here / "README.md").read_text()


def test_export_puts_right_what_a_killed_export_left(ckpt, tmp_path, monkeypatch):
    """Killed between setting the previous folder aside and moving the new one in: the previous
    folder goes back in place (not left hidden forever) — not while another export is under way;
    killed before removing it: it goes; staged folders go, half-written ones under atomic_dir's own
    name too; a user's folder that merely looks like one stays."""
    from camsim.artefacts import _host
    from camsim.eval.export import recover_leftovers

    out = export_network(ckpt, tmp_path / "m")
    files = sorted(p.name for p in out.iterdir())
    pid = dead_pid()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    (tmp_path / "m").rename(tmp_path / f".m.old-{pid}")  # an older camsim's name
    export_network(ckpt, tmp_path / "staged")
    (tmp_path / "staged").rename(tmp_path / ".m.new")  # complete, never moved in
    (tmp_path / f"..m.new-{_host()}-{pid}.tmp-{_host()}-{pid}-x1y2").mkdir()  # half written (atomic_dir's name)
    backup = tmp_path / ".m.old-2024"  # a user's own folder, not an export
    backup.mkdir()
    with pytest.raises(ValueError, match="not empty"):  # put back: not replaced without overwrite=true
        export_network(ckpt, tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", backup.name])
    # while another export into m is under way (its staged folder, its process alive), nothing is put back
    aside = tmp_path / f".m.old-{_host()}-{pid}"
    (tmp_path / "m").rename(aside)
    live = tmp_path / f".m.new-{_host()}-{os.getppid()}"
    live.mkdir()
    recover_leftovers(tmp_path / "m")
    assert not (tmp_path / "m").exists() and aside.is_dir() and live.is_dir()
    live.rmdir()
    recover_leftovers(tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    # killed after the swap, before removing the previous folder: that one goes
    export_network(ckpt, tmp_path / "staged")
    (tmp_path / "staged").rename(aside)
    export_network(ckpt, tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", backup.name])
    assert sorted(p.name for p in out.iterdir()) == files
    # the new folder failing to move in: the previous one goes back at once
    real = os.replace

    def fail_moving_in(src, dst):
        if Path(src).name.startswith(".m.new-"):
            raise OSError("killed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_moving_in)
    with pytest.raises(OSError, match="killed"):
        export_network(ckpt, tmp_path / "m", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == files


def test_model_dir_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mislnet").mkdir()
    (tmp_path / "shared").mkdir()
    options = {"mislnet", "plain_cnn"}
    # camsim-eval: a folder becomes ckpt=, a config-group option stays the backbone choice
    assert model_dir_argv(["model=shared", "data=cameras"], options) == ["ckpt=shared", "data=cameras"]
    assert model_dir_argv(["model=mislnet"], options) == ["model=mislnet"]
    assert model_dir_argv(["model=./mislnet"], options) == ["ckpt=./mislnet"]
    assert model_dir_argv(["model=not_a_folder"], options) == ["model=not_a_folder"]
    # camsim-localize has no model group: every model= names the network
    assert model_dir_argv(["model=anything"], None) == ["ckpt=anything"]
    with pytest.raises(ValueError, match="model=shared and ckpt=... both name the network"):
        model_dir_argv(["model=shared", "ckpt=x.ckpt"], options)
    # a mistyped folder is "no such folder", not Hydra's "Could not find 'model/...'"
    with pytest.raises(FileNotFoundError, match=r"model=out/my-modl: no such folder .* nor one of the model configs"):
        model_dir_argv(["model=out/my-modl"], options)
    # an artefact folder (a checkpoint inside, not an export): the message points at the checkpoint
    (tmp_path / "phase_b-x").mkdir()
    (tmp_path / "phase_b-x" / "model.ckpt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"it holds a checkpoint: ckpt=phase_b-x/model.ckpt"):
        load_exported("phase_b-x")


def test_to_plain_has_one_definition_below_the_config_layer():
    import camsim.config
    import camsim.plain

    assert camsim.config.to_plain is camsim.plain.to_plain
    node = OmegaConf.create({"a": [1, {"b": "${c}"}], "c": 2})
    assert camsim.plain.to_plain(node) == {"a": [1, {"b": 2}], "c": 2}
    assert camsim.plain.to_plain({"x": (1, node.a)}) == {"x": [1, [1, {"b": 2}]]}


# --------------------------------------------------------------------------- ONNX and the CLI


@pytest.mark.parametrize("jpeg", [False, True])
def test_onnx_export_matches_pytorch_within_fp32_rounding(ckpt, tmp_path, jpeg):
    """Also with the JPEG branch (the quick recipe's model: a DCT and scatter_add_ histograms); the
    export checks the graphs it wrote itself (config.json's onnx_check)."""
    for pkg in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(pkg, reason=f"{pkg} is not installed: the onnx extra (pip install -e '.[onnx]')")
    import onnxruntime as ort

    if jpeg:
        torch.manual_seed(1)
        sim = ForensicSimilarity({"backbone": {**TINY, "jpeg": {"coefficients": 27, "half_range": 15}},
                                  "class_names": TRAINING["sets"]["a"], "patch_size": P}, HEAD, "fc_a2.pre",
                                 training=TRAINING)
        ckpt = tmp_path / "jpeg.ckpt"
        torch.save({"state_dict": sim.state_dict(), "hyper_parameters": dict(sim.hparams),
                    "pytorch-lightning_version": L.__version__}, ckpt)
    out = export_network(ckpt, tmp_path / "m", onnx=True)
    cfg = json.loads((out / CONFIG).read_text())
    assert {"features.onnx", "head.onnx"} <= set(cfg["files"])
    assert cfg["onnx_check"]["features_relative_error"] < 64 * np.finfo(np.float32).eps
    net = load_exported(out)
    a, b = patches(5, 3).numpy(), patches(5, 4).numpy()  # another batch size than the export's
    feats = ort.InferenceSession(str(out / "features.onnx"))
    head = ort.InferenceSession(str(out / "head.onnx"))
    fa, fb = (feats.run(None, {"patches": x})[0] for x in (a, b))
    logits = head.run(None, {"f1": fa, "f2": fb})[0]
    with torch.no_grad():
        ref_f, ref = net.features(a).numpy(), net(a, b).numpy()
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(fa, ref_f, rtol=64 * eps, atol=64 * eps * np.abs(ref_f).max())
    np.testing.assert_allclose(logits, ref, rtol=64 * eps, atol=64 * eps * np.abs(ref).max())


def test_cli_export_refuses_a_non_empty_folder_in_one_line(ckpt, tmp_path):
    out = tmp_path / "m"
    first = run_cli("camsim-export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (out / WEIGHTS).is_file() and "exported to" in first.stdout
    again = run_cli("camsim-export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "overwrite=true" in again.stderr


def test_cli_localize_names_the_photo_it_cannot_analyse(ckpt, tmp_path):
    """A photo smaller than one patch: one line that names the file and why, exit status 2."""
    tiny = tmp_path / "thumb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 14, 3), np.uint8)).save(tiny)
    res = run_cli("camsim-localize", f"image={tiny}", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0
    assert f"{tiny}: image is smaller than one patch" in res.stderr
    bad = run_cli("camsim-localize", f"image={tiny}", f"ckpt={ckpt}", "mode=grph", f"hydra.run.dir={tmp_path / 'o2'}",
                  cwd=tmp_path)  # a setting's error is not the photo's: no file name in front of it
    assert bad.returncode == 2 and bad.stderr.strip().split("error: ", 1)[-1].startswith("mode must be one of")
    for rule, why in (("fit", "fusion=fit: fitting needs labelled pairs"), ("max", "fusion: 'max' is not one of")):
        refused = run_cli("camsim-localize", f"image={tiny}", f"ckpt={ckpt}", f"fusion={rule}",
                          f"hydra.run.dir={tmp_path / rule}", cwd=tmp_path)   # one network: not silently ignored
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr


@pytest.mark.slow
def test_cli_localize_with_model_dir_gives_the_checkpoints_scores(exported, ckpt, tmp_path):
    photo = write_photo(tmp_path / "photo.png", 5)
    runs = {}
    for name, arg in (("ckpt", f"ckpt={ckpt}"), ("dir", f"model={exported}")):
        res = run_cli("camsim-localize", f"image={photo}", arg, f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        runs[name] = np.load(tmp_path / name / "scores.npy")
    assert np.array_equal(runs["ckpt"], runs["dir"], equal_nan=True)


def test_model_card_knows_its_own_folder_and_a_pairs_runs_own_network(ckpt, exported, tmp_path):
    """A transfer run on the exported folder (as the card recommends) scored this network; a pairs
    run that trained its own Phase B (no ``ckpt=``) scored another one: the card says so."""
    transfer = {"transfer": {"source": "FolderSource(/x)", "eta": 0.4, "protocol": [], "checkpoint": str(exported)}}
    (tmp_path / "t.json").write_text(json.dumps(transfer))
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "metrics.json").write_text(json.dumps(nest({"eval/eta": 0.4, "eval/auc": 0.8})))
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "model.ckpt").write_bytes(b"the run's own network")
    (tmp_path / "pairs" / "run.json").write_text(json.dumps({"phase_b": {"artefact": str(tmp_path / "own")}}))
    card = (export_network(ckpt, tmp_path / "m", metrics=[tmp_path / "t.json", tmp_path / "pairs"])
            / "README.md").read_text()
    assert f"were measured with `{tmp_path / 'own' / 'model.ckpt'}`" in card
    assert f"measured with `{exported}`" not in card


def variant(ckpt: Path, folder: Path, metrics: dict | None = None, **hparams) -> Path:
    """A copy of ``ckpt`` in ``folder`` (other bytes: another network for the card), its
    hyper-parameters updated with ``hparams``, ``metrics`` as the metrics.json beside it."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["hyper_parameters"] = {**raw["hyper_parameters"], **hparams, "variant": str(folder)}
    folder.mkdir(parents=True)
    torch.save(raw, folder / "model.ckpt")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "model.ckpt"


def test_model_card_credits_a_pairs_run_to_the_network_it_scored(ckpt, tmp_path):
    """A job that trained a fine-tuned network records its frozen head stage as phase_b and the
    network it evaluated as finetune: an older run.json (no eval_checkpoint) credits finetune's;
    eval_checkpoint, which the pipeline now always writes, comes first."""
    tuned = variant(ckpt, tmp_path / "art" / "phase_b-tuned", finetune={"from_layer": None})
    frozen = ckpt.parent
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "metrics.json").write_text(json.dumps(nest({"eval/eta": 0.4, "eval/auc": 0.8})))

    def card(exported: Path, run: dict, out: str) -> str:
        (tmp_path / "pairs" / "run.json").write_text(json.dumps(run))
        return (export_network(exported, tmp_path / out, metrics=[tmp_path / "pairs"]) / "README.md").read_text()

    trained = {"phase_b": {"artefact": str(frozen), "reused": True}, "finetune": {"artefact": str(tuned.parent)}}
    assert "were measured with" not in card(tuned, trained, "tuned")
    assert f"were measured with `{tuned}`" in card(ckpt, trained, "frozen")
    # eval_checkpoint names the network scored, whatever phase_b and finetune say
    recorded = {"phase_b": {"artefact": str(tuned.parent)}, "eval_checkpoint": str(ckpt.resolve())}
    assert "were measured with" not in card(ckpt, recorded, "recorded")
    assert f"were measured with `{ckpt.resolve()}`" in card(tuned, recorded, "recorded-tuned")


def test_model_card_names_the_kept_epoch_of_the_validation_figures(ckpt, tmp_path):
    kept = variant(ckpt, tmp_path / "kept", metrics={**VALIDATION, "best_epoch": 3})
    text = (export_network(kept, tmp_path / "m") / "README.md").read_text()
    assert "the kept epoch, epoch 3 (counted from 0)" in text and "last training epoch" not in text
    resumed = variant(ckpt, tmp_path / "resumed", metrics={**VALIDATION, "best_epoch": None})  # resumed from an old one
    text = (export_network(resumed, tmp_path / "r") / "README.md").read_text()
    assert "the last training epoch's figures" in text and "kept epoch" not in text


def test_model_card_tells_the_heads_pairs_from_a_apart_from_the_fine_tunings(ckpt, tmp_path):
    sets = {k: v for k, v in TRAINING["sets"].items() if k != "b_with_a"}
    head = variant(ckpt, tmp_path / "head", training={**TRAINING, "sets": sets})  # phase_b.with_a off

    def card(path: Path, out: str) -> str:
        return (export_network(path, tmp_path / "out" / out) / "README.md").read_text()

    tuned = ForensicSimilarity.for_finetuning(head, {"from_layer": "fc_a1", "with_a": True, "enabled": True})
    (tmp_path / "tuned").mkdir()
    torch.save({"state_dict": tuned.state_dict(), "hyper_parameters": dict(tuned.hparams),
                "pytorch-lightning_version": L.__version__}, tmp_path / "tuned" / "m.ckpt")
    text = card(tmp_path / "tuned" / "m.ckpt", "t")
    assert "the fine-tuning epochs' training pairs also from set A's models (`phase_b.finetune.with_a`), the " \
           "head's from set B's only" in text and "`phase_b.with_a`" not in text
    ft = {"from_layer": "fc_a1"}
    assert "the head's training pairs also from set A's models (`phase_b.with_a`), the fine-tuning epochs' from " \
           "set B's only" in card(variant(ckpt, tmp_path / "h", finetune=ft), "h")
    both = {**TRAINING, "sets": {**TRAINING["sets"], "b_finetune_with_a": True}}
    assert "the head's and the fine-tuning epochs' training pairs also from set A's models" in \
        card(variant(ckpt, tmp_path / "b", training=both, finetune={**ft, "with_a": True}), "b")
    # a checkpoint fine-tuned before the two were recorded apart: b_with_a says one of them did
    old = card(variant(ckpt, tmp_path / "o", finetune={**ft, "with_a": True}), "o")
    assert "(`phase_b.finetune.with_a`); whether the head's were too (`phase_b.with_a`) is not recorded" in old


def test_folder_keeps_the_fine_tuning_record(ckpt, tmp_path):
    cfg_path = (out := export_network(ckpt, tmp_path / "m")) / CONFIG
    cfg = json.loads(cfg_path.read_text())
    assert cfg["finetune"] is None and not load_similarity(out).finetuning
    cfg["finetune"] = {"from_layer": None}
    cfg_path.write_text(json.dumps(cfg))
    assert load_similarity(out).finetuning


@pytest.mark.parametrize("field, spec", [
    ("backbone", {**TINY, "constrained": {"_target_": "pathlib.Path.touch", "self": "PWNED"}}),
    ("head", {"_target_": "os.system", "command": "touch PWNED"}),
])
def test_a_shared_network_runs_no_code_on_load(ckpt, exported, tmp_path, monkeypatch, field, spec):
    """Building a network from a file instantiates the classes it names: a folder's config.json or
    a checkpoint's hyper-parameters from elsewhere must not name anything but a network."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in exported.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / CONFIG).read_text())
    cfg["architecture"][field] = spec
    (folder / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"config.json: architecture\.{field}.*(refused|not a camsim network)"):
        load_similarity(folder)
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    if field == "backbone":
        hp["phase_a"] = {**hp["phase_a"], "backbone": spec}
    else:
        hp["head"] = spec
    torch.save(raw, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"bad.ckpt: .*(refused|not a camsim network)"):
        load_similarity(tmp_path / "bad.ckpt")
    assert not (tmp_path / "PWNED").exists()


def test_a_checkpoint_naming_a_module_not_imported_imports_nothing(ckpt, tmp_path):
    """Importing a module a checkpoint names runs its top-level code: only classes of modules this
    process has already imported are accepted (a backbone of one's own: import it first)."""
    import sys

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["hyper_parameters"]["head"] = {"_target_": "this.Network"}  # `import this` prints, a stand-in
    torch.save(raw, tmp_path / "other.ckpt")
    assert "this" not in sys.modules
    with pytest.raises(ValueError, match="nor a torch.nn.Module class of a module already imported"):
        load_similarity(tmp_path / "other.ckpt")
    assert "this" not in sys.modules


def test_localize_decides_at_the_exported_eta_unless_told(ckpt, tmp_path):
    """camsim-localize's reference mode flags S <= η: by default the network's (export eta=...),
    as the README and the model card say, not a fixed 0.5."""
    from types import SimpleNamespace

    from camsim.localize.run import Localizer

    loc = Localizer(load_similarity(export_network(ckpt, tmp_path / "m", eta=0.3)))
    assert loc.eta(SimpleNamespace(eta=None)) == (0.3, "the network's")
    assert loc.eta(SimpleNamespace(eta=0.6)) == (0.6, "option eta")
    assert Localizer(load_similarity(ckpt)).eta(SimpleNamespace(eta=None))[0] == 0.4  # the checkpoint's


def test_cli_localize_takes_a_calibration_file_for_its_own_setting_only(ckpt, tmp_path):
    """calibrate_far on a folder writes calibration.json; decision_threshold=<it> applies its
    threshold where the setting is the calibration's and names what differs elsewhere."""
    folder = tmp_path / "authentic"
    folder.mkdir()
    for i in range(3):
        write_photo(folder / f"a{i}.png", 10 + i)
    cal = run_cli("camsim-localize", f"image={folder}", f"ckpt={ckpt}", "calibrate_far=0.34",
                  f"hydra.run.dir={tmp_path / 'cal'}", cwd=tmp_path)
    assert cal.returncode == 0, cal.stderr
    threshold = json.loads((tmp_path / "cal" / "calibration.json").read_text())["threshold"]
    photo = write_photo(tmp_path / "photo.png", 5)
    use = run_cli("camsim-localize", f"image={photo}", f"ckpt={ckpt}",
                  f"decision_threshold={tmp_path / 'cal' / 'calibration.json'}", cwd=tmp_path)
    assert use.returncode == 0, use.stderr
    assert f"threshold {threshold:.3f}" in use.stdout or f"{threshold:.4f}" in use.stdout + use.stderr
    other = run_cli("camsim-localize", f"image={photo}", f"ckpt={ckpt}", "cover_border=false",
                    f"decision_threshold={tmp_path / 'cal' / 'calibration.json'}", cwd=tmp_path)
    assert other.returncode == 2 and "calibrated for another setting" in other.stderr
    assert "cover_border: calibrated True, now False" in other.stderr
