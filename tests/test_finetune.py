"""End-to-end fine-tuning after Phase B's frozen head stage (``phase_b.finetune``; Mayer & Stamm,
TIFS 2019): the backbone learns only once fine-tuning starts, from the named stage on, the
constrained layer stays on its constraint after every step, batch-norm statistics do not move,
an interrupted fine-tuning resumes where it stopped, and a bad ``from_layer`` fails at start in
one line. Tiny backbone, 32-px patches, CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from camsim.artefacts import content_hash
from camsim.lit.phase_b import ForensicSimilarity, finetune_modules
from camsim.models.constrained import constraint_violation
from camsim.phases import finetune_key
from camsim.pipeline import check_config
from tests.conftest import compose_cfg, run_cli
from tests.test_lit import (ADAM, HEAD_ADAM, SIMILARITY, EpochLosses, StartState, camera_patches, checkpoints,
                            classifier, loader, pair_loaders, seeded, state_copy, trainer)

FINETUNE = {"from_layer": None, "backbone_lr": 1e-3, "channels_last": True,
            "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
            "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 2}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):  # conftest.one_thread, for every test here
    yield


@pytest.fixture(scope="module")
def data() -> dict:
    return {"train": camera_patches(32, seed=0), "val": camera_patches(12, seed=1)}


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, data) -> dict:
    """Phase A (2 epochs), then Phase B's head on the frozen backbone (patch pairs, 1 epoch)."""
    d = tmp_path_factory.mktemp("finetune")
    tr, va = data["train"], data["val"]
    seeded(trainer(max_epochs=2, callbacks=checkpoints(d / "a", "phase_a/val/acc")).fit, classifier(ADAM),
           loader(tr, 32, shuffle=True), loader(va, 64))
    model = ForensicSimilarity.from_phase_a(d / "a" / "last.ckpt", head=SIMILARITY, feature_layer="fc_a2.pre", optimizer=HEAD_ADAM)
    backbone_before = state_copy(model.backbone)
    train, val = pair_loaders(tr, tr.labels, va, va.labels, 64, 32, 16)
    t = trainer(max_epochs=1, callbacks=checkpoints(d / "head", "phase_b/val/auc"))
    seeded(t.fit, model, train, val)
    return {"dir": d, "ckpt": d / "head" / "last.ckpt", "model": model, "backbone_before": backbone_before,
            "loaders": (train, val)}


class ConstraintAfterStep(L.Callback):
    """Worst constraint violation of the constrained layer after every optimiser step."""

    def __init__(self) -> None:
        self.worst: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.worst.append(max(constraint_violation(pl_module.backbone.constrained.weight)))


