"""The LightningModules of Learning Phase A and B (camsim.lit; issues 5 and 6).

Tiny backbones on 32-px patches and small in-memory data sets, trained for a few steps on
the CPU: the constrained layer under SGD/Adam/gradient accumulation, learning, feature
extraction, checkpoint round trips and resuming, the frozen backbone of Phase B, the
similarity head on a separable toy problem, and the confusion-matrix picture.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from camsim.cli import CONF_DIR
from camsim.data.datamodules import PairDataset, PatchDataset, _already_batched
from camsim.data.store import PatchSet
from camsim.eval.metrics import roc_auc
from camsim.lit.checkpoints import checkpoint_kind
from camsim.lit.phase_a import CameraClassifier, load_classifier
from camsim.loggers import ConfusionFigures
from camsim.models.feature_pass import FeaturePass, extract_features, feature_batch_size
from camsim.lit.phase_b import ForensicSimilarity, load_similarity
from camsim.models.constrained import constraint_violation, project_constrained
from tests.conftest import TINY

P = 32
CLASSES = ["cam_a", "cam_b", "cam_c"]
NOISE = (1.0, 5.0, 12.0)  # the "camera trace": sensor-noise level per camera model
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.005}
STEP_LR = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}
SIMILARITY = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "similarity" / "small.yaml"))
HEAD_ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-6}
EVAL_MODE_WARNING = "in eval mode at the start of training"


# --------------------------------------------------------------------------- helpers


def trainer(**kwargs) -> L.Trainer:
    """A quiet CPU trainer (no logger, no checkpoints unless asked)."""
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    base.update(kwargs)
    if any(isinstance(cb, ModelCheckpoint) for cb in base.get("callbacks", [])):
        base["enable_checkpointing"] = True
    return L.Trainer(**base)


def camera_patches(per_class: int, seed: int) -> PatchDataset:
    """uint8 patches of smooth random scenes plus each camera's sensor noise (separable by σ only)."""
    rng = np.random.default_rng(seed)
    sets = []
    for name, sigma in zip(CLASSES, NOISE):
        low = torch.from_numpy(rng.uniform(40.0, 215.0, size=(per_class, 1, 5, 5)))
        scene = F.interpolate(low, size=(P, P), mode="bicubic", align_corners=True)[:, 0].numpy()
        x = np.clip(np.rint(scene + rng.normal(0.0, sigma, scene.shape)), 0, 255).astype(np.uint8)
        n = len(x)
        sets.append(PatchSet(name, "train", Path(f"mem-{name}"), x, np.zeros(n, np.int64), np.zeros((n, 2), np.int64),
                             np.zeros(n), [], {}))
    return PatchDataset(sets, range(len(CLASSES)))


def checkpoints(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """best.ckpt (by ``monitor``) and last.ckpt, written after every epoch.

    Lightning >= 2.6 writes ``save_last`` only in an epoch where a top-k checkpoint was
    saved (i.e. when ``monitor`` improved), so last.ckpt comes from its own callback.
    """
    best = ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max", auto_insert_metric_name=False)
    last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, enable_version_counter=False)
    return [best, last]


def loader(ds, batch_size: int, shuffle: bool = False) -> DataLoader:
    # PatchDataset / PairDataset return whole batches from __getitems__
    gen = torch.Generator().manual_seed(0) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=_already_batched, generator=gen)


