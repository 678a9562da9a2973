"""The learning phases of a camsim job — Phase A, Phase B and its optional fine-tuning — and
:class:`RunState`, what a job's stages hand each other (:mod:`camsim.pipeline` runs them).

Each learning phase is an artefact in ``paths.artefact_dir`` keyed by the hash of the
config parts that determine it, so a sweep's jobs that differ only downstream reuse it:

- ``phase_a-<hash>``: data source, sets A, image split, patch settings, model, ``phase_a``
  optimisation, seed, precision.
- ``phase_b-<hash>``: the Phase A artefact, set B, ``phase_b.feature_layer``, ``similarity``,
  ``phase_b`` optimisation and ``phase_b.seed``, seed (not η: a threshold sweep re-uses one
  trained network); with ``phase_b.finetune.enabled``, a second one adds those settings.

Each learning phase seeds the random generators itself before it trains (``seed``; Phase B
``phase_b.seed`` when set), so a phase comes out the same whether the phases before it were
trained in the same process or reused from the cache.

A phase trains in ``<name>.partial/`` (last.ckpt every epoch, so an interrupted run
resumes) under a lock, and is renamed into place when done. Its entry in run.json, trained or
reused, is written by :func:`record_phase`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import DeviceStatsMonitor, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from camsim.artefacts import atomic_write_json, content_hash, file_lock, lock_path, try_file_lock
from camsim.config import backbone_config, data_fingerprint, feature_layer, to_plain
from camsim.config.schema import TrainerConfig
from camsim.data.datamodules import PairDataModule, PhaseADataModule
from camsim.data.features import FeatureStore, drop_stale_features
from camsim.data.patches import stable_seed
from camsim.lit.checkpoints import AtomicCheckpointIO, RandomState, resume_from
from camsim.lit.phase_a import CameraClassifier
from camsim.lit.phase_b import ForensicSimilarity
from camsim.loggers import ConfusionFigures
from camsim.plots import plot_confusion

log = logging.getLogger("camsim")


@dataclass
class RunState:
    """What the stages hand each other within one job."""

    cfg: DictConfig
    out_dir: Path
    artefact_dir: Path
    #: False (camsim-eval): use trained artefacts only, never train
    train: bool = True
    data: Any = None
    phase_a_dir: Path | None = None
    phase_b_dir: Path | None = None
    #: η of this job's decisions, once resolved (:func:`camsim.pipeline.resolve_eta`)
    eta: float | None = None
    loggers: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@contextmanager
def stage(name: str, summary: dict) -> Iterator[None]:
    """One concise console line per stage with its timing."""
    t0 = time.perf_counter()
    log.info("▶ %s", name)
    yield
    summary.setdefault("timings_s", {})[name] = round(dt := time.perf_counter() - t0, 2)
    log.info("✔ %s (%.1f s)", name, dt)


def rank() -> int:
    """This process's rank in a multi-process (DDP / SLURM) job; 0 alone."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


