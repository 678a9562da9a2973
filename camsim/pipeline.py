"""The stages of a camsim job: data → Learning Phase A → Learning Phase B → evaluation and/or
the splicing benchmark. ``camsim-run``, ``camsim-train`` and ``camsim-eval`` run a sequence of
them through :func:`run`.

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
resumes) under a lock, and is renamed into place when done.
"""

from __future__ import annotations

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
import numpy as np
from lightning.pytorch.callbacks import DeviceStatsMonitor, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from camsim.artefacts import atomic_write_json, cached_dir, content_hash, file_lock, lock_path
from camsim.config import backbone_config, data_fingerprint, feature_layer, to_plain, validate
from camsim.data.datamodules import CameraData, EvalPairDataModule, PairDataModule, PhaseADataModule
from camsim.data.features import FeatureStore, checkpoint_backbone_id
from camsim.data.sources import SynthSource
from camsim.data.patches import stable_seed
from camsim.data.store import log_skipped
from camsim.eval.difficulty import difficulty_check
from camsim.eval.evaluate import evaluate_scores, scenario_line, scenario_table, write_evaluation
from camsim.eval.metrics import bray_curtis_similarity, choose_eta
from camsim.eval.splicing import ImageSet, authentic_records, real_records, splicing_benchmark
from camsim.lit.checkpoints import AtomicCheckpointIO, resume_from
from camsim.lit.phase_a import CameraClassifier, build_backbone, load_classifier
from camsim.lit.phase_b import ForensicSimilarity, finetune_modules, load_similarity
from camsim.localize.run import Localizer
from camsim.loggers import ConfusionFigures, build_loggers, finish_loggers, log_evaluation
from camsim.plots import plot_confusion
from camsim.synth.splice import load_splices, render_splices
from camsim.synth.settings import cache_key as synth_cache_key

log = logging.getLogger("camsim")

STAGES = ("data", "phase_a", "phase_b", "eval", "splicing")
#: what each entry point runs
JOBS = {"run": ("data", "phase_a", "phase_b", "eval"), "phase_a": ("data", "phase_a"),
        "phase_b": ("data", "phase_a", "phase_b"), "pairs": ("data", "phase_a", "phase_b", "eval"),
        "splicing": ("data", "phase_a", "phase_b", "splicing")}


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
    #: η of this job's decisions, once resolved (:func:`resolve_eta`)
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


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", 0))))