def changed(before: dict, after: torch.nn.Module | dict) -> set[str]:
    """Keys of a state dict whose tensors differ between ``before`` and ``after``."""
    after = after if isinstance(after, dict) else after.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def stage_of(key: str) -> str:
    """``blocks.conv1.bn.weight`` → ``blocks.conv1``; ``constrained.weight`` → ``constrained``."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in ("blocks", "fcs") else parts[0]


@pytest.mark.parametrize("from_layer,learns", [
    (None, {"constrained", "blocks.conv1", "blocks.conv2", "fcs.fc_a1", "fcs.fc_a2"}),
    ("fc_a1.pre", {"fcs.fc_a1", "fcs.fc_a2"}),
], ids=["whole", "from_fc_a1"])
def test_backbone_learns_only_when_fine_tuning_and_keeps_the_constraint(frozen, from_layer, learns):
    # the frozen head stage left the backbone as Phase A trained it
    assert not changed(frozen["backbone_before"], frozen["model"].backbone)
    model = ForensicSimilarity.for_finetuning(frozen["ckpt"], {**FINETUNE, "from_layer": from_layer, "enabled": True})
    assert model.finetuning and not any(m.training for m in model.backbone.modules())
    assert not (model.hparams.get("training") or {}).get("sets", {}).get("b_finetune_with_a")
    with_a = ForensicSimilarity.for_finetuning(frozen["ckpt"], {**FINETUNE, "with_a": True, "enabled": True})
    # the record says A's models gave the fine-tuning pairs too — not the head's (phase_b.with_a: b_with_a)
    assert with_a.hparams["training"]["sets"]["b_finetune_with_a"] is True
    assert not with_a.hparams["training"]["sets"].get("b_with_a")
    before = state_copy(model.backbone)
    probe = ConstraintAfterStep()
    t = trainer(max_epochs=1, callbacks=[probe])
    seeded(t.fit, model, *frozen["loaders"])
    assert t.global_step == 4 and len(probe.worst) == 4
    assert max(probe.worst) < 1e-6  # projected after every step
    moved = changed(before, model.backbone)
    assert {stage_of(k) for k in moved} == learns, moved
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)  # BN in eval mode
    assert not any(k.startswith("classifier") for k in moved)  # after f(X): never trained
    groups = t.optimizers[0].param_groups
    assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == \
        {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert groups[0]["initial_lr"] == FINETUNE["optimizer"]["lr"] and groups[1]["initial_lr"] == FINETUNE["backbone_lr"]


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_interrupted_fine_tuning_resumes_where_it_stopped(frozen, tmp_path):
    ft = {**FINETUNE, "from_layer": "conv2"}
    first = ForensicSimilarity.for_finetuning(frozen["ckpt"], ft)
    seeded(trainer(max_epochs=1, callbacks=checkpoints(tmp_path, "phase_b/val/auc")).fit, first, *frozen["loaders"])
    saved = state_copy(first)
    resumed = ForensicSimilarity.for_finetuning(frozen["ckpt"], ft)  # the head stage's weights, replaced below
    assert changed(saved, resumed)
    hist, start = EpochLosses("phase_b"), StartState()
    t = trainer(max_epochs=2, callbacks=[*checkpoints(tmp_path, "phase_b/val/auc"), hist, start])
    seeded(t.fit, resumed, *frozen["loaders"], ckpt_path=str(tmp_path / "last.ckpt"), weights_only=True)
    assert hist.epochs == [1] and t.global_step == 8
    assert not changed(saved, start.state), "fine-tuned backbone and head not restored"
    assert len(t.optimizers[0].param_groups) == 2 and t.optimizers[0].state  # Adam's moments restored
    assert changed(saved, resumed)  # and it went on learning


def test_from_layer_must_name_a_stage_before_the_feature_layer(frozen):
    backbone = frozen["model"].backbone
    assert len(finetune_modules(backbone, None, "fc_a2.pre")) > len(finetune_modules(backbone, "fc_a1", "fc_a2.pre"))
    assert finetune_modules(backbone, "fc_a1", "fc_a2.pre") == finetune_modules(backbone, "fc_a1.post", "fc_a2.pre")
    with pytest.raises(ValueError, match=r"from_layer='fc_a9': not a layer of this backbone; one of \['constrained'"):
        finetune_modules(backbone, "fc_a9", "fc_a2.pre")
    with pytest.raises(ValueError, match="comes after phase_b.feature_layer='fc_a1.pre'"):
        finetune_modules(backbone, "fc_a2", "fc_a1.pre")


def test_unknown_from_layer_fails_at_start_in_one_line(tmp_path: Path) -> None:
    cfg = compose_cfg(["phase_b.finetune.enabled=true", "phase_b.finetune.from_layer=fc_a9"])
    with pytest.raises(ValueError, match="phase_b.finetune.from_layer='fc_a9': not a layer"):
        check_config(cfg)
    check_config(compose_cfg(["phase_b.finetune.from_layer=fc_a9"]))  # read only when enabled
    res = run_cli("camsim-run", "phase_b.finetune.enabled=true", "phase_b.finetune.from_layer=fc_a9", cwd=tmp_path,
                  timeout=120)
    err = res.stderr.strip()
    assert res.returncode != 0 and len(err.splitlines()) == 1 and "from_layer='fc_a9'" in err, err
    assert not (tmp_path / "outputs" / "artefacts").exists() or not any((tmp_path / "outputs" / "artefacts").iterdir())


def test_finetune_settings_key_their_own_artefact_only_when_enabled() -> None:
    key = {"kind": "phase_b", "phase_a": "phase_a-x"}
    assert finetune_key(compose_cfg(["phase_b.finetune.from_layer=fc_a1"]), key) is None
    fc = finetune_key(compose_cfg(["phase_b.finetune.enabled=true", "phase_b.finetune.from_layer=fc_a1"]), key)
    whole = finetune_key(compose_cfg(["phase_b.finetune.enabled=true"]), key)
    assert len({content_hash(key), content_hash(fc), content_hash(whole)}) == 3
    assert whole["finetune"]["scheduler"]["T_max"] == whole["finetune"]["max_epochs"]  # interpolation resolved
    # with_a keys an artefact of its own when on; off, the key is the one it had before the option existed
    with_a = finetune_key(compose_cfg(["phase_b.finetune.enabled=true", "phase_b.finetune.with_a=true"]), key)
    assert "with_a" not in whole["finetune"] and with_a["finetune"]["with_a"] is True
    assert content_hash(with_a) != content_hash(whole)


@pytest.mark.slow
def test_fine_tuned_job_reuses_the_frozen_head_and_evaluates_its_own_backbone(tmp_path: Path) -> None:
    """debug=fast end to end: off, then whole-network fine-tuning: the frozen Phase B artefact is
    shared, the fine-tuned one has its own key and checkpoint, the evaluation runs on it."""
    assert run_cli("camsim-run", "debug=fast", cwd=tmp_path).returncode == 0
    res = run_cli("camsim-run", "debug=fast", "phase_b.finetune.enabled=true", "phase_b.finetune.max_epochs=1",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    art = tmp_path / "outputs" / "artefacts"
    dirs = sorted(p for p in art.glob("phase_b-*") if not p.name.endswith(".partial"))
    assert len(dirs) == 2
    keys = {d: json.loads((d / "key.json").read_text()) for d in dirs}
    tuned = next(d for d, k in keys.items() if "finetune" in k)
    assert (tuned / "model.ckpt").is_file()
    runs = sorted((tmp_path / "outputs").rglob("run.json"), key=lambda p: p.stat().st_mtime)
    last = json.loads(runs[-1].read_text())
    frozen = next(d for d in dirs if d != tuned)
    assert last["finetune"]["artefact"] == str(tuned)
    assert last["phase_b"] == {"artefact": str(frozen), "reused": True}  # head stage reused, recorded as such
    assert "fine-tuning (backbone unfrozen)" in last["timings_s"] and last["eval"]
    assert last["eval_checkpoint"] == str((tuned / "model.ckpt").resolve())  # the network scored: not phase_b's
    # evaluated by ckpt= (no Phase A artefact named): its report says whose baseline it is
    res = run_cli("camsim-eval", "debug=fast", "task=pairs", f"ckpt={tuned / 'model.ckpt'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    reports = sorted((tmp_path / "outputs").rglob("report.md"), key=lambda p: p.stat().st_mtime)
    assert "Baseline of a fine-tuned network" in reports[-1].read_text()


def test_transfer_report_says_a_fine_tuned_networks_baseline_is_not_phase_as(frozen, tmp_path):
    """The classifier layer is not fine-tuned, so the baseline through a fine-tuned backbone is another
    baseline than Phase A's: the transfer report says so (and says nothing for the frozen network)."""
    from camsim.eval.transfer import run_transfer
    from tests.test_transfer import _save, make_folder, transfer_cfg

    tuned = ForensicSimilarity.for_finetuning(frozen["ckpt"], {**FINETUNE, "enabled": True})
    root = make_folder(tmp_path / "photos", {"Acme_One": 2, "Bolt_Two": 2})
    notes = {}
    for name, ckpt in (("frozen", frozen["ckpt"]), ("tuned", _save(tuned, tmp_path / "tuned.ckpt"))):
        notes[name] = run_transfer(transfer_cfg(ckpt, root, tmp_path / name, "transfer.bootstrap.reps=5"))["transfer"]["notes"]
    assert any("Fine-tuned network" in n for n in notes["tuned"])
    assert not any("Fine-tuned network" in n for n in notes["frozen"])