def seeded(fn, *args, seed: int = 0, **kwargs):
    """``fn(*args, **kwargs)`` with torch's global RNG seeded (weight init, dropout) and restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)


def classifier(optimizer: dict | None = None, **kwargs) -> CameraClassifier:
    return seeded(CameraClassifier, TINY, CLASSES, P, optimizer=optimizer or ADAM, **kwargs)


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(before: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    after = module.state_dict()
    assert set(before) == set(after)
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"


class EpochLosses(L.Callback):
    """Mean training loss and accuracy of every epoch, and the epochs that ran."""

    def __init__(self, phase: str = "phase_a") -> None:
        self.phase = phase
        self.loss: list[float] = []
        self.acc: list[float] = []
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loss.append(float(trainer.callback_metrics[f"{self.phase}/train/loss_epoch"]))
        self.acc.append(float(trainer.callback_metrics[f"{self.phase}/train/acc"]))


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):  # conftest.one_thread, for every test here
    yield


@pytest.fixture(scope="module")
def data() -> dict[str, PatchDataset]:
    return {"train": camera_patches(64, seed=0), "val": camera_patches(16, seed=1)}


@pytest.fixture(scope="module")
def phase_a(tmp_path_factory, data) -> dict:
    """A tiny classifier trained for 6 epochs on the noise-level problem, with checkpoints."""
    d = tmp_path_factory.mktemp("phase_a")
    ckpt = checkpoints(d, "phase_a/val/acc")
    hist = EpochLosses()
    model = classifier(ADAM)
    tr = trainer(max_epochs=6, callbacks=[*ckpt, hist])
    seeded(tr.fit, model, loader(data["train"], 32, shuffle=True), loader(data["val"], 64))
    return {"model": model, "trainer": tr, "hist": hist, "last": d / "last.ckpt", "best": Path(ckpt[0].best_model_path)}


# --------------------------------------------------------------------------- Phase A


class ConstraintProbe(L.Callback):
    """Constraint violation of the constrained layer after every training batch and at
    the start of every validation batch (the weights evaluation runs with)."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    @staticmethod
    def _worst(pl_module: L.LightningModule) -> float:
        return max(constraint_violation(pl_module.backbone.constrained.weight))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(self._worst(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        assert not pl_module.training
        self.val.append(self._worst(pl_module))


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_constraint_holds_after_optimiser_steps(data, optimizer, accumulate):
    model = classifier(optimizer)
    w0 = model.backbone.constrained.weight.detach().clone()
    probe = ConstraintProbe()
    tr = trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=1, num_sanity_val_steps=0,
                 accumulate_grad_batches=accumulate, callbacks=[probe])
    seeded(tr.fit, model, loader(data["train"], 16, shuffle=True), loader(data["val"], 16))

    assert tr.global_step == 2 * (3 if accumulate == 2 else 5)  # accumulation took fewer steps
    w = model.backbone.constrained.weight.detach()
    assert not torch.allclose(w, w0), "the optimiser never moved the constrained layer"
    assert len(probe.train) == 10 and len(probe.val) == 2
    assert max(probe.train) < 1e-6 and max(probe.val) < 1e-6
    centre, off = constraint_violation(w)
    assert centre < 1e-6 and off < 1e-6
    # eval mode runs exactly these (projected) kernels: projecting again changes nothing
    model.eval()
    torch.testing.assert_close(project_constrained(w), w, rtol=0, atol=1e-7)
    x = torch.from_numpy(data["val"].take(np.arange(4))).unsqueeze(1)
    with torch.no_grad():
        got = model.backbone.forward_features(x, ["constrained"])["constrained"]
        want = F.conv2d(x.float() / 255.0, project_constrained(w)).mean(dim=(2, 3))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_phase_a_learns_the_camera_trace(phase_a):
    hist = phase_a["hist"]
    assert hist.epochs == list(range(6))
    # chance level is ln 3 = 1.10; a model that does not learn stays there
    assert hist.loss[-1] < 0.35 * hist.loss[0], hist.loss
    assert hist.loss[-1] < 0.3 and hist.acc[-1] > 0.9, (hist.loss, hist.acc)
    assert max(constraint_violation(phase_a["model"].backbone.constrained.weight)) < 1e-6


def test_extract_features_shapes_and_probs(phase_a, data):
    model = phase_a["model"]
    bb = model.backbone
    x = data["val"].take(np.arange(0, 48, 2))  # 24 patches [N, P, P]
    for layer in ["constrained", "conv1.pre", "conv2.pool", "fc_a1.post", "fc_a2.pre", "logits"]:
        f = extract_features(bb, x, layer, batch_size=10)
        assert f.shape == (24, bb.feature_dim(layer)) and f.dtype == np.float32, layer
    assert bb.feature_dim("fc_a2.pre") == 16 and bb.feature_dim("conv2.pool") == 8
    f, p = extract_features(bb, x, "fc_a2.pre", batch_size=7, with_probs=True)
    assert f.shape == (24, 16) and p.shape == (24, len(CLASSES))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (p >= 0).all()
    # batching does not change the features (eval mode: batch-norm running statistics)
    np.testing.assert_allclose(extract_features(bb, x, "fc_a2.pre", batch_size=512), f, rtol=1e-5, atol=1e-6)
    # same pass, same features: probabilities are the softmax of the logits layer
    logits = extract_features(bb, x, "logits")
    np.testing.assert_allclose(p, torch.softmax(torch.from_numpy(logits), 1).numpy(), rtol=1e-5, atol=1e-6)
    # a CameraClassifier works as well, and its training flag is restored
    model.train()
    np.testing.assert_allclose(extract_features(model, x, "fc_a2.pre"), f, rtol=1e-5, atol=1e-6)
    assert model.training and bb.training
    model.eval()
    with pytest.raises(ValueError, match="fc_a9.pre"):
        extract_features(bb, x, "fc_a9.pre")
    empty_f, empty_p = extract_features(bb, x[:0], "fc_a2.pre", with_probs=True)
    assert empty_f.shape == (0, 16) and empty_p.shape == (0, len(CLASSES))


def test_feature_pass_fast_paths_agree_with_eager(phase_a, data):
    """channels_last and compiled (inductor freezing, padded static batch) feature passes give
    the eager reference's features; a padded last batch returns only the real patches."""
    bb = copy.deepcopy(phase_a["model"].backbone)
    x = data["val"].take(np.arange(0, 22))  # 22 = 2 x 8 + 6: the last batch is padded
    layers = ["fc_a2.pre", "logits"]
    ref = FeaturePass(bb, layers, 8, channels_last=False).extract(x)
    for fast in (FeaturePass(copy.deepcopy(bb), layers, 8, channels_last=True),
                 FeaturePass(copy.deepcopy(bb), layers, 8, compile=True)):
        out = fast.extract(x)
        for k in layers:
            assert out[k].shape == ref[k].shape == (22, bb.feature_dim(k))
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size is 8"):
        fast(x[:9])
    assert feature_batch_size(64) == 128 and feature_batch_size(128) == 64 and feature_batch_size(256) == 16
    assert feature_batch_size(10_000) == 1 and feature_batch_size(64, cap=256) == 256


def test_mislnet_small_config_at_64_px():
    """The quick recipe's model file through CameraClassifier: logits and feature widths."""
    cfg = OmegaConf.load(Path(CONF_DIR) / "model" / "mislnet_small.yaml")
    model = seeded(CameraClassifier, cfg, CLASSES, 64)
    model.eval()
    x = np.random.default_rng(0).integers(0, 256, size=(5, 64, 64), dtype=np.uint8)
    with torch.no_grad():
        assert model(torch.from_numpy(x).unsqueeze(1)).shape == (5, len(CLASSES))
    assert extract_features(model, x, "fc_a2.pre").shape == (5, 128)  # the paper's f(X): fc_a2 pre-activation
    assert extract_features(model, x, "conv3.pool").shape == (5, 32)
    assert max(constraint_violation(model.backbone.constrained.weight)) < 1e-6


def test_checkpoint_round_trip_gives_identical_features(phase_a, data, tmp_path):
    model = phase_a["model"]
    x = data["val"].take(np.arange(len(data["val"])))
    for path in (phase_a["last"], phase_a["best"]):
        loaded = load_classifier(path)  # weights_only=True
        assert not loaded.training
        assert loaded.class_names == CLASSES and loaded.hparams.patch_size == P
        assert loaded.hparams.backbone == TINY
        if path == phase_a["last"]:  # last.ckpt holds the final weights
            assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 5
            for layer in ("fc_a2.pre", "conv1.pool", "logits"):
                np.testing.assert_array_equal(extract_features(loaded.backbone, x, layer),
                                              extract_features(model.backbone, x, layer))
        assert max(constraint_violation(loaded.backbone.constrained.weight)) < 1e-6
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_classifier(missing)


def test_checkpoint_of_config_objects_loads_weights_only(data, tmp_path):
    """Hyper-parameters given as OmegaConf nodes (as Hydra hands them over) are saved as
    plain containers, so the checkpoint loads with weights_only=True."""
    model = CameraClassifier(OmegaConf.create(TINY), OmegaConf.create(CLASSES), P,
                             optimizer=OmegaConf.create(SGD), scheduler=OmegaConf.create(STEP_LR))
    tr = trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                 callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    seeded(tr.fit, model, loader(data["train"], 16), loader(data["val"], 16))
    loaded = load_classifier(tmp_path / "last.ckpt")
    assert type(loaded.hparams.backbone) is dict and loaded.hparams.class_names == CLASSES
    assert loaded.hparams.optimizer == SGD


class StartState(L.Callback):
    """Weights and learning rate when training (re)starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.state = state_copy(pl_module)
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


# resuming writes into the directory of the interrupted run, as the pipeline does
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.parametrize("weights_only", [None, True], ids=["default", "weights_only"])
def test_resume_continues_the_epoch_count(data, tmp_path, weights_only):
    train, val = loader(data["train"], 16, shuffle=True), loader(data["val"], 16)
    limits = dict(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    first = classifier(SGD, scheduler=STEP_LR)
    tr = trainer(max_epochs=1, callbacks=checkpoints(tmp_path, "phase_a/val/acc"), **limits)
    seeded(tr.fit, first, train, val)
    last = tmp_path / "last.ckpt"
    saved = state_copy(first)

    resumed = classifier(SGD, scheduler=STEP_LR)  # fresh weights, replaced by the checkpoint's
    hist, start = EpochLosses(), StartState()
    tr = trainer(max_epochs=2, callbacks=[*checkpoints(tmp_path, "phase_a/val/acc"), hist, start], **limits)
    seeded(tr.fit, resumed, train, val, ckpt_path=str(last), weights_only=weights_only)
    assert hist.epochs == [1]  # epoch 0 is not re-run
    assert tr.current_epoch == 2 and tr.global_step == 6
    for k, v in saved.items():
        assert torch.equal(start.state[k], v), f"{k} not restored"
    assert start.lr == pytest.approx(SGD["lr"] * STEP_LR["gamma"])  # the scheduler's state came back too


@pytest.mark.parametrize("with_state", [True, False])
def test_a_resumed_phase_trains_as_an_uninterrupted_one(data, tmp_path, with_state):
    """Killed after epoch 1 and resumed (seeded again, as a job does): with the generators' state
    in the checkpoint (RandomState, every phase has it), epoch 2 shuffles as the uninterrupted run's
    epoch 2 and the weights come out the same; without it, epoch 2 repeats epoch 1's shuffle."""
    from camsim.lit.checkpoints import RandomState

    def fit(max_epochs: int, folder: str, ckpt_path: str | None = None) -> CameraClassifier:
        module = classifier(SGD)
        train = DataLoader(data["train"], batch_size=16, shuffle=True, collate_fn=_already_batched)
        callbacks = [*checkpoints(tmp_path / folder, "phase_a/val/acc"), *([RandomState()] if with_state else [])]
        tr = trainer(max_epochs=max_epochs, callbacks=callbacks, limit_train_batches=3, limit_val_batches=1,
                     num_sanity_val_steps=0)
        seeded(tr.fit, module, train, loader(data["val"], 16), ckpt_path=ckpt_path)
        return module

    whole = fit(2, "whole")
    fit(1, "job")  # killed after its first epoch ...
    resumed = fit(2, "job", ckpt_path=str(tmp_path / "job" / "last.ckpt"))  # ... and run again
    same = all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    assert same == with_state


def test_weight_average_is_the_mean_of_the_steps_and_swaps_back():
    from camsim.lit.phase_a import WeightAverage

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage()
    seen = []
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            for t in [*net.parameters(), net[1].running_mean, net[1].running_var]:
                t.fill_(value)
        seen.append(value)
        avg.update(net)
    assert avg.count == 3
    raw = avg.swap_in(net)
    for t in [*net.parameters(), net[1].running_mean, net[1].running_var]:
        torch.testing.assert_close(t.detach(), torch.full_like(t, 3.0))  # (1 + 2 + 6) / 3
    assert int(net[1].num_batches_tracked) == 0  # integer buffers are not averaged
    avg.swap_out(net, raw)
    assert all(torch.equal(t.detach(), torch.full_like(t, 6.0)) for t in net.parameters())


class BackboneSteps(L.Callback):
    """The backbone's floating-point tensors after every training step of epochs ≥ ``start``."""

    def __init__(self, start: int) -> None:
        self.start, self.states = start, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch >= self.start:
            self.states.append({k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()
                                if v.is_floating_point()})


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_phase_a_weight_average_is_validated_kept_and_resumed(data, tmp_path):
    """``average_from=1``: validation from epoch 1 on, the kept checkpoints and the network left
    after the fit are the mean of the weights after every step of epochs 1 and 2; a run killed
    after epoch 1 and resumed trains on from the trained (not the averaged) weights and ends as
    the uninterrupted run, average and all."""
    from camsim.lit.checkpoints import RandomState

    def fit(max_epochs: int, folder: str, ckpt_path: str | None = None, probe: L.Callback | None = None):
        module = classifier(SGD, average_from=1)
        train = DataLoader(data["train"], batch_size=16, shuffle=True, collate_fn=_already_batched)
        callbacks = [*checkpoints(tmp_path / folder, "phase_a/val/acc"), RandomState(), *([probe] if probe else [])]
        tr = trainer(max_epochs=max_epochs, callbacks=callbacks, limit_train_batches=3, limit_val_batches=1,
                     num_sanity_val_steps=0)
        seeded(tr.fit, module, train, loader(data["val"], 16), ckpt_path=ckpt_path)
        return module

    steps = BackboneSteps(start=1)
    whole = fit(3, "whole", probe=steps)
    assert len(steps.states) == 6 and whole.average.count == 6
    mean = {k: torch.stack([s[k] for s in steps.states]).mean(0) for k in steps.states[0]}
    # the mean of projected kernels meets the constraint up to fp32 rounding, so it is projected once
    # more; this tiny network's kernels (~1e4, summing to 1) make that ill-conditioned: ~1e-3 apart
    mean["constrained.weight"] = project_constrained(mean["constrained.weight"])
    loose = {"constrained.weight": dict(rtol=1e-2, atol=1.0)}
    for k, v in whole.backbone.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, mean[k], **loose.get(k, dict(rtol=1e-5, atol=1e-6)))
    assert not torch.allclose(whole.backbone.blocks.conv1.conv.weight, steps.states[-1]["blocks.conv1.conv.weight"])
    kept = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    for k, v in mean.items():
        torch.testing.assert_close(kept["state_dict"][f"backbone.{k}"], v, **loose.get(k, dict(rtol=1e-5, atol=1e-6)))
    assert max(constraint_violation(whole.backbone.constrained.weight)) < 1e-6  # a mean of projected kernels

    fit(2, "job")  # killed after its second epoch, the average under way ...
    resumed = fit(3, "job", ckpt_path=str(tmp_path / "job" / "last.ckpt"))  # ... and run again
    assert resumed.average.count == 6
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), f"{k} differs after the resume"


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.parametrize("validation", [dict(val_check_interval=0.5), dict(check_val_every_n_epoch=2),
                                        dict(limit_val_batches=0)], ids=["mid_epoch", "every_2nd_epoch", "none"])