# --------------------------------------------------------------------------- config


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked before any work: the schema's extra rules and that the
    backbone builds and has the feature layer (a typo fails here, not after Phase A)."""
    validate(cfg)
    backbone = build_backbone(backbone_config(cfg), 2, int(cfg.patches.size))
    layer = feature_layer(cfg)
    try:
        backbone.feature_dim(layer)
    except (KeyError, ValueError) as err:
        raise ValueError(f"phase_b.feature_layer={layer!r}: {err}") from err
    if cfg.phase_b.finetune.enabled:
        finetune_modules(backbone, cfg.phase_b.finetune.from_layer, layer)  # a bad from_layer fails here


def configured_eta(cfg: DictConfig) -> float | None:
    """``eval.eta`` as a number, or ``None`` for ``eta=auto`` (chosen by :func:`resolve_eta`)."""
    return None if cfg.eval.eta == "auto" else float(cfg.eval.eta)


# --------------------------------------------------------------------------- builders


def build_data(cfg: DictConfig) -> CameraData:
    source = hydra.utils.instantiate(cfg.data, _convert_="all")
    return CameraData(source, cfg.split, cfg.patches, cfg.paths.artefact_dir)


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
    return L.Trainer(max_epochs=max_epochs, callbacks=callbacks + build_callbacks(cfg, with_logger=bool(loggers)),
                     logger=loggers or False, plugins=[AtomicCheckpointIO()], **kwargs)


# --------------------------------------------------------------------------- stages


def stage_data(st: RunState, stages: Sequence[str]) -> None:
    data = build_data(st.cfg)
    st.data = data
    sp = data.split  # validated first: a bad split fails before any image is read or rendered
    counts = data.index.counts()
    log.info("  source: %d camera models, %d images", len(counts), sum(counts.values()))
    log.info("  sets: A=%d (known %d) B=%d C=%d", len(sp.a), len(sp.known), len(sp.b), len(sp.c))
    roles = [r for r in ("phase_a", "phase_b", "eval") if r in stages]
    summary = data.prepare(roles)
    log_skipped(summary["skipped_files"], log)
    log.info("  patches: %d in %d sets (%d low-entropy cells dropped, %d files skipped)",
             summary["patches"], summary["patch_sets"], summary["low_entropy_dropped"], len(summary["skipped_files"]))
    for name, (got, asked) in summary["short"].items():
        log.warning("  %s: %d of %d patches asked for", name, got, asked)
    st.summary["data"] = {"split": sp.as_dict(), "models": counts, **summary}


def _open_phase(st: RunState, kind: str, key: dict, seed: int) -> Path | None:
    """A learning phase's artefact dir, set on ``st``; ``None`` when it exists (reused).
    Otherwise training must be allowed, and the random generators start from ``seed`` — so
    what a phase learns never depends on what ran before it in this process."""
    final = st.artefact_dir / f"{kind}-{content_hash(key)}"
    setattr(st, f"{kind}_dir", final)
    if final.exists():
        log.info("  reusing %s", final)
        st.summary[kind] = {"artefact": str(final), "reused": True}
        return None
    if not st.train:
        raise FileNotFoundError(
            f"no trained artefact for this config: {final} does not exist. Train it first with "
            "`camsim-train` and the same overrides, or pass ckpt=<similarity checkpoint>.")
    L.seed_everything(seed, workers=True, verbose=False)
    return final


def phase_a_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    return {"kind": "phase_a", "requests": [r.key(data.store.settings) for r in data.requests("phase_a")],
            "classes": list(data.split.a), "model": backbone_config(cfg),
            "phase_a": {k: v for k, v in to_plain(cfg.phase_a).items() if k not in ("loader", "resume", "compile")},
            "batch_size": int(cfg.phase_a.loader.batch_size), "seed": int(cfg.seed),
            "precision": str(cfg.trainer.precision)}


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
                              compile=bool(cfg.phase_a.compile))
    _train_phase(st, "phase_a", key, final, module, dm, cfg.phase_a, test=True, extra_callbacks=[ConfusionFigures()])


def phase_b_key(st: RunState) -> dict:
    cfg, data = st.cfg, st.data
    skip = ("loader", "resume", "feature_pass", "feature_layer", "finetune")
    return {"kind": "phase_b", "phase_a": st.phase_a_dir.name,
            "requests": [r.key(data.store.settings) for r in data.requests("phase_b")],
            "feature_layer": feature_layer(cfg), "similarity": to_plain(cfg.similarity),
            "phase_b": {k: v for k, v in to_plain(cfg.phase_b).items() if k not in skip},
            "batch_size": int(cfg.phase_b.loader.batch_size), "seed": int(cfg.seed)}


def phase_b_seed(cfg: DictConfig) -> int:
    """Phase B's seed (head initialisation, dropout, pair draws): ``phase_b.seed``, else ``seed``."""
    return int(cfg.seed if cfg.phase_b.seed is None else cfg.phase_b.seed)


def training_record(st: RunState) -> dict:
    """What a similarity checkpoint keeps of its training: sets A and B (B's models it trained on;
    ``split.b_val``'s, only validated on, apart), the data, the patch settings."""
    cfg, sp = st.cfg, st.data.split
    sets = {"a": list(sp.a), "b": list(sp.b_train), **({"b_val": list(sp.b_val)} if sp.b_val else {})}
    return {"sets": sets, "data": data_fingerprint(cfg.data),
            "patches": {"size": int(cfg.patches.size), "align": int(cfg.patches.align),
                        "min_entropy": float(cfg.patches.min_entropy)}}


def finetune_key(cfg: DictConfig, key: dict) -> dict | None:
    """The fine-tuned network's artefact key: the frozen stage's ``key`` + ``phase_b.finetune``;
    ``None`` when fine-tuning is off (the frozen network is then Phase B's artefact)."""
    ft = cfg.phase_b.finetune
    return {**key, "finetune": {k: v for k, v in to_plain(ft).items() if k not in ("enabled", "loader")},
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
                                val_seed=seed + 1)
            pcfg = OmegaConf.create({"max_epochs": ft.max_epochs, "monitor": cfg.phase_b.monitor, "resume": cfg.phase_b.resume})
            with stage("fine-tuning (backbone unfrozen)", st.summary):
                _train_phase(st, "finetune", ft_key, final, module, dm, pcfg, False, dm.callbacks())