def job_token() -> str:
    """What the ranks of one job share and other jobs do not: SLURM's job, step and restart count (a
    requeued job is another run), torchrun's run id, else a token rank 0 sets in its environment (Lightning's own launcher starts the other
    ranks from rank 0's process, so they inherit it)."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '')}-{env.get('SLURM_RESTART_COUNT', '0')}"
    if env.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    return env.setdefault("CAMSIM_JOB_TOKEN", f"{os.getpid()}-{time.time_ns()}")


def fit_marker(work: Path) -> Path:
    """The file rank 0 writes beside a phase's ``.partial`` folder (not in it: Lightning warns of a
    non-empty checkpoint folder) once it holds the phase's lock and will train it: the other ranks
    of its job join that fit (:func:`rank0_trains`)."""
    return work.with_name(f".{work.name}.fit-{job_token()}")


def rank0_trains(final: Path, work: Path, poll_s: float = 1.0) -> bool:
    """For a rank > 0: wait for rank 0's decision on a phase — ``True``: it trains it (its
    :func:`fit_marker` is there; join the fit), ``False``: the phase exists (reuse it). Rank 0 may
    first wait for another job that trains the same phase; a rank > 0 that went on alone would
    join the wrong fit."""
    marker, told = fit_marker(work), False
    while True:
        if marker.exists():
            return True
        if final.exists():
            return False
        if not told:
            log.info("  rank %d: waiting for rank 0 to train or reuse %s", rank(), final.name)
            told = True
        time.sleep(poll_s)


def configured_eta(cfg: DictConfig) -> float | None:
    """``eval.eta`` as a number, or ``None`` for ``eta=auto`` (chosen by
    :func:`camsim.pipeline.resolve_eta`)."""
    return None if cfg.eval.eta == "auto" else float(cfg.eval.eta)


def build_callbacks(cfg: DictConfig, with_logger: bool = True) -> list:
    """The ``callbacks`` group's callbacks; without a logger (``logger=none``) those that only
    log (learning-rate and device-stats monitors, which Lightning refuses to run without one)
    are left out."""
    built = [hydra.utils.instantiate(cb) for _, cb in (cfg.get("callbacks") or {}).items()
             if isinstance(cb, DictConfig) and "_target_" in cb]
    return [cb for cb in built if with_logger or not isinstance(cb, (LearningRateMonitor, DeviceStatsMonitor))]


def build_trainer(cfg: DictConfig, max_epochs: int, callbacks: list, loggers: list) -> L.Trainer:
    kwargs = {k: v for k, v in to_plain(cfg.trainer).items() if v is not None}
    kwargs.pop("_target_")
    return L.Trainer(max_epochs=max_epochs,
                     callbacks=[*callbacks, RandomState(), *build_callbacks(cfg, with_logger=bool(loggers))],
                     logger=loggers or False, plugins=[AtomicCheckpointIO()], **kwargs)


def record_phase(st: RunState, name: str, artefact: Path, metrics: dict | None = None) -> None:
    """A learning phase's entry in run.json: its artefact, then what it trained to (``metrics``,
    per-class accuracies left in its metrics.json), or ``reused: true`` when none was trained."""
    tail = {"reused": True} if metrics is None else {k: v for k, v in metrics.items() if k != "per_class_acc"}
    st.summary[name] = {"artefact": str(artefact), **tail}


def _open_phase(st: RunState, kind: str, key: dict, seed: int) -> Path | None:
    """A learning phase's artefact dir, set on ``st``; ``None`` when it exists (reused).
    Otherwise training must be allowed, and the random generators start from ``seed`` — so
    what a phase learns never depends on what ran before it in this process."""
    final = st.artefact_dir / f"{kind}-{content_hash(key)}"
    setattr(st, f"{kind}_dir", final)
    if final.exists():
        log.info("  reusing %s", final)
        record_phase(st, kind, final)
        return None
    if not st.train:
        raise FileNotFoundError(
            f"no trained artefact for this config: {final} does not exist. Train it first with "
            "`camsim-train` and the same overrides, or pass ckpt=<similarity checkpoint>.")
    L.seed_everything(seed, workers=True, verbose=False)
    return final


#: Phase A settings that change neither its data nor its network's maths: not in its artefact key
_PHASE_A_UNKEYED = ("loader", "resume", "compile", "compose_first_layers", "fuse_batch_norm_pool")

#: Trainer settings that change what a phase learns or records — the effective batch (devices,
#: nodes, accumulation), the steps taken, clipping, which epoch is kept, the test batches behind
#: Phase A's test figure. Speed and logging settings (accelerator, strategy, log_every_n_steps,
#: profiler, ...) are not among them.
TRAINER_KEYED = ("devices", "num_nodes", "sync_batchnorm", "use_distributed_sampler", "accumulate_grad_batches",
                 "gradient_clip_val", "check_val_every_n_epoch", "val_check_interval", "limit_train_batches",
                 "limit_val_batches", "limit_test_batches", "precision")


def trainer_key(cfg: DictConfig) -> dict:
    """The :data:`TRAINER_KEYED` settings that differ from their defaults, for a phase's artefact
    key: a smoke test (``trainer.limit_train_batches=5``) never stands in for a full run, while a
    default trainer adds nothing (the key every artefact had before)."""
    default = OmegaConf.structured(TrainerConfig)
    return {k: to_plain(cfg.trainer.get(k)) for k in TRAINER_KEYED
            if to_plain(cfg.trainer.get(k)) != to_plain(default[k])}


def phase_a_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    return {"kind": "phase_a", "requests": [r.key(data.store.settings) for r in data.requests("phase_a")],
            "classes": list(data.split.a), "model": backbone_config(cfg),
            "phase_a": {k: v for k, v in to_plain(cfg.phase_a).items()
                        if k not in _PHASE_A_UNKEYED and not (k == "average_from" and v is None)},
            "batch_size": int(cfg.phase_a.loader.batch_size), "seed": int(cfg.seed),
            "precision": str(cfg.trainer.precision),
            **({"trainer": t} if (t := {k: v for k, v in trainer_key(cfg).items() if k != "precision"}) else {})}


def stage_phase_a(st: RunState) -> None:
    cfg = st.cfg
    key = phase_a_key(st)
    final = _open_phase(st, "phase_a", key, int(cfg.seed))
    if final is None:
        return
    dm = PhaseADataModule(st.data, cfg.phase_a.loader)
    module = CameraClassifier(backbone=backbone_config(cfg), class_names=list(st.data.split.a),
                              patch_size=int(cfg.patches.size), optimizer=to_plain(cfg.phase_a.optimizer),
                              scheduler=to_plain(cfg.phase_a.scheduler), channels_last=bool(cfg.phase_a.channels_last),
                              compile=bool(cfg.phase_a.compile),
                              compose_first_layers=bool(cfg.phase_a.compose_first_layers),
                              fuse_batch_norm_pool=bool(cfg.phase_a.fuse_batch_norm_pool),
                              average_from=cfg.phase_a.average_from)
    _train_phase(st, "phase_a", key, final, module, dm, cfg.phase_a, test=True, extra_callbacks=[ConfusionFigures()],
                 keep_last=cfg.phase_a.average_from is not None)


def _key_settings(node: DictConfig, skip: tuple[str, ...]) -> dict:
    """A phase's settings as its artefact key holds them: without ``skip``, and without ``with_a``,
    ``table_balance`` or ``recompress`` while they are off (the key every artefact had before the options existed)."""
    return {k: v for k, v in to_plain(node).items() if k not in skip and not (k in ("with_a", "table_balance") and not v)
            and not (k == "recompress" and not float(v["share"]))}


def phase_b_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    skip = ("loader", "resume", "feature_pass", "feature_layer", "finetune")
    return {"kind": "phase_b", "phase_a": st.phase_a_dir.name,
            "requests": [r.key(data.store.settings) for r in data.requests("phase_b")],
            "feature_layer": feature_layer(cfg), "similarity": to_plain(cfg.similarity),
            "phase_b": _key_settings(cfg.phase_b, skip),
            "batch_size": int(cfg.phase_b.loader.batch_size), "seed": int(cfg.seed),
            # redrawn pairs come from [seed, epoch] since 2026-12-06 (PairDataset.set_epoch), not
            # seed + epoch: a head trained on the old draws must not stand in for a new one
            **({"epoch_pairs": "seed_sequence"} if cfg.phase_b.resample_pairs else {}),
            **({"trainer": t} if (t := trainer_key(cfg)) else {})}


def phase_b_seed(cfg: DictConfig) -> int:
    """Phase B's seed (head initialisation, dropout, pair draws): ``phase_b.seed``, else ``seed``."""
    return int(cfg.seed if cfg.phase_b.seed is None else cfg.phase_b.seed)