def test_weight_average_never_changes_the_training_and_every_last_checkpoint_holds_it(data, tmp_path, validation):
    """However often validation runs (mid-epoch, not every epoch, never), the trained weights step
    for step are those of the same run without averaging, and last.ckpt (written as a phase writes
    it) holds the average of them all."""
    from camsim.phases import last_checkpoint

    def fit(average_from, folder):
        module = classifier(SGD, average_from=average_from)
        steps = BackboneSteps(start=0)
        train = DataLoader(data["train"], batch_size=16, shuffle=True, collate_fn=_already_batched)
        tr = trainer(max_epochs=3, callbacks=[last_checkpoint(tmp_path / folder), steps],
                     limit_train_batches=4, num_sanity_val_steps=0, **{"limit_val_batches": 1, **validation})
        seeded(tr.fit, module, train, loader(data["val"], 16))
        return steps.states

    plain, averaged = fit(None, "plain"), fit(0, "averaged")
    assert len(averaged) == 12
    for a, b in zip(plain, averaged):
        for k in a:
            assert torch.equal(a[k], b[k]), f"{k}: averaging changed the training"
    kept = torch.load(tmp_path / "averaged" / "last.ckpt", weights_only=True)["state_dict"]
    for k in ("blocks.conv1.conv.weight", "fcs.fc_a1.weight", "blocks.conv1.bn.running_mean"):
        want = torch.stack([s[k] for s in averaged]).mean(0)
        torch.testing.assert_close(kept[f"backbone.{k}"], want, rtol=1e-5, atol=1e-6)