def _train_head(st: RunState, key: dict, final: Path, seed: int) -> None:
    cfg = st.cfg
    layer = feature_layer(cfg)
    eta = configured_eta(cfg)
    module = ForensicSimilarity.from_phase_a(st.phase_a_dir / "model.ckpt", head=to_plain(cfg.similarity),
                                             feature_layer=layer, optimizer=to_plain(cfg.phase_b.optimizer),
                                             scheduler=to_plain(cfg.phase_b.scheduler), training=training_record(st),
                                             **({} if eta is None else {"eta": eta}))
    features = None
    if cfg.phase_b.cache_features:
        fs = FeatureStore(st.artefact_dir, module.backbone, st.phase_a_dir.name, layer,
                          **to_plain(cfg.phase_b.feature_pass))
        features = fs.features
    dm = PairDataModule(st.data, cfg.phase_b.loader, int(cfg.phase_b.train_pairs), int(cfg.phase_b.val_pairs),
                        seed=seed, resample=bool(cfg.phase_b.resample_pairs), features=features)
    _train_phase(st, "phase_b", key, final, module, dm, cfg.phase_b, test=False, extra_callbacks=dm.callbacks())


def _train_phase(st: RunState, name: str, key: dict, final: Path, module: L.LightningModule,
                 dm: L.LightningDataModule, pcfg: DictConfig, test: bool, extra_callbacks: Sequence = ()) -> None:
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
        resume = resume_from([work / "last.ckpt", work / "best.ckpt"]) if pcfg.resume else None
        if resume is not None:
            log.info("  resuming %s from %s", name, resume)
        trainer.fit(module, dm, ckpt_path=None if resume is None else str(resume))
        best = ckpt_cb.best_model_path or str(work / "last.ckpt")
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if test:
            tested = trainer.test(module, dm, ckpt_path=best, verbose=False)
            metrics.update(tested[0] if tested else {})
            conf = getattr(module, "last_confusion", None)
            if conf is not None and trainer.is_global_zero:
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


def similarity_checkpoint(st: RunState) -> Path:
    """The similarity network of this job: ``ckpt=`` when given, else the one Phase B trained."""
    return Path(st.cfg.ckpt) if st.cfg.get("ckpt") else st.phase_b_dir / "model.ckpt"


def _feature_store(st: RunState, sim: ForensicSimilarity) -> FeatureStore:
    """The feature cache of this job's frozen backbone: keyed by its Phase A artefact, or by the
    ``ckpt=`` file it was loaded from."""
    by_file = st.cfg.get("ckpt") or sim.finetuning  # (a fine-tuned backbone is not Phase A's)
    backbone_id = checkpoint_backbone_id(similarity_checkpoint(st)) if by_file else st.phase_a_dir.name
    return FeatureStore(st.artefact_dir, sim.backbone, backbone_id, sim.feature_layer,
                        **to_plain(st.cfg.phase_b.feature_pass))


def resolve_eta(st: RunState, sim: ForensicSimilarity, fs: FeatureStore | None = None) -> float:
    """η of this job's decisions: ``eval.eta``, or with ``eta=auto`` the η that maximises
    accuracy (or gives the EER, ``eval.eta_rule``) on Phase B validation pairs (set B); once per job.
    ``fs``: the job's feature cache, built here only when ``eta=auto`` needs it."""
    if st.eta is None:
        st.eta = configured_eta(st.cfg)
    if st.eta is None:
        cfg = st.cfg
        fs = fs or _feature_store(st, sim)
        dm = PairDataModule(st.data, cfg.phase_b.loader, 2, int(cfg.phase_b.val_pairs), seed=phase_b_seed(cfg),
                            features=fs.features)
        dm.setup()
        v = dm.val_set
        st.eta = float(choose_eta(sim.score_pairs(v.items, v.i, v.j), v.same, cfg.eval.eta_rule))
        log.info("  eta chosen on Phase B validation pairs (%s): %.3f", cfg.eval.eta_rule, st.eta)
    return st.eta