def training_record(st: RunState) -> dict:
    """What a similarity checkpoint keeps of its training: sets A and B (B's models it trained on;
    ``split.b_val``'s, only validated on, apart), the data, the patch settings."""
    cfg, sp = st.cfg, st.data.split
    sets = {"a": list(sp.a), "b": list(sp.b_train), **({"b_val": list(sp.b_val)} if sp.b_val else {}),
            **({"b_with_a": True} if cfg.phase_b.with_a else {}),  # the head's pairs also from A's models
            **({"b_table_balance": True} if cfg.phase_b.table_balance else {})}  # ... balanced by JPEG table
    return {"sets": sets, "data": data_fingerprint(cfg.data),
            "patches": {"size": int(cfg.patches.size), "align": int(cfg.patches.align),
                        "min_entropy": float(cfg.patches.min_entropy)}}


def finetune_key(cfg: DictConfig, key: dict) -> dict | None:
    """The fine-tuned network's artefact key: the frozen stage's ``key`` + ``phase_b.finetune``;
    ``None`` when fine-tuning is off (the frozen network is then Phase B's artefact)."""
    ft = cfg.phase_b.finetune
    return {**key, "finetune": _key_settings(ft, ("enabled", "loader")),
            "finetune_batch_size": int(ft.loader.batch_size)} if ft.enabled else None


