"""The stages of ``camsim-run``: data → Phase A → Phase B → evaluation (→ report).

Each learning phase is an artefact in ``paths.artefact_dir`` keyed by the hash of the
config parts that determine it, so a sweep's jobs that differ only downstream reuse it:

- ``phase_a-<hash>``: data source, sets A, image split, patch settings, model (minus
  ``feature_layer``), ``phase_a`` optimisation, seed, precision.
- ``phase_b-<hash>``: the Phase A artefact, set B, ``feature_layer``, ``similarity``,
  ``phase_b`` optimisation and ``phase_b.seed``, seed (not η: a threshold sweep re-uses one
  trained network).

Each learning phase seeds the random generators itself before it trains (``seed``; Phase B
``phase_b.seed`` when set), so a phase comes out the same whether the phases before it were
trained in the same process or reused from the cache.

A phase trains in ``<name>.partial/`` (last.ckpt every epoch, so an interrupted run
resumes) under a lock, and is renamed into place when done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from camsim.artefacts import atomic_write_json, content_hash, file_lock, lock_path
from camsim.config import to_plain, validate

log = logging.getLogger("camsim")

STAGES = ("data", "phase_a", "phase_b", "eval")


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
    loggers: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@contextmanager
def stage(name: str, summary: dict):
    """One concise console line per stage with its timing."""
    t0 = time.perf_counter()
    log.info("▶ %s", name)
    yield
    dt = time.perf_counter() - t0
    summary.setdefault("timings_s", {})[name] = round(dt, 2)
    log.info("✔ %s (%.1f s)", name, dt)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


# --------------------------------------------------------------------------- builders


def build_data(cfg: DictConfig):
    from camsim.data.datamodules import CameraData

    source = hydra.utils.instantiate(cfg.data, _convert_="all")
    return CameraData(source, cfg.split, cfg.patches, cfg.paths.artefact_dir)


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that line runs up in W&B: recipe tags, split composition, model, feature layer."""
    def size(v: Any) -> Any:
        return v if isinstance(v, (int, str)) else len(v)

    sp = cfg.split
    choices = _hydra_choices()
    return [*map(str, cfg.get("tags") or []), f"A{size(sp.a)}-B{size(sp.b)}-C{size(sp.c)}",
            f"split_seed={sp.seed}", f"model={choices.get('model', '?')}", f"layer={cfg.model.feature_layer}",
            f"patch={cfg.patches.size}"]


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _wandb_names() -> dict:
    """W&B ``group`` = the sweep (multirun dir), ``name`` = this job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if multirun else "single-runs"
    return {"group": group, "name": hc.job.override_dirname or hc.job.name}


def build_loggers(cfg: DictConfig) -> list:
    """The configured loggers; W&B gets tags, a group per sweep and a name per job unless set."""
    os.environ.setdefault("WANDB_MODE", "offline")  # online only when the user asks
    loggers = []
    for _, lg in (cfg.get("logger") or {}).items():
        if isinstance(lg, DictConfig) and "_target_" in lg:
            extra = {}
            if lg._target_.endswith("WandbLogger"):
                extra = {k: v for k, v in {**_wandb_names(), "tags": run_tags(cfg)}.items() if lg.get(k) is None}
            loggers.append(hydra.utils.instantiate(lg, _convert_="all", **extra))
    return loggers


def build_callbacks(cfg: DictConfig, with_logger: bool = True) -> list:
    """The ``callbacks`` group's callbacks; without a logger (``logger=none``) those that only
    log (learning-rate and device-stats monitors, which Lightning refuses to run without one)
    are left out."""
    from lightning.pytorch.callbacks import DeviceStatsMonitor, LearningRateMonitor

    built = [hydra.utils.instantiate(cb) for _, cb in (cfg.get("callbacks") or {}).items()
             if isinstance(cb, DictConfig) and "_target_" in cb]
    return [cb for cb in built if with_logger or not isinstance(cb, (LearningRateMonitor, DeviceStatsMonitor))]


def build_trainer(cfg: DictConfig, max_epochs: int, callbacks: list, loggers: list) -> L.Trainer:
    kwargs = {k: v for k, v in to_plain(cfg.trainer).items() if v is not None}
    kwargs.pop("_target_")
    return L.Trainer(max_epochs=max_epochs, callbacks=callbacks + build_callbacks(cfg, with_logger=bool(loggers)),
                     logger=loggers or False, **kwargs)


def backbone_config(cfg: DictConfig) -> dict:
    """The ``model`` config without ``feature_layer`` (which only Phase B reads)."""
    return {k: v for k, v in to_plain(cfg.model).items() if k != "feature_layer"}


# --------------------------------------------------------------------------- stages


def stage_data(st: RunState) -> None:
    data = build_data(st.cfg)
    st.data = data
    sp = data.split  # validated first: a bad split fails before any image is read or rendered
    counts = data.index.counts()
    log.info("  source: %d camera models, %d images%s", len(counts), sum(counts.values()),
             f", {len(data.index.skipped)} files skipped" if data.index.skipped else "")
    log.info("  sets: A=%d (known %d) B=%d C=%d", len(sp.a), len(sp.known), len(sp.b), len(sp.c))
    roles = {"phase_a": ["phase_a"], "phase_b": ["phase_a", "phase_b"]}.get(st.cfg.task, ["phase_a", "phase_b", "eval"])
    summary = data.prepare(roles)
    log.info("  patches: %d in %d sets (%d low-entropy cells dropped, %d files skipped)",
             summary["patches"], summary["patch_sets"], summary["low_entropy_dropped"], len(summary["skipped_files"]))
    for name, (got, asked) in summary["short"].items():
        log.warning("  %s: %d of %d patches asked for", name, got, asked)
    st.summary["data"] = {"split": sp.as_dict(), "models": counts, **summary}


def phase_a_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    return {"kind": "phase_a", "requests": [r.key(data.store.settings) for r in data.requests("phase_a")],
            "classes": list(data.split.a), "model": backbone_config(cfg),
            "phase_a": {k: v for k, v in to_plain(cfg.phase_a).items() if k not in ("loader", "resume", "compile")},
            "batch_size": int(cfg.phase_a.loader.batch_size), "seed": int(cfg.seed),
            "precision": str(cfg.trainer.precision)}


def stage_phase_a(st: RunState) -> None:
    from camsim.data.datamodules import PhaseADataModule
    from camsim.lit.phase_a import CameraClassifier

    cfg = st.cfg
    key = phase_a_key(st)
    final = st.artefact_dir / f"phase_a-{content_hash(key)}"
    st.phase_a_dir = final
    if final.exists():
        log.info("  reusing %s", final)
        return
    _require_training(st, final)
    # each phase starts from its own seed, so what it learns never depends on what ran
    # before it in this process (e.g. whether the data stage drew random numbers)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = PhaseADataModule(st.data, cfg.phase_a.loader)
    module = CameraClassifier(backbone=backbone_config(cfg), class_names=list(st.data.split.a),
                              patch_size=int(cfg.patches.size), optimizer=to_plain(cfg.phase_a.optimizer),
                              scheduler=to_plain(cfg.phase_a.scheduler), channels_last=bool(cfg.phase_a.channels_last),
                              compile=bool(cfg.phase_a.compile))
    _train_phase(st, "phase_a", key, final, module, dm, cfg.phase_a, test=True)


def phase_b_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    return {"kind": "phase_b", "phase_a": st.phase_a_dir.name,
            "requests": [r.key(data.store.settings) for r in data.requests("phase_b")],
            "feature_layer": str(cfg.model.feature_layer), "similarity": to_plain(cfg.similarity),
            "phase_b": {k: v for k, v in to_plain(cfg.phase_b).items() if k not in ("loader", "resume", "feature_pass")},
            "batch_size": int(cfg.phase_b.loader.batch_size), "seed": int(cfg.seed)}


def phase_b_seed(cfg: DictConfig) -> int:
    """Phase B's seed (head initialisation, dropout, pair draws): ``phase_b.seed``, else ``seed``."""
    return int(cfg.seed if cfg.phase_b.seed is None else cfg.phase_b.seed)