def stage_eval(st: RunState) -> dict:
    cfg = st.cfg
    sim = load_similarity(similarity_checkpoint(st))
    fs = _feature_store(st, sim)
    edm = EvalPairDataModule(st.data, cfg.phase_b.loader, int(cfg.eval.pairs_per_cell), int(cfg.eval.seed))
    edm.setup()
    pairs = edm.pairs
    ps = st.data.patch_sets("eval")
    got = [fs.get(ps[(m, "test")]) for m in pairs.models]
    feats = np.concatenate([g[0] for g in got])
    probs = np.concatenate([g[1] for g in got])
    if sim.finetuning and st.phase_a_dir is not None:  # the baseline stays Phase A's classifier
        pa_fs = FeatureStore(st.artefact_dir, load_classifier(st.phase_a_dir / "model.ckpt").backbone,
                             st.phase_a_dir.name, sim.feature_layer, **to_plain(cfg.phase_b.feature_pass))
        probs = np.concatenate([pa_fs.get(ps[(m, "test")])[1] for m in pairs.models])
    score = sim.score_pairs(feats, pairs.i, pairs.j)
    eta = resolve_eta(st, sim, fs)
    base = bray_curtis_similarity(probs[pairs.i], probs[pairs.j]) if cfg.eval.baseline else None
    pa = {}
    if st.phase_a_dir is not None and (st.phase_a_dir / "metrics.json").exists():
        pa = json.loads((st.phase_a_dir / "metrics.json").read_text())
    ev = evaluate_scores(score, base, pairs.model_1, pairs.model_2, pairs.known, float(eta), st.out_dir,
                         list(cfg.eval.sweep_etas))
    flat = ev.flat
    flat.update({k: v for k, v in pa.items() if k.startswith("phase_a/test/") and "per_class" not in k})
    more, text = difficulty_check(st.data, pa, flat, pairs.models)
    flat.update(more)
    write_evaluation(st.out_dir, ev, [("Difficulty check: camera traces, not scene statistics", text)])
    np.savez_compressed(st.out_dir / "scores.npz", score=score, baseline=base if base is not None else np.zeros(0),
                        model_1=pairs.model_1.astype(str), model_2=pairs.model_2.astype(str), i=pairs.i, j=pairs.j)
    log_evaluation(st.loggers, flat, st.out_dir, scenario_table(flat))
    log.info("  proposed: %s", scenario_line(flat))
    if base is not None:
        log.info("  baseline: %s", scenario_line(flat, "baseline"))
    st.summary["eval"] = {k: v for k, v in flat.items() if "/pairs/" not in k}
    return flat


def _synthetic_splices(st: RunState, source: SynthSource, num_images: int, control_fraction: float,
                       seed: int) -> ImageSet:
    """Simulated splices (cached) from two different evaluation cameras, a ``control_fraction``
    of them unspliced, on scenes drawn with ``seed``."""
    sc, sp = st.cfg.splicing, st.data.split
    models = list(sp.known) + list(sp.c)
    key = {"num_images": int(num_images), "image_size": list(sc.image_size), "seed": int(seed),
           "control_fraction": float(control_fraction), "models": models,
           "catalogue": {"num_models": source.num_models, "num_families": source.num_families, "seed": source.seed,
                         **({"jpeg_presets": source.jpeg_presets} if source.jpeg_presets != 1 else {}),
                         **synth_cache_key(source.synth)}}
    folder = cached_dir(st.artefact_dir, "splices", key, lambda tmp: render_splices(
        tmp, int(num_images), tuple(sc.image_size), int(seed), num_models=source.num_models,
        num_families=source.num_families, models=models, control_fraction=float(control_fraction),
        workers=source.workers, catalogue_seed=source.seed, synth=source.synth))
    return ImageSet("synthetic", folder, load_splices(folder), set(sp.known))


def _calibration_set(st: RunState) -> ImageSet | None:
    """Authentic images for the splicing thresholds: ``splicing.calibration_dir``, else simulated
    unspliced images on other scenes than the benchmark's (``splicing.calibration_images``)."""
    sc, source = st.cfg.splicing, st.data.source
    if sc.calibration_dir:
        return ImageSet("real", Path(), authentic_records(Path(sc.calibration_dir)))
    if int(sc.calibration_images) > 0 and isinstance(source, SynthSource):
        seed = stable_seed("splicing-calibration", int(sc.seed)) % 2**31
        return _synthetic_splices(st, source, int(sc.calibration_images), 1.0, seed)
    log.info("  no calibration images (splicing.calibration_dir): the engine's default thresholds decide")
    return None