def test_weight_average_is_off_by_default_and_a_bad_epoch_is_named():
    from camsim.config.checks import validate
    from tests.conftest import compose_cfg

    cfg = compose_cfg([])
    assert cfg.phase_a.average_from is None
    with pytest.raises(ValueError, match=r"phase_a.average_from=10: the epoch \(0 to phase_a.max_epochs - 1 = 9\)"):
        validate(compose_cfg(["phase_a.average_from=10"]))


def test_channels_last_gives_the_same_logits(data):
    ref = classifier()
    cl = classifier(channels_last=True, compile=False)
    cl.load_state_dict(ref.state_dict())
    ref.eval(), cl.eval()
    x = torch.from_numpy(data["val"].take(np.arange(12)))
    with torch.no_grad():
        for batch in (x.unsqueeze(1), x):  # [N, 1, P, P] and [N, P, P]
            torch.testing.assert_close(cl(batch), ref(batch), rtol=0, atol=1e-5)
    # and it trains
    cl.train()
    probe = ConstraintProbe()
    tr = trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[probe])
    seeded(tr.fit, cl, loader(data["train"], 16), loader(data["val"], 16))
    assert tr.global_step == 2 and max(probe.train + probe.val) < 1e-6


def test_composed_first_layers_train_as_the_plain_classifier(data):
    """phase_a.compose_first_layers and fuse_batch_norm_pool (Phase A's defaults): the constrained
    layer and conv1 trained as one convolution, and each block's batch norm and pooling as one step,
    end up at the weights and running statistics the plain layers reach (fp32 rounding apart); a
    backbone without a constrained layer trains as it is."""
    ref = classifier(optimizer=SGD)
    comp = classifier(optimizer=SGD, compose_first_layers=True, fuse_batch_norm_pool=True)
    assert comp.backbone.compose_first_layers and not ref.backbone.compose_first_layers
    assert comp.backbone.fuse_batch_norm_pool and not ref.backbone.fuse_batch_norm_pool
    assert torch.equal(comp.backbone.constrained.weight, ref.backbone.constrained.weight)
    for model in (ref, comp):
        tr = trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
        seeded(tr.fit, model, loader(data["train"], 16), loader(data["val"], 16))
    moved = comp.backbone.constrained.weight - seeded(classifier, optimizer=SGD).backbone.constrained.weight
    assert moved.abs().max() > 1e-4  # it trained
    for (name, a), b in zip(ref.state_dict().items(), comp.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    bare = seeded(CameraClassifier, {**TINY, "constrained": None}, CLASSES, P, compose_first_layers=True)
    assert not bare.backbone.compose_first_layers


def test_confusion_matrix_logging(phase_a, data, tmp_path):
    # no logger (the fixture's fit): the matrix is kept for the caller, nothing is written
    conf = phase_a["model"].last_confusion
    assert conf["stage"] == "val" and conf["matrix"].shape == (3, 3)
    assert conf["matrix"].sum() == len(data["val"])  # the last validation epoch only
    assert set(phase_a["trainer"].callback_metrics) >= {f"phase_a/val/acc_per_class/{c}" for c in CLASSES}
    # CSV logger + the pipeline's ConfusionFigures callback: a PNG in the logger's directory,
    # for validation and test
    logger = CSVLogger(tmp_path, name="csv", version="")
    model = classifier()
    tr = trainer(max_epochs=1, limit_train_batches=2, logger=logger, callbacks=[ConfusionFigures()])
    seeded(tr.fit, model, loader(data["train"], 16), loader(data["val"], 16))
    png = Path(logger.log_dir) / "phase_a_val_confusion.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the module's own hyper-parameters stay out of the loggers: the pipeline logs the run's whole
    # config there, and W&B / CSV replace top-level keys (Phase B's "phase_a" replaced the config's)
    hp = Path(logger.log_dir) / "hparams.yaml"
    assert not hp.exists() or "class_names" not in hp.read_text()
    tr.test(model, loader(data["val"], 16), verbose=False)
    assert (Path(logger.log_dir) / "phase_a_test_confusion.png").is_file()
    assert model.last_confusion["stage"] == "test" and model.last_confusion["matrix"].sum() == len(data["val"])


def test_confusion_figures_every_epoch_for_history_loggers_once_for_file_loggers(data, tmp_path, monkeypatch):
    """W&B / TensorBoard keep each validation's picture; a CSV logger's file would be overwritten
    each epoch, so it gets the last validation's, drawn once at the end of training."""
    import camsim.loggers as loggers_mod
    from lightning.pytorch.loggers.logger import DummyLogger

    class TensorBoardLogger(DummyLogger):  # stands for the real one: the callback goes by the class name
        pass

    drawn = []
    monkeypatch.setattr(loggers_mod, "log_figure", lambda lgs, key, fig, step: drawn.append(
        (key, sorted(type(lg).__name__ for lg in lgs), step)))
    monkeypatch.setattr(loggers_mod, "plot_confusion", lambda *a: None)
    model = classifier()
    tr = trainer(max_epochs=3, limit_train_batches=2, logger=[CSVLogger(tmp_path, name="csv", version=""),
                                                                TensorBoardLogger()],
                 callbacks=[ConfusionFigures()], num_sanity_val_steps=2)
    seeded(tr.fit, model, loader(data["train"], 16), loader(data["val"], 16))
    assert drawn == [("phase_a/val/confusion", ["TensorBoardLogger"], 2), ("phase_a/val/confusion", ["TensorBoardLogger"], 4),
                     ("phase_a/val/confusion", ["TensorBoardLogger"], 6), ("phase_a/val/confusion", ["CSVLogger"], 6)]
    tr.test(model, loader(data["val"], 16), verbose=False)
    assert drawn[-1] == ("phase_a/test/confusion", ["CSVLogger", "TensorBoardLogger"], 6)


@pytest.mark.parametrize("every", [1, 3])
def test_training_metrics_logged_at_the_loggers_cadence_with_exact_epoch_means(data, tmp_path, every):
    """The step loss reaches the loggers every ``log_every_n_steps`` steps; each epoch's
    ``loss_epoch`` is the mean of all its steps' losses and ``acc`` its accuracy, as
    Lightning's per-step ``on_epoch`` logging gave them."""
    import csv

    class StepRecord(L.Callback):
        def __init__(self) -> None:
            self.loss: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.loss.append(float(outputs["loss"]))

    rec = StepRecord()
    logger = CSVLogger(tmp_path, name="csv", version="")
    model = classifier()
    tr = trainer(max_epochs=2, logger=logger, log_every_n_steps=every, callbacks=[rec])
    seeded(tr.fit, model, loader(data["train"], 16), loader(data["val"], 16))
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("phase_a/train/loss_step")]
    n = len(rec.loss) // 2  # steps per epoch (equal batches)
    assert n > every and steps == [s for s in range(2 * n) if (s + 1) % every == 0]
    logged = {int(r["step"]): float(r["phase_a/train/loss_step"]) for r in rows if r.get("phase_a/train/loss_step")}
    assert all(logged[s] == pytest.approx(rec.loss[s], rel=1e-6) for s in logged)
    epochs = [float(r["phase_a/train/loss_epoch"]) for r in rows if r.get("phase_a/train/loss_epoch")]
    assert epochs == pytest.approx([np.mean(rec.loss[:n]), np.mean(rec.loss[n:])], rel=1e-6)
    accs = [float(r["phase_a/train/acc"]) for r in rows if r.get("phase_a/train/acc")]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert set(tr.callback_metrics) >= {"phase_a/train/loss_epoch", "phase_a/train/acc", "phase_a/val/acc"}
    # a fit stopped by max_steps inside an epoch still logs that epoch's means
    rec2, model2 = StepRecord(), classifier()
    tr2 = trainer(max_steps=n + 2, logger=False, log_every_n_steps=every, callbacks=[rec2])
    seeded(tr2.fit, model2, loader(data["train"], 16), loader(data["val"], 16))
    assert len(rec2.loss) == n + 2
    assert float(tr2.callback_metrics["phase_a/train/loss_epoch"]) == pytest.approx(np.mean(rec2.loss[n:]), rel=1e-6)