def stage_phase_b(st: RunState) -> None:
    from camsim.data.datamodules import PairDataModule
    from camsim.data.features import FeatureStore
    from camsim.lit.phase_b import ForensicSimilarity

    cfg = st.cfg
    key = phase_b_key(st)
    final = st.artefact_dir / f"phase_b-{content_hash(key)}"
    st.phase_b_dir = final
    if final.exists():
        log.info("  reusing %s", final)
        return
    _require_training(st, final)
    # seeded here, not only at the start of the job: Phase B must come out the same whether
    # Phase A was trained in this process or reused from the cache
    seed = phase_b_seed(cfg)
    L.seed_everything(seed, workers=True, verbose=False)
    eta = 0.5 if cfg.eval.eta == "auto" else float(cfg.eval.eta)
    module = ForensicSimilarity.from_phase_a(st.phase_a_dir / "model.ckpt", head=to_plain(cfg.similarity),
                                             feature_layer=str(cfg.model.feature_layer), eta=eta,
                                             optimizer=to_plain(cfg.phase_b.optimizer),
                                             scheduler=to_plain(cfg.phase_b.scheduler))
    features = None
    if cfg.phase_b.cache_features:
        fs = FeatureStore(st.artefact_dir, module.backbone, st.phase_a_dir.name, str(cfg.model.feature_layer),
                          **to_plain(cfg.phase_b.feature_pass))
        features = fs.features
    dm = PairDataModule(st.data, cfg.phase_b.loader, int(cfg.phase_b.train_pairs), int(cfg.phase_b.val_pairs),
                        seed=seed, resample=bool(cfg.phase_b.resample_pairs), features=features)
    _train_phase(st, "phase_b", key, final, module, dm, cfg.phase_b, test=False, extra_callbacks=dm.callbacks())