def stage_phase_b(st: RunState) -> None:
    """The head on the frozen backbone's cached features; with ``phase_b.finetune.enabled`` then
    fine-tuned end to end, an artefact of its own (the frozen one is shared by every setting)."""
    cfg = st.cfg
    key, seed = phase_b_key(st), phase_b_seed(cfg)
    ft_key = finetune_key(cfg, key)
    if ft_key is None or not (st.artefact_dir / f"phase_b-{content_hash(ft_key)}").exists():
        if (final := _open_phase(st, "phase_b", key, seed)) is not None:
            _train_head(st, key, final, seed)
    if ft_key is not None:
        frozen, ft = st.phase_b_dir, cfg.phase_b.finetune
        if (final := _open_phase(st, "phase_b", ft_key, seed)) is not None:
            module = ForensicSimilarity.for_finetuning(frozen / "model.ckpt", to_plain(ft))
            dm = PairDataModule(st.data, ft.loader, int(ft.train_pairs), int(cfg.phase_b.val_pairs),  # val: the head's
                                seed=stable_seed("finetune", seed) % 2**31, resample=bool(cfg.phase_b.resample_pairs),
                                val_seed=seed + 1, with_a=bool(ft.with_a), table_balance=bool(cfg.phase_b.table_balance))
            pcfg = OmegaConf.create({"max_epochs": ft.max_epochs, "monitor": cfg.phase_b.monitor, "resume": cfg.phase_b.resume})
            with stage("fine-tuning (backbone unfrozen)", st.summary):
                _train_phase(st, "finetune", ft_key, final, module, dm, pcfg, False, dm.callbacks())


def _train_head(st: RunState, key: dict, final: Path, seed: int) -> None:
    cfg = st.cfg
    layer = feature_layer(cfg)
    # the training accuracies are taken at the module's default η = 0.5, not at this job's
    # eval.eta: the network is shared by every job of its key (eval.eta is not in it), so the η
    # it records must not be the one of whichever job happened to train it (+sweep=thresholds)
    module = ForensicSimilarity.from_phase_a(st.phase_a_dir / "model.ckpt", head=to_plain(cfg.similarity),
                                             feature_layer=layer, optimizer=to_plain(cfg.phase_b.optimizer),
                                             scheduler=to_plain(cfg.phase_b.scheduler), training=training_record(st))
    features = extract = None
    if cfg.phase_b.cache_features:
        fs = FeatureStore(st.artefact_dir, module.backbone, st.phase_a_dir.name, layer,
                          **to_plain(cfg.phase_b.feature_pass))
        features, extract = fs.features, fs.extract
    dm = PairDataModule(st.data, cfg.phase_b.loader, int(cfg.phase_b.train_pairs), int(cfg.phase_b.val_pairs),
                        seed=seed, resample=bool(cfg.phase_b.resample_pairs), features=features,
                        with_a=bool(cfg.phase_b.with_a), recompress=to_plain(cfg.phase_b.recompress),
                        extract=extract, table_balance=bool(cfg.phase_b.table_balance))
    _train_phase(st, "phase_b", key, final, module, dm, cfg.phase_b, test=False, extra_callbacks=dm.callbacks())


def monitor_mode(monitor: str) -> str:
    """Whether a phase's best epoch has the highest (``"max"``: accuracy, AUC) or the lowest
    (``"min"``: a loss or an error rate) value of its ``monitor``."""
    last = monitor.rsplit("/", 1)[-1].lower()
    return "min" if any(w in last for w in ("loss", "err", "eer")) else "max"