def stage_splicing(st: RunState) -> dict:
    """The splicing benchmark with this job's network: simulated splices (when the data is the
    simulator), ``splicing.real_dir``'s forgeries and ``splicing.authentic_dir``'s authentic
    photos, at the job's η and the network's patch settings."""
    cfg = st.cfg
    ckpt = similarity_checkpoint(st)
    sim = load_similarity(ckpt)
    eta = resolve_eta(st, sim)
    sets, sc = [], cfg.splicing
    if isinstance(st.data.source, SynthSource):
        sets.append(_synthetic_splices(st, st.data.source, int(sc.num_images), float(sc.control_fraction),
                                       int(sc.seed)))
    else:
        log.info("  data is not the simulator: no synthetic splices (give splicing.real_dir / authentic_dir)")
    real = [*(real_records(Path(sc.real_dir)) if sc.real_dir else []),
            *(authentic_records(Path(sc.authentic_dir)) if sc.authentic_dir else [])]
    if real:
        sets.append(ImageSet("real", Path(), real))
    loc = Localizer(sim, **to_plain(cfg.phase_b.feature_pass))
    # the network's own patch settings when it recorded them, else this config's
    min_entropy = None if sim.patch_settings else float(cfg.patches.min_entropy)
    results = splicing_benchmark(loc, sets, sc, eta, min_entropy, st.out_dir, str(ckpt), _calibration_set(st))
    for mode, c in results["calibration"].items():
        log.info("  %s mode: threshold %.4g, calibrated to %.0f%% false alarms on %d %s images", mode, c["threshold"],
                 100 * c["target_far"], c["images"], c["on"])
    num = lambda v, fmt=".3f": "n/a" if v is None else format(v, fmt)  # noqa: E731
    for kind in ("synthetic", "real"):
        for mode, m in results.get(kind, {}).items():
            log.info("  %s, %s mode: pixel F1 %s (fixed threshold, per image; best threshold + inversion %s), "
                     "detection AUC %s, false alarms %s of %d controls, %d errors", kind, mode, num(m["f1"]),
                     num(m["f1_best"]), num(m["auc"]), num(m["false_alarm_rate"], ".1%"), m["n_controls"],
                     len(m["errors"]))
    st.summary["splicing"] = {k: results[k] for k in ("synthetic", "real") if k in results}
    return results


# --------------------------------------------------------------------------- the job

_TITLES = {"data": "data", "phase_a": "Learning Phase A (camera-model classifier on set A)",
           "phase_b": "Learning Phase B (similarity network on set B)",
           "eval": "evaluation (known + unknown camera models)", "splicing": "splicing benchmark"}


def run(cfg: DictConfig, job: str = "run", train: bool = True) -> dict:
    """Run one job's stages (:data:`JOBS`); returns the run summary (also run.json).

    ``train=False`` (camsim-eval) uses existing Phase A/B artefacts and fails clearly when
    they are missing; with ``ckpt=<path>`` the learning phases are skipped where a later
    stage only needs the similarity network.
    """
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; one of {sorted(JOBS)}")
    check_config(cfg)
    stages = list(JOBS[job])
    if cfg.get("ckpt") and stages[-1] in ("eval", "splicing"):
        stages = [s for s in stages if s not in ("phase_a", "phase_b")]
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st = RunState(cfg, out_dir, Path(cfg.paths.artefact_dir).resolve(), train=train)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    st.loggers = build_loggers(cfg, feature_layer(cfg))
    steps = {"data": lambda: stage_data(st, stages), "phase_a": lambda: stage_phase_a(st),
             "phase_b": lambda: stage_phase_b(st), "eval": lambda: stage_eval(st),
             "splicing": lambda: stage_splicing(st)}
    try:
        for lg in st.loggers:
            lg.log_hyperparams(to_plain(cfg))
        for name in stages:
            if name in ("eval", "splicing") and _rank() != 0:
                continue  # evaluation scores every pair in one process, after training
            with stage(_TITLES[name], st.summary):
                steps[name]()
        if _rank() == 0:
            atomic_write_json(out_dir / "run.json", st.summary)
            log.info("outputs: %s", out_dir)
    finally:
        finish_loggers(st.loggers)
    return st.summary