def _require_training(st: RunState, final: Path) -> None:
    if not st.train:
        raise FileNotFoundError(
            f"no trained artefact for this config: {final} does not exist. Train it first with "
            "`camsim-train` and the same overrides, or pass ckpt=<similarity checkpoint>.")


def _train_phase(st: RunState, name: str, key: dict, final: Path, module: L.LightningModule,
                 dm: L.LightningDataModule, pcfg: DictConfig, test: bool, extra_callbacks: list = ()) -> None:
    """Fit in ``<final>.partial`` (resuming from its last.ckpt), test, then rename into place."""
    cfg = st.cfg
    work = final.with_name(final.name + ".partial")
    with ExitStack() as stack:
        if _rank() == 0:  # other DDP ranks join the fit that rank 0 started; they must not wait on the lock
            stack.enter_context(file_lock(lock_path(final)))
        if final.exists():  # another job finished it while we waited
            log.info("  reusing %s", final)
            return
        work.mkdir(parents=True, exist_ok=True)
        ckpt_cb = ModelCheckpoint(dirpath=work, filename="best", monitor=str(pcfg.monitor), mode="max",
                                  auto_insert_metric_name=False, enable_version_counter=False)
        # its own callback: since Lightning 2.6 `save_last` only writes when a top-k checkpoint is saved
        last_cb = ModelCheckpoint(dirpath=work, filename="last", monitor=None, enable_version_counter=False)
        trainer = build_trainer(cfg, int(pcfg.max_epochs), [ckpt_cb, last_cb, *extra_callbacks], st.loggers)
        resume = work / "last.ckpt"
        ckpt_path = str(resume) if pcfg.resume and resume.exists() else None
        if ckpt_path:
            log.info("  resuming %s from %s", name, resume)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        best = ckpt_cb.best_model_path or str(work / "last.ckpt")
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if test:
            tested = trainer.test(module, dm, ckpt_path=best, verbose=False)
            metrics.update(tested[0] if tested else {})
            conf = getattr(module, "last_confusion", None)
            if conf is not None and trainer.is_global_zero:
                from camsim.eval.plots import plot_confusion

                plot_confusion(conf["matrix"], module.class_names, work / "confusion.png",
                               title=f"{name} test confusion")
                metrics["per_class_acc"] = dict(zip(module.class_names, conf["per_class"].tolist()))
        if trainer.is_global_zero:
            shutil.copyfile(best, work / "model.ckpt")
            atomic_write_json(work / "metrics.json", metrics)
            atomic_write_json(work / "key.json", key)
            os.replace(work, final)
        trainer.strategy.barrier()
    st.summary[name] = {"artefact": str(final), **{k: v for k, v in metrics.items() if k != "per_class_acc"}}