class EpochMetrics(L.Callback):
    """Each validation's scalar figures (by training step), so that a phase records the validation
    figures of the one it keeps (``best.ckpt``), not of its last; kept in the checkpoints, so a
    resumed phase still knows the validations before the resume."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.by_step[int(trainer.global_step)] = {
                "epoch": float(trainer.current_epoch),
                **{k: float(v) for k, v in trainer.callback_metrics.items() if "/val/" in k and v.numel() == 1}}

    def state_dict(self) -> dict[str, Any]:
        return {"by_step": {int(k): dict(v) for k, v in self.by_step.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.by_step = {int(k): dict(v) for k, v in state.get("by_step", {}).items()}

    def kept(self, monitor: str, best: Any) -> dict[str, Any]:
        """The validation figures of the earliest validation whose ``monitor`` is ``best`` (the
        checkpoint kept), with ``best_epoch``; ``best_epoch: None`` when none matches (a checkpoint
        written before these figures were kept in it): the figures are then the last epoch's."""
        if best is None:
            return {}
        for _, m in sorted(self.by_step.items()):
            if monitor in m and m[monitor] == float(best):
                return self._figures(m)
        return {"best_epoch": None}

    def latest(self) -> dict[str, Any]:
        """The last validation's figures, with its epoch as ``best_epoch``: the figures of a phase
        that keeps its last epoch (Phase A with ``phase_a.average_from``). Where the last epoch did
        not validate (``trainer.check_val_every_n_epoch``, ``limit_val_batches=0``) they are an
        earlier epoch's, or none."""
        return self._figures(self.by_step[max(self.by_step)]) if self.by_step else {}

    @staticmethod
    def _figures(m: dict[str, float]) -> dict[str, Any]:
        """One validation's figures, its epoch as ``best_epoch``."""
        return {**{k: v for k, v in m.items() if k != "epoch"}, "best_epoch": int(m["epoch"])}


def weights_only(method: Any) -> dict[str, bool]:
    """``{"weights_only": True}`` for a Trainer method that takes it (Lightning >= 2.5): a checkpoint it
    resumes or tests from is read as tensors and plain containers (what camsim's checkpoints hold),
    never fully unpickled — torch < 2.6 would otherwise unpickle it whole."""
    return {"weights_only": True} if "weights_only" in inspect.signature(method).parameters else {}


def partial_key_path(work: Path) -> Path:
    """Where an unfinished phase (``<name>.partial``) keeps its key: beside the folder, not in it
    (Lightning warns of a non-empty checkpoint folder), so that :func:`retire_stale_heads` knows
    which Phase A it trains on."""
    return work.with_name(f".{work.name}.key.json")


def retire_stale_heads(root: Path, phase_a_name: str) -> list[Path]:
    """Phase B networks (frozen or fine-tuned) trained on an earlier Phase A artefact of this name:
    a deleted Phase A trained again comes back under its name with other weights, and a head keyed
    by the name would be reused on features it never saw. Finished ones are renamed
    ``<name>.stale-<n>`` (their checkpoints hold their own backbone: ``ckpt=`` still loads them),
    unfinished ones removed; one whose lock another job holds is left, with a warning. Called
    before a new Phase A artefact is published; returns the new paths."""
    moved = []
    for d in sorted(Path(root).glob("phase_b-*")):
        if ".stale-" in d.name or not d.is_dir():
            continue
        unfinished = d.name.endswith(".partial")
        try:
            key = json.loads((partial_key_path(d) if unfinished else d / "key.json").read_text())
        except (OSError, ValueError):
            continue
        if key.get("phase_a") != phase_a_name:
            continue
        final = d.with_name(d.name.removesuffix(".partial"))
        with try_file_lock(lock_path(final)) as mine:
            if not mine:
                log.warning("  %s: trained on an earlier %s, but another job holds its lock: left as it is",
                            d.name, phase_a_name)
                continue
            if unfinished:
                shutil.rmtree(d, ignore_errors=True)
                partial_key_path(d).unlink(missing_ok=True)
                moved.append(d)
                continue
            n = 1
            while (dest := d.with_name(f"{d.name}.stale-{n}")).exists():
                n += 1
            os.replace(d, dest)
            moved.append(dest)
    return moved


def last_checkpoint(folder: Path) -> ModelCheckpoint:
    """The callback that writes a phase's ``last.ckpt`` — its own callback, since Lightning 2.6's
    ``save_last`` writes only when a top-k checkpoint is saved — at the end of every training
    epoch, also in epochs without validation (``trainer.check_val_every_n_epoch`` > 1,
    ``limit_val_batches=0``), where Lightning's default would leave an earlier epoch's."""
    return ModelCheckpoint(dirpath=folder, filename="last", monitor=None, enable_version_counter=False,
                           save_on_train_epoch_end=True)