def test_missing_optimizer_is_named(data):
    model = CameraClassifier(TINY, CLASSES, P)
    with pytest.raises(ValueError, match="phase_a.optimizer"):
        model.configure_optimizers()


def test_quick_recipe_swaps_the_scheduler_class():
    """A recipe replaces the default StepLR by CosineAnnealingLR; its null keys drop StepLR's arguments."""
    from tests.conftest import compose_cfg

    cfg = compose_cfg()
    model = CameraClassifier(TINY, CLASSES, P, optimizer=OmegaConf.to_container(cfg.phase_a.optimizer, resolve=True),
                             scheduler=OmegaConf.to_container(cfg.phase_a.scheduler, resolve=True))
    conf = model.configure_optimizers()
    sched = conf["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == cfg.phase_a.max_epochs
    assert conf["optimizer"].param_groups[0]["lr"] == cfg.phase_a.optimizer.lr


# --------------------------------------------------------------------------- Phase B


def pair_loaders(items, labels: np.ndarray, val_items, val_labels: np.ndarray, n_train: int, n_val: int,
                 batch_size: int) -> tuple[DataLoader, DataLoader]:
    train = PairDataset(items, labels, n_train, seed=0)
    val = PairDataset(val_items, val_labels, n_val, seed=1)
    return loader(train, batch_size, shuffle=True), loader(val, 256)


def eval_mode_filters() -> list:
    """Warning filters about Lightning's eval-mode warning currently installed."""
    return [f for f in warnings.filters if f[1] is not None and EVAL_MODE_WARNING in f[1].pattern]


@pytest.mark.parametrize("batches", ["features", "patches"])
def test_phase_b_keeps_the_backbone_frozen(phase_a, data, batches, recwarn):
    model = ForensicSimilarity.from_phase_a(phase_a["last"], head=SIMILARITY, feature_layer="fc_a2.pre",
                                            optimizer=HEAD_ADAM)
    before = state_copy(model.backbone)
    head_before = state_copy(model.head)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())
    tr_set, va_set = data["train"], data["val"]
    if batches == "features":
        items = extract_features(model.backbone, tr_set.take(np.arange(len(tr_set))), "fc_a2.pre")
        val_items = extract_features(model.backbone, va_set.take(np.arange(len(va_set))), "fc_a2.pre")
    else:  # uint8 patches: the frozen backbone runs in every step
        items, val_items = tr_set, va_set
    train, val = pair_loaders(items, tr_set.labels, val_items, va_set.labels, 96, 64, 32)
    sample = next(iter(train))
    assert sample[0].dtype == (torch.float32 if batches == "features" else torch.uint8)

    tr = trainer(max_epochs=2, limit_val_batches=1)
    seeded(tr.fit, model, train, val)
    assert tr.global_step == 6
    assert_state_equal(before, model.backbone)  # weights and running_mean/var/num_batches_tracked
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items()), "head did not train"
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    opt_ids = {id(p) for g in tr.optimizers[0].param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in model.head.parameters()} and not (opt_ids & backbone_ids)
    assert all(p.grad is None for p in model.backbone.parameters())
    model.train()
    assert not any(m.training for m in model.backbone.modules()) and model.head.training
    # the frozen backbone's eval mode is expected: Lightning's warning about it is silenced
    assert not [w for w in recwarn if EVAL_MODE_WARNING in str(w.message)]
    assert not eval_mode_filters(), "the silencing filter outlived the fit"