def stage_eval(st: RunState) -> dict:
    from camsim.data.datamodules import EvalPairDataModule
    from camsim.data.features import FeatureStore
    from camsim.eval.evaluate import difficulty_check, evaluate_scores, log_to_loggers, scenario_line
    from camsim.eval.metrics import bray_curtis_similarity, choose_eta
    from camsim.lit.phase_b import load_similarity

    cfg = st.cfg
    ckpt = Path(cfg.ckpt) if cfg.get("ckpt") else st.phase_b_dir / "model.ckpt"
    sim = load_similarity(ckpt)
    backbone_id = st.phase_a_dir.name if not cfg.get("ckpt") else content_hash(str(ckpt.resolve()), ckpt.stat().st_mtime_ns)
    fs = FeatureStore(st.artefact_dir, sim.backbone, backbone_id, sim.feature_layer, **to_plain(cfg.phase_b.feature_pass))
    edm = EvalPairDataModule(st.data, cfg.phase_b.loader, int(cfg.eval.pairs_per_cell), int(cfg.eval.seed))
    edm.setup()
    pairs = edm.pairs
    ps = st.data.patch_sets("eval")
    got = [fs.get(ps[(m, "test")]) for m in pairs.models]
    feats = np.concatenate([g[0] for g in got])
    probs = np.concatenate([g[1] for g in got])
    score = sim.score_pairs(feats, pairs.i, pairs.j)
    eta = cfg.eval.eta
    if eta == "auto":
        eta = _auto_eta(st, sim, fs, cfg.eval.eta_rule)
        log.info("  eta chosen on Phase B validation pairs (%s): %.3f", cfg.eval.eta_rule, eta)
    base = bray_curtis_similarity(probs[pairs.i], probs[pairs.j]) if cfg.eval.baseline else None
    pa = {}
    if st.phase_a_dir is not None and (st.phase_a_dir / "metrics.json").exists():
        pa = json.loads((st.phase_a_dir / "metrics.json").read_text())
    extra = {k: v for k, v in pa.items() if k.startswith("phase_a/test/") and "per_class" not in k}
    sections = []

    def with_difficulty(flat: dict) -> None:
        more, text = difficulty_check(st.data, pa, flat, pairs.models)
        flat.update(more)
        sections.append(("Difficulty check: camera traces, not scene statistics", text))

    flat = evaluate_scores(score, base, pairs.model_1, pairs.model_2, pairs.known, float(eta), st.out_dir,
                           list(cfg.eval.sweep_etas), extra_metrics=extra, extra_sections=sections,
                           before_report=with_difficulty)
    np.savez_compressed(st.out_dir / "scores.npz", score=score, baseline=base if base is not None else np.zeros(0),
                        model_1=pairs.model_1.astype(str), model_2=pairs.model_2.astype(str), i=pairs.i, j=pairs.j)
    log_to_loggers(st.loggers, flat, st.out_dir)
    log.info("  proposed: %s", scenario_line(flat))
    if base is not None:
        log.info("  baseline: %s", scenario_line(flat, "baseline"))
    st.summary["eval"] = {k: v for k, v in flat.items() if "/pairs/" not in k}
    return flat


def _auto_eta(st: RunState, sim: Any, fs: Any, rule: str) -> float:
    """η that maximises accuracy (or gives the EER) on Phase B validation pairs (set B)."""
    from camsim.data.datamodules import PairDataModule
    from camsim.eval.metrics import choose_eta

    cfg = st.cfg
    dm = PairDataModule(st.data, cfg.phase_b.loader, 2, int(cfg.phase_b.val_pairs), seed=phase_b_seed(cfg),
                        features=fs.features)
    dm.setup()
    v = dm.val_set
    s = sim.score_pairs(v.items, v.i, v.j)
    return float(choose_eta(s, v.same, rule))


# --------------------------------------------------------------------------- the job


def run(cfg: DictConfig, upto: str = "eval", train: bool = True) -> dict:
    """Run the stages up to ``upto`` for one job; returns the run summary (also run.json).

    ``train=False`` (camsim-eval) uses existing Phase A/B artefacts and fails clearly when
    they are missing; with ``ckpt=<path>`` the learning phases are skipped altogether.
    """
    validate(cfg)
    if upto not in STAGES:
        raise ValueError(f"unknown stage {upto!r}; one of {STAGES}")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st = RunState(cfg, out_dir, Path(cfg.paths.artefact_dir).resolve(), train=train)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    st.loggers = build_loggers(cfg)
    try:
        _log_run_config(st)
        todo = STAGES[: STAGES.index(upto) + 1]
        with stage("data", st.summary):
            stage_data(st)
        if "phase_a" in todo and not (cfg.get("ckpt") and upto == "eval"):
            with stage("Learning Phase A (camera-model classifier on set A)", st.summary):
                stage_phase_a(st)
        if "phase_b" in todo and not cfg.get("ckpt"):
            with stage("Learning Phase B (similarity network on set B)", st.summary):
                stage_phase_b(st)
        if "eval" in todo and _rank() == 0:
            with stage("evaluation (known + unknown camera models)", st.summary):
                stage_eval(st)
        if _rank() == 0:
            atomic_write_json(out_dir / "run.json", st.summary)
            log.info("outputs: %s", out_dir)
    finally:
        _finish_loggers(st.loggers)
    return st.summary


def _log_run_config(st: RunState) -> None:
    """Resolved config and tags (split composition, model, feature layer) to every logger."""
    cfg = st.cfg
    for lg in st.loggers:
        lg.log_hyperparams(to_plain(cfg))


def _finish_loggers(loggers: list) -> None:
    """Close each logger so every job of a multirun is its own, complete run (W&B: finish)."""
    for lg in loggers:
        try:
            lg.finalize("success")
        finally:
            if type(lg).__name__ == "WandbLogger":
                import wandb

                wandb.finish()