def _train_phase(st: RunState, name: str, key: dict, final: Path, module: L.LightningModule,
                 dm: L.LightningDataModule, pcfg: DictConfig, test: bool, extra_callbacks: Sequence = (),
                 keep_last: bool = False) -> None:
    """Fit in ``<final>.partial`` (resuming from its last.ckpt), test, then rename into place. The
    phase keeps the checkpoint of its best validation (``pcfg.monitor``), or with ``keep_last`` its
    last epoch's (a weight average is whole only at the end)."""
    cfg = st.cfg
    work = final.with_name(final.name + ".partial")
    with ExitStack() as stack:
        if rank() == 0:  # other DDP ranks join the fit that rank 0 started; they must not wait on the lock
            stack.enter_context(file_lock(lock_path(final)))
            reuse = final.exists()  # another job finished it while we waited
        else:
            reuse = not rank0_trains(final, work)
        if reuse:
            log.info("  reusing %s", final)
            record_phase(st, name, final)
            return
        work.mkdir(parents=True, exist_ok=True)
        marker = fit_marker(work)
        if rank() == 0:  # the other ranks of this job (SLURM, torchrun) join this fit when they see it
            for stale in work.parent.glob(f".{work.name}.fit-*"):
                stale.unlink(missing_ok=True)
            marker.touch()
            atomic_write_json(partial_key_path(work), key)  # an unfinished phase says what it is
        ckpt_cb = ModelCheckpoint(dirpath=work, filename="best", monitor=str(pcfg.monitor),
                                  mode=monitor_mode(str(pcfg.monitor)), auto_insert_metric_name=False,
                                  enable_version_counter=False)
        epochs = EpochMetrics()
        last_cb = last_checkpoint(work)
        trainer = build_trainer(cfg, int(pcfg.max_epochs), [epochs, ckpt_cb, last_cb, *extra_callbacks], st.loggers)
        resume = resume_from([work / "last.ckpt", work / "best.ckpt"]) if pcfg.resume else None
        if resume is not None:
            log.info("  resuming %s from %s", name, resume)
        trainer.fit(module, dm, ckpt_path=None if resume is None else str(resume), **weights_only(trainer.fit))
        best = (None if keep_last else ckpt_cb.best_model_path) or str(work / "last.ckpt")
        # the last epoch's figures, its validation figures replaced by the kept epoch's (kept
        # before a resume: the last epoch's, with no best_epoch)
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics.update(epochs.latest() if keep_last else epochs.kept(str(pcfg.monitor), ckpt_cb.best_model_score))
        if test:
            tested = trainer.test(module, dm, ckpt_path=best, verbose=False, **weights_only(trainer.test))
            metrics.update(tested[0] if tested else {})
            conf = getattr(module, "last_confusion", None)
            if conf is not None and trainer.is_global_zero:
                plot_confusion(conf["matrix"], module.class_names, work / "confusion.png",
                               title=f"{name} test confusion")
                metrics["per_class_acc"] = dict(zip(module.class_names, conf["per_class"].tolist()))
        if trainer.is_global_zero:
            marker.unlink(missing_ok=True)
            for tmp in work.glob(".*.tmp-*"):  # a checkpoint write a killed run left half done
                tmp.unlink(missing_ok=True)
            if name == "phase_a":  # a deleted Phase A trained again: features and heads of the old one go
                for d in drop_stale_features(st.artefact_dir, final.name):
                    log.info("  removed %s: computed by an earlier %s", d.name, final.name)
                for d in retire_stale_heads(st.artefact_dir, final.name):
                    log.warning("  %s: trained on an earlier %s, %s", d.name, final.name,
                                "removed (unfinished)" if not d.exists() else "set aside (not reused)")
            shutil.copyfile(best, work / "model.ckpt")
            atomic_write_json(work / "metrics.json", metrics)
            atomic_write_json(work / "key.json", key)
            os.replace(work, final)
            partial_key_path(work).unlink(missing_ok=True)
        trainer.strategy.barrier()
    record_phase(st, name, final, metrics)
