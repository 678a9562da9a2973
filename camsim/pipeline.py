"""The stages of a camsim job: data → Learning Phase A → Learning Phase B → evaluation and/or
the splicing benchmark. ``camsim-run``, ``camsim-train`` and ``camsim-eval`` run a sequence of
them through :func:`run`.

The learning phases (each a cached artefact, keyed by the config parts that determine it,
trained under a lock and resumable) are :mod:`camsim.phases`; the data, evaluation and
splicing stages are here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from camsim.artefacts import atomic_write_json, cached_dir
from camsim.config import backbone_config, feature_layer, to_plain, validate
from camsim.data.datamodules import CameraData, EvalPairDataModule, PairDataModule, check_resample_loader
from camsim.data.features import FeatureStore, checkpoint_backbone_id
from camsim.data.sources import SynthSource
from camsim.data.splits import SetSplit
from camsim.data.patches import stable_seed
from camsim.data.store import log_skipped
from camsim.eval.difficulty import difficulty_check
from camsim.eval.evaluate import evaluate_scores, scenario_line, scenario_table, write_evaluation
from camsim.eval.metrics import bray_curtis_similarity, choose_eta, flatten
from camsim.eval.networks import Networks, training_role
from camsim.eval.splicing import ImageSet, authentic_records, real_records, splicing_benchmark
from camsim.lit.phase_a import build_backbone, load_classifier, optimizers_from_config
from camsim.lit.phase_b import ForensicSimilarity, finetune_modules, load_similarity
from camsim.localize.run import Localizer, localizer_for
from camsim.loggers import job_loggers, log_evaluation
from camsim.models.fusion import FittedFusion, check_fusion
from camsim.phases import RunState, configured_eta, phase_b_seed, rank, stage, stage_phase_a, stage_phase_b
from camsim.synth.render import FORMAT as RENDER_FORMAT
from camsim.synth.splice import load_splices, render_splices
from camsim.synth.settings import cache_key as synth_cache_key

log = logging.getLogger("camsim")

STAGES = ("data", "phase_a", "phase_b", "eval", "splicing")
#: what each entry point runs
JOBS = {"run": ("data", "phase_a", "phase_b", "eval"), "phase_a": ("data", "phase_a"),
        "phase_b": ("data", "phase_a", "phase_b"), "pairs": ("data", "phase_a", "phase_b", "eval"),
        "splicing": ("data", "phase_a", "phase_b", "splicing")}


# --------------------------------------------------------------------------- config


def check_config(cfg: DictConfig, trains: bool = True) -> None:
    """Everything that can be checked before any work: the schema's extra rules, that the backbone
    builds and has the feature layer, and — for a job that may train (``trains``) — that the
    similarity head builds on it and that each phase's optimiser, scheduler and loader settings hold
    (a typo fails here, not after the data or after Phase A)."""
    validate(cfg)
    backbone = build_backbone(backbone_config(cfg), 2, int(cfg.patches.size))
    layer = feature_layer(cfg)
    key = "model.feature_layer" if cfg.model.get("feature_layer") is not None else "phase_b.feature_layer"
    try:
        dim = backbone.feature_dim(layer)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{key}={layer!r}: {err}") from err
    if not trains:
        return
    if cfg.phase_b.finetune.enabled:
        finetune_modules(backbone, cfg.phase_b.finetune.from_layer, layer)  # a bad from_layer fails here
        check_resample_loader(bool(cfg.phase_b.resample_pairs), cfg.phase_b.finetune.loader, "phase_b.finetune.loader")
    check_resample_loader(bool(cfg.phase_b.resample_pairs), cfg.phase_b.loader, "phase_b.loader")
    _check_builds("similarity", lambda: hydra.utils.instantiate(to_plain(cfg.similarity), in_features=dim,
                                                                _convert_="all"))
    phases = {"phase_a": cfg.phase_a, "phase_b": cfg.phase_b,
              **({"phase_b.finetune": cfg.phase_b.finetune} if cfg.phase_b.finetune.enabled else {})}
    for name, node in phases.items():
        _check_builds(f"{name}.optimizer / .scheduler", lambda n=node, name=name: optimizers_from_config(
            [torch.nn.Parameter(torch.zeros(1))], to_plain(n.optimizer), to_plain(n.get("scheduler")), name))


def _check_builds(what: str, build: Any) -> None:
    """``build()``, any failure as one ValueError naming ``what`` (a config's part) and the reason."""
    try:
        build()
    except Exception as err:  # noqa: BLE001 — hydra wraps whatever the class raised
        reason = str(err).strip().splitlines()
        raise ValueError(f"{what} does not build: {reason[-1] if reason else type(err).__name__}") from err


# --------------------------------------------------------------------------- builders


def build_data(cfg: DictConfig) -> CameraData:
    source = hydra.utils.instantiate(cfg.data, _convert_="all")
    return CameraData(source, cfg.split, cfg.patches, cfg.paths.artefact_dir, channels=int(cfg.model.in_channels))


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


def similarity_checkpoint(st: RunState) -> Path:
    """The similarity network of this job: ``ckpt=`` when given (a list of one: its one), else the one
    Phase B trained."""
    ckpt = st.cfg.get("ckpt")
    if not ckpt:
        return st.phase_b_dir / "model.ckpt"
    return Path(str(ckpt[0] if isinstance(ckpt, ListConfig) else ckpt))


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


def split_against_network(sets: dict, split: SetSplit) -> list[str]:
    """Where this config's split contradicts a ``ckpt=`` network's training record (names compared
    as :func:`~camsim.eval.networks.training_role` does): an *unknown* model (set C) it trained on,
    a *known* model outside its set A. Either makes the scenario accuracies mislabelled."""
    notes = []
    seen = [f"{m} ({training_role(m, sets)})" for m in split.c if training_role(m, sets)]
    if seen:
        notes.append(f"unknown model(s) of this split that the network trained on: {', '.join(seen)} — their pairs are "
                     "not unknown-model pairs, and their test photos may have been its training photos")
    outside = [m for m in split.known if "A" not in training_role(m, sets)]
    if outside:
        notes.append(f"known model(s) of this split not in the network's set A: {', '.join(outside)}")
    chose = [m for m in split.c if training_role(m, {"a": sets.get("b_val") or []})]
    if chose:  # split.b_val: not trained on, but its pairs chose the checkpoint (and eta=auto)
        notes.append(f"unknown model(s) of this split whose pairs chose the network's checkpoint (its split.b_val): "
                     f"{', '.join(chose)}")
    return notes


def check_patches_against_network(sim: Any, settings: Any) -> None:
    """A ``ckpt=`` network scores the patches it was trained on: this config must cut them as its
    recipe did (size, JPEG-grid alignment, entropy filter) — another size crashed deep in the
    network or ran silently at the wrong scale, another filter shifted every figure. One line
    naming the overrides that match the network."""
    rec = {"size": int(sim.patch_size), **{k: v for k, v in (sim.patch_settings or {}).items()
                                           if k in ("align", "min_entropy") and v is not None}}
    differ = {k: v for k, v in rec.items() if float(getattr(settings, k)) != float(v)}
    if differ:
        raise ValueError("the network was trained on other patches than this config cuts ("
                         + ", ".join(f"{k} {v:g} vs {getattr(settings, k):g}" for k, v in differ.items())
                         + "): add " + " ".join(f"patches.{k}={v:g}" for k, v in differ.items()))


def stage_eval(st: RunState) -> dict:
    cfg = st.cfg
    scored = similarity_checkpoint(st)
    sim = load_similarity(scored)
    if int(sim.backbone.in_channels) != st.data.store.settings.channels:
        raise ValueError(f"the checkpoint's network takes {sim.backbone.in_channels}-channel patches, this config cuts "
                         f"{st.data.store.settings.channels}-channel ones: add model.in_channels="
                         f"{sim.backbone.in_channels}")
    check_patches_against_network(sim, st.data.store.settings)
    # the network these figures are of, whether ckpt= named it or this job trained or reused it (a
    # fine-tuned one: run.json's phase_b may be its frozen head stage): camsim-export reads it
    st.summary["eval_checkpoint"] = str(scored.resolve())
    fs = _feature_store(st, sim)
    two_photos = cfg.eval.get("self_pairs", "any") == "two_photos"
    edm = EvalPairDataModule(st.data, cfg.phase_b.loader, int(cfg.eval.pairs_per_cell), int(cfg.eval.seed),
                             two_photos=two_photos)
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
    sections = [("Difficulty check: camera traces, not scene statistics", text)]
    if sim.finetuning and st.phase_a_dir is None and base is not None:
        sections.append(("Baseline of a fine-tuned network", (
            "Its Bray–Curtis baseline runs Phase A's classifier layer, which fine-tuning left as it was, on the "
            "fine-tuned features — not Phase A's own baseline (`ckpt=` names no Phase A artefact to take it from); "
            "the job that trained the network reports that one.")))
    if cfg.get("ckpt"):  # a network trained elsewhere: name it, and check this split against its record
        notes = split_against_network(sim.training_sets, st.data.split)
        for note in notes:
            log.warning("  %s", note)
        sections.insert(0, ("The network evaluated", "\n".join(
            [f"`ckpt={st.summary['eval_checkpoint']}`, trained on set A = {', '.join(sim.training_sets['a'])}; set B = "
             f"{', '.join(sim.training_sets['b'] or ['not recorded'])}. Known / unknown below are this config's "
             "split (`split.*`), checked against that record:", ""]
            + [f"- {n}" for n in notes or ["consistent: every known model is in its set A, no unknown one in its A or B."]])))
    how = (f"fixed (`eval.eta={cfg.eval.eta}`)" if configured_eta(cfg) is not None else
           f"chosen on Phase B's validation pairs (`eval.eta=auto`, rule `{cfg.eval.eta_rule}`)")
    share = pairs.same_photo_share()
    self_pairs = "" if share is None else (
        " A same-model (\"Self\") pair is two test patches of two photos of the model (`eval.self_pairs=two_photos`)."
        if two_photos else
        f" A same-model (\"Self\") pair is any two test patches of the model: {100 * share:.1f} % of them are "
        f"two patches of one photo, the rest of two photos (`eval.self_pairs=two_photos` draws two photos only; "
        f"the transfer evaluation, `camsim-eval ckpt=… data=folder`, reports the two kinds apart).")
    photos = ("the test photos (never trained on)" if not cfg.get("ckpt") else
              "this config's test photos (`split.image_*`; a checkpoint does not record the photos it trained "
              "on: under another image split than its recipe's, some may be its training photos)")
    protocol = (f"patch pairs of {photos} of the known and unknown models, "
                f"{int(cfg.eval.pairs_per_cell)} per cell of the model-by-model matrix (`eval.pairs_per_cell`, "
                f"drawn with `eval.seed={int(cfg.eval.seed)}`), figures pooled over pairs; η = {float(eta):.4g} {how}."
                + self_pairs)
    if share is not None:
        st.summary["eval_same_photo_share"] = round(share, 4)
    write_evaluation(st.out_dir, ev, sections, protocol)
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
           "catalogue": {"format": RENDER_FORMAT, "num_models": source.num_models, "num_families": source.num_families,
                         "seed": source.seed,
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


def _splicing_localizer(st: RunState) -> tuple[Localizer, float, float | None, str]:
    """The benchmark's localiser, η, entropy threshold and checkpoint label: this job's network,
    ``ckpt=``'s, or with ``ckpt=[a, b]`` several networks localising as one
    (:class:`~camsim.localize.run.FusedLocalizer`, their pair scores fused by ``fusion``; η =
    ``eval.eta``, or with ``auto`` the mean of the networks' own). The entropy threshold is
    ``splicing.min_entropy``, else ``None`` (the networks' recipes) when they recorded one, else
    ``patches.min_entropy``."""
    cfg = st.cfg
    if isinstance(cfg.get("ckpt"), ListConfig) and len(cfg.ckpt) > 1:
        nets = Networks.load(cfg.ckpt)
        sims, label, fusion = nets.sims, f"{nets.label} (fusion={cfg.fusion})", nets.fusion(cfg.fusion)
        st.eta = configured_eta(cfg)
        if st.eta is None:
            st.eta = nets.eta()
            log.info("  eval.eta=auto: the networks' mean threshold eta = %.3f", st.eta)
        eta = st.eta
    else:  # one network (a list of one is one, as in the transfer evaluation)
        ckpt = similarity_checkpoint(st)
        rule = check_fusion(cfg.fusion)
        if isinstance(rule, FittedFusion):                        # its logit reweighted (identical-table row)
            nets = Networks.load(ckpt)
            sims, label, fusion = nets.sims, f"{ckpt} (fusion={cfg.fusion})", nets.fusion(rule)
        else:
            sims, label, fusion = [load_similarity(ckpt)], str(ckpt), "logit"
        eta = resolve_eta(st, sims[0])
    loc = localizer_for(sims, fusion=fusion, **to_plain(cfg.phase_b.feature_pass))
    given = cfg.splicing.min_entropy
    min_entropy = float(given) if given is not None else \
        None if all(sim.patch_settings for sim in sims) else float(cfg.patches.min_entropy)
    return loc, eta, min_entropy, label


def stage_splicing(st: RunState) -> dict:
    """The splicing benchmark with this job's network(s) (:func:`_splicing_localizer`): simulated
    splices (when the data is the simulator), ``splicing.real_dir``'s forgeries and
    ``splicing.authentic_dir``'s authentic photos, at the job's η and the network's patch settings."""
    cfg = st.cfg
    loc, eta, min_entropy, label = _splicing_localizer(st)
    notes = []
    if cfg.get("ckpt"):  # networks trained elsewhere: is an "unknown" camera of this split one they learnt?
        sims = [m.sim for m in getattr(loc, "members", [loc])]
        for k, sim in enumerate(sims):
            notes += [(f"network {k + 1}: " if len(sims) > 1 else "") + n
                      for n in split_against_network(sim.training_sets, st.data.split)]
        for note in notes:
            log.warning("  %s", note)
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
    calibration = _calibration_set(st)
    if calibration is not None and real:
        shared = sorted({r["image"] for r in calibration.records} & {r["image"] for r in real})
        if shared:
            raise ValueError(f"splicing.calibration_dir: {len(shared)} of its images are also benchmark images "
                             f"(e.g. {shared[0]}): a threshold set on the photos it is tested on meets its "
                             "false-alarm target by construction; give disjoint folders")
    results = splicing_benchmark(loc, sets, sc, eta, min_entropy, st.out_dir, label, calibration, notes)
    for mode, c in results["calibration"].items():
        log.info("  %s mode: threshold %.4g, calibrated to %.0f%% false alarms on %d %s images (%.1f%% to expect on "
                 "new ones)", mode, c["threshold"], 100 * c["target_far"], c["images"], c["on"],
                 100 * c["expected_far_new_images"])
    num = lambda v, fmt=".3f": "n/a" if v is None else format(v, fmt)  # noqa: E731
    for kind in ("synthetic", "real"):
        for mode, m in results.get(kind, {}).items():
            log.info("  %s, %s mode: pixel F1 %s (fixed threshold, per image; %s with 0 where the image was called "
                     "not spliced; best threshold + inversion %s), detection AUC %s, false alarms %s of %d controls, "
                     "%d errors", kind, mode, num(m["f1"]), num(m["f1_gated"]), num(m["f1_best"]), num(m["auc"]),
                     num(m["false_alarm_rate"], ".1%"), m["n_controls"], len(m["errors"]))
    st.summary["splicing"] = {k: results[k] for k in ("synthetic", "real") if k in results}
    log_evaluation(st.loggers, flatten({"splicing": st.summary["splicing"]}), st.out_dir)
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
    check_config(cfg, trains=train and not cfg.get("ckpt"))
    if isinstance(cfg.get("ckpt"), ListConfig) and job != "splicing":
        raise ValueError(f"ckpt: a list of networks (their pair scores fused) is for camsim-eval's transfer and "
                         f"splicing tasks; the {job} job takes one checkpoint")
    if job == "splicing":
        check_fusion(cfg.fusion)                               # before any stage: one network's fusion.json too
    stages = list(JOBS[job])
    if cfg.get("ckpt") and stages[-1] in ("eval", "splicing"):
        stages = [s for s in stages if s not in ("phase_a", "phase_b")]
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st = RunState(cfg, out_dir, Path(cfg.paths.artefact_dir).resolve(), train=train)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    steps = {"data": lambda: stage_data(st, stages), "phase_a": lambda: stage_phase_a(st),
             "phase_b": lambda: stage_phase_b(st), "eval": lambda: stage_eval(st),
             "splicing": lambda: stage_splicing(st)}
    with job_loggers(cfg, feature_layer(cfg)) as st.loggers:
        for name in stages:
            if name in ("eval", "splicing") and rank() != 0:
                continue  # evaluation scores every pair in one process, after training
            with stage(_TITLES[name], st.summary):
                steps[name]()
        if rank() == 0:
            atomic_write_json(out_dir / "run.json", st.summary)
            log.info("outputs: %s", out_dir)
    return st.summary