def test_phase_b_still_warns_about_a_head_in_eval_mode(phase_a, data):
    model = ForensicSimilarity.from_phase_a(phase_a["last"], head=SIMILARITY, feature_layer="fc_a2.pre",
                                            optimizer=HEAD_ADAM)
    model.eval()  # a user mistake: dropout off while training
    feats = extract_features(model.backbone, data["val"].take(np.arange(len(data["val"]))), "fc_a2.pre")
    train, val = pair_loaders(feats, data["val"].labels, feats, data["val"].labels, 32, 32, 32)
    with pytest.warns(UserWarning, match=EVAL_MODE_WARNING):
        seeded(trainer(max_epochs=1, limit_val_batches=0).fit, model, train, val)
    assert not eval_mode_filters()


def toy_features(per_camera: int, seed: int, dim: int = 16, cameras: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``cameras`` cameras, each a mixture of two Gaussian clusters (fixed centres)."""
    centres = np.random.default_rng(1234).normal(0.0, 1.0, size=(cameras, 2, dim))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(cameras), per_camera)
    which = rng.integers(0, 2, size=len(labels))
    f = centres[labels, which] + rng.normal(0.0, 0.25, size=(len(labels), dim))
    return f.astype(np.float32), labels


@pytest.fixture(scope="module")
def phase_b(phase_a, tmp_path_factory) -> dict:
    """A similarity head trained on the toy features, with its checkpoint."""
    d = tmp_path_factory.mktemp("phase_b")
    model = ForensicSimilarity.from_phase_a(phase_a["last"], head=SIMILARITY, feature_layer="fc_a2.pre",
                                            optimizer=HEAD_ADAM)
    f, y = toy_features(100, seed=0)
    vf, vy = toy_features(40, seed=1)
    train, val = pair_loaders(f, y, vf, vy, 2048, 1024, 128)
    tr = trainer(max_epochs=6, callbacks=checkpoints(d, "phase_b/val/auc"))
    seeded(tr.fit, model, train, val)
    return {"model": model, "trainer": tr, "last": d / "last.ckpt", "val": (vf, vy)}


def test_phase_b_head_learns_a_separable_problem(phase_b):
    metrics = phase_b["trainer"].callback_metrics
    assert float(metrics["phase_b/val/auc"]) > 0.9, metrics
    assert float(metrics["phase_b/val/acc"]) > 0.8, metrics
    # the same figure from score_pairs on fresh pairs
    vf, vy = phase_b["val"]
    pairs = PairDataset(vf, vy, 2000, seed=7)
    s = phase_b["model"].score_pairs(vf, pairs.i, pairs.j)
    assert roc_auc(s, pairs.same.astype(bool)) > 0.9


def test_load_similarity_round_trip_and_score_pairs(phase_b, phase_a, data, tmp_path):
    model = phase_b["model"]
    vf, vy = phase_b["val"]
    pairs = PairDataset(vf, vy, 300, seed=3)
    model.train()
    s = model.score_pairs(vf, pairs.i, pairs.j, batch_size=64)
    assert model.head.training, "score_pairs left the model in eval mode"
    assert s.shape == (300,) and s.dtype == np.float32 and ((s >= 0) & (s <= 1)).all()
    model.eval()
    with torch.no_grad():
        direct = torch.sigmoid(model(torch.from_numpy(vf[pairs.i]), torch.from_numpy(vf[pairs.j]))).numpy()
    np.testing.assert_allclose(s, direct, rtol=1e-6, atol=1e-7)

    loaded = load_similarity(phase_b["last"])  # weights_only=True
    assert not loaded.training and loaded.feature_layer == "fc_a2.pre" and loaded.patch_size == P
    np.testing.assert_array_equal(loaded.score_pairs(vf, pairs.i, pairs.j), model.score_pairs(vf, pairs.i, pairs.j))
    assert_state_equal(state_copy(model), loaded)
    # patches go through the (frozen, loaded) backbone: the same as features then head
    x = torch.from_numpy(data["val"].take(np.arange(8))).unsqueeze(1)
    with torch.no_grad():
        via_patches = loaded(x[:4], x[4:])
        via_features = loaded.head(loaded.features(x[:4]), loaded.features(x[4:]))
    torch.testing.assert_close(via_patches, via_features, rtol=0, atol=0)
    # the feature pass runs channels_last (other convolution kernels): equal up to fp32 rounding
    np.testing.assert_allclose(loaded.features(x).numpy(),
                               extract_features(load_classifier(phase_a["last"]).backbone, x[:, 0].numpy(), "fc_a2.pre"),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.features(x).numpy(),
                                  extract_features(load_classifier(phase_a["last"]).backbone, x[:, 0].numpy(), "fc_a2.pre",
                                                   channels_last=False))
    assert loaded.score_pairs(vf, pairs.i[:0], pairs.j[:0]).shape == (0,)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_similarity(tmp_path / "missing.ckpt")


def test_checkpoint_of_the_wrong_kind_or_truncated_is_one_clear_error(phase_a, tmp_path):
    """A Phase A checkpoint where a similarity network is needed (and the reverse), a truncated
    file and a file that is no checkpoint: ValueError naming the file and what is needed."""
    with pytest.raises(ValueError, match="Phase A camera-model classifier checkpoint; a Phase B similarity"):
        load_similarity(phase_a["last"])
    assert checkpoint_kind(phase_a["last"]) == "phase_a"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(Path(phase_a["last"]).read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.ckpt: not a readable checkpoint .truncated or corrupt"):
        load_classifier(cut)
    junk = tmp_path / "junk.ckpt"
    torch.save({"hyper_parameters": {"lr": 1}}, junk)
    with pytest.raises(ValueError, match="junk.ckpt: not a camsim checkpoint"):
        load_similarity(junk)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_phase_b_resume_with_weights_only(phase_a, tmp_path):
    """A Phase B last.ckpt (Adam state, frozen backbone) resumes under weights_only=True."""
    f, y = toy_features(20, seed=0)
    train, val = pair_loaders(f, y, f, y, 128, 128, 64)
    first = ForensicSimilarity.from_phase_a(phase_a["last"], head=SIMILARITY, feature_layer="fc_a2.pre",
                                            optimizer=HEAD_ADAM)
    seeded(trainer(max_epochs=1, callbacks=checkpoints(tmp_path, "phase_b/val/auc")).fit, first, train, val)
    saved = state_copy(first)
    resumed = ForensicSimilarity.from_phase_a(phase_a["last"], head=SIMILARITY, feature_layer="fc_a2.pre",
                                              optimizer=HEAD_ADAM)
    hist, start = EpochLosses("phase_b"), StartState()
    tr = trainer(max_epochs=2, callbacks=[*checkpoints(tmp_path, "phase_b/val/auc"), hist, start])
    seeded(tr.fit, resumed, train, val, ckpt_path=str(tmp_path / "last.ckpt"), weights_only=True)
    assert hist.epochs == [1] and tr.current_epoch == 2 and tr.global_step == 4
    for k, v in saved.items():
        assert torch.equal(start.state[k], v), f"{k} not restored"
    assert not any(m.training for m in resumed.backbone.modules())
