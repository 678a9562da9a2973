"""Transfer evaluation: a trained similarity network on every camera model of any source.

``camsim-eval ckpt=<Phase B checkpoint> data=<source>`` (``task=transfer``; the default
when ``ckpt`` is given). No split: every photo of every camera model is used, and a model
with a single photo is accepted. Whether a model is *known* is decided by the checkpoint —
it records the camera models of its training sets A and B (``ForensicSimilarity.training_sets``);
every other model is *unknown*. Patches are cut with the checkpoint's own patch settings.

Pairs by category (:mod:`camsim.eval.transfer_pairs`), at patch level and image level (one
decision per pair of photos from the mean — or median — of its patch-pair scores); each
same-model category is a *contrast* against the different-model pairs (also split into
same make / different makes where the make is known), with ROC AUC, TPR / TNR / balanced
accuracy at η, TPR at 1 % and 5 % false alarms, EER, the Bray–Curtis baseline (the
checkpoint's own Phase A classifier, docs/method.md "Baseline") at the same false-alarm rate,
and bootstrap intervals over camera models and photos (:mod:`camsim.eval.bootstrap`).

``ckpt=[a.ckpt, b.ckpt, ...]`` scores with several networks at once (:class:`Networks`): each pair's
score fuses theirs (``fusion``: σ of the mean logit, the mean score, or weights per table relation
fitted on this run's pairs, ``fit``, or read from a ``fusion.json`` — :mod:`camsim.models.fusion`; e.g.
the quick recipe's network with the pixel-only one of ``experiment=pixel_long``), the baseline is the
mean of their Bray–Curtis similarities. One network takes ``fit`` / a ``fusion.json`` too: its logit
reweighted per table relation.
Their patch settings (size, JPEG-grid alignment, entropy filter) must agree, so that every network
scores the same patch pairs; a model is known when any of them was trained on it.

Outputs (in the run directory, written only once everything is computed): ``transfer.md``,
``metrics.json``, ``scores.npz`` (every scored pair: both patches' model, photo and pixel
corner, category, score, baseline), ``per_model.csv``, ``photo_pairs.csv``,
``roc_<level>_<contrast>.png``, ``run.json``; a table on the console.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from camsim.config import data_fingerprint, to_plain
from camsim.data.features import FeatureStore, checkpoint_backbone_id
from camsim.data.io import ImageReadError, image_size
from camsim.data.layouts import camera_make
from camsim.data.sources import model_key
from camsim.data.store import PatchRequest, PatchStore, jpeg_table_ids, log_skipped, merge_skipped
from camsim.eval.bootstrap import Contrast, bootstrap, check_reps_level
from camsim.eval.metrics import bray_curtis_similarity, choose_eta
from camsim.eval.networks import Networks, load_checkpoint, patch_settings, training_role
from camsim.eval.transfer_pairs import LINK, PhotoLayout, halves, sample_image_pairs, sample_patch_pairs
from camsim.eval.transfer_report import write_outputs
from camsim.models.fusion import FIT, FittedFusion, check_fusion, fit_fusion, fuse_scores
from camsim.synth.photo import ijg_quality

log = logging.getLogger("camsim")

POSITIVES = {"patch": ("same_photo", "other_photo"), "image": ("halves", "other_photo")}


# ------------------------------------------------------------------------- inputs


def read_index(data_cfg: DictConfig):
    """``(source, index)``: the source and its :class:`~camsim.data.sources.ImageIndex` (identical
    files under two model names refused; a copy of a photo in its own model's folder left out, with
    its reason in ``skipped``: its pairs with the original would count as two photos of one model);
    an unreadable folder is a ValueError naming it."""
    source = hydra.utils.instantiate(data_cfg, _convert_="all")
    try:
        index = source.index()
        return source, index.without_copies()
    except PermissionError as err:
        raise ValueError(f"data.root: {err.filename or data_cfg.get('root')}: cannot be read "
                         f"({err.strerror or err})") from err


# ------------------------------------------------------------------------- the patch table


@dataclass
class PatchTable:
    """Every evaluated patch (rows grouped by photo) with its features and classifier softmax."""

    models: list[str]
    photo_path: list[str]
    photo_model: np.ndarray
    photo_height: np.ndarray
    photo_quality: np.ndarray  # [photos] IJG-equivalent JPEG quality (``ijg_quality`` of its luminance table); -1: not a JPEG
    photo_table: np.ndarray  # [photos] luminance-table id, equal for identical tables (:func:`~camsim.data.store.jpeg_table_ids`); -1: not a JPEG
    photo: np.ndarray  # [N] photo id of each patch
    yx: np.ndarray  # [N, 2]
    features: np.ndarray
    probs: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    low_entropy_dropped: int = 0
    #: readable photos none of whose cells passed the entropy filter (flat fields, dark frames)
    no_patch: list[str] = field(default_factory=list)

    def layout(self) -> PhotoLayout:
        return PhotoLayout.from_patches(self.photo, self.photo_model)


def cut_and_embed(index: Any, sim: Any, settings: Any, cfg: DictConfig, ckpt: Path) -> PatchTable:
    """Patches of every photo (through the patch cache), at most ``transfer.patches_per_image``
    each, with f(X) and the softmax (through the feature cache, keyed by the checkpoint file)."""

    ppi = int(cfg.transfer.patches_per_image)
    if ppi < 1:
        raise ValueError(f"transfer.patches_per_image: must be ≥ 1, got {ppi}")
    store = PatchStore(Path(cfg.paths.artefact_dir), settings, workers=cfg.patches.workers)
    reqs = [PatchRequest(m, "all", tuple(paths), ppi * len(paths)) for m, paths in index.models.items()]
    sets = store.get(reqs)
    fs = FeatureStore(Path(cfg.paths.artefact_dir), sim.backbone, checkpoint_backbone_id(ckpt), sim.feature_layer,
                      **to_plain(cfg.phase_b.feature_pass))
    models, paths, pmodel, heights, photo, yx, feats, probs, skipped = [], [], [], [], [], [], [], [], []
    low, no_patch = 0, []
    for req in reqs:
        ps = sets[(req.model, "all")]
        # the cache keys photos by their real path, so a cached set may name them as another run
        # spelled its root: this run's names, in the same order
        here = {str(a): str(b) for a, b in zip(ps.images, req.images)}
        photos = [Path(here[str(a)]) for a in ps.images]
        unreadable = [{**sk, "file": here.get(str(sk["file"]), str(sk["file"]))} for sk in ps.info.get("skipped", [])]
        skipped += unreadable
        low += int(ps.info.get("low_entropy_dropped", 0))
        rows = [np.flatnonzero(ps.image_ids == k)[:ppi] for k in range(len(photos))]
        bad = {sk["file"] for sk in unreadable}
        no_patch += [str(p) for p, r in zip(photos, rows) if not len(r) and str(p) not in bad]
        if not sum(len(r) for r in rows):
            log.warning("  %s: no usable patch in its %d photo(s); left out", req.model, len(photos))
            continue
        f, pr = fs.get(ps)
        m = len(models)
        models.append(req.model)
        for k, r in enumerate(rows):
            if not len(r):
                continue
            try:
                h = image_size(photos[k])[0]
            except ImageReadError:
                h = 0
            photo.append(np.full(len(r), len(paths)))
            paths.append(str(photos[k]))
            pmodel.append(m)
            heights.append(h)
            yx.append(np.asarray(ps.positions)[r])
            feats.append(f[r])
            probs.append(pr[r])
    if not models:
        raise ValueError(f"data: no patch could be cut from any photo of {index.root} ({len(skipped)} file(s) "
                         f"unreadable, {low} low-entropy cells dropped at min_entropy={settings.min_entropy}; "
                         "a lower transfer.min_entropy may help)")
    table_id, tables = jpeg_table_ids(paths)
    quality = np.array([ijg_quality(tables[t]) if t >= 0 else -1 for t in table_id], np.int64)
    return PatchTable(models, paths, np.asarray(pmodel, np.int64), np.asarray(heights, np.int64), quality, table_id,
                      np.concatenate(photo).astype(np.int64), np.concatenate(yx).astype(np.int64),
                      np.concatenate(feats), np.concatenate(probs), skipped, low, no_patch)


# ------------------------------------------------------------------------- contrasts


def make_relation(makes: list[str | None], model_1: np.ndarray, model_2: np.ndarray) -> np.ndarray:
    """Per pair: 1 same make, 0 different makes, -1 a make unknown."""
    mk = np.array([m or "" for m in makes], dtype=object)
    a, b = mk[model_1], mk[model_2]
    known = (a != "") & (b != "")
    return np.where(known, (a == b).astype(np.int64), -1)


@dataclass
class LevelScores:
    """Scored pairs of one level: category names per pair, photos, make relation, scores."""

    level: str
    category: np.ndarray  # names
    photo_1: np.ndarray
    photo_2: np.ndarray
    make_rel: np.ndarray
    score: np.ndarray
    baseline: np.ndarray | None


#: JPEG-quality rows (``transfer.fine_jpeg_quality`` = q): name -> label. ``fine`` / ``coarse``: both photos
#: of every pair in that band; ``same_q`` / ``diff_q`` (two-photo rows): the pair's two photos at equal /
#: different IJG-equivalent quality; ``far_q`` (``transfer.far_jpeg_gap`` = gap): at least ``gap`` quality
#: steps apart; ``same_table`` / ``diff_table``: the two photos with the identical / different luminance
#: quantisation tables (within either, whether the two tables match says nothing of the model)
BANDS = {"fine": "JPEG q ≥ {q}", "coarse": "JPEG q < {q}", "same_q": "equal JPEG quality",
         "diff_q": "unequal JPEG quality", "far_q": "JPEG qualities ≥ {gap} apart",
         "same_table": "identical JPEG tables", "diff_table": "different JPEG tables"}


def photo_bands(quality: np.ndarray, fine_quality: int | None) -> np.ndarray | None:
    """Per photo: 1 "fine" (IJG-equivalent quality ≥ ``fine_quality``), 0 "coarse", -1 not a JPEG;
    None (no band rows) when ``fine_quality`` is None or the photos do not fall into both bands."""
    if fine_quality is None:
        return None
    q = np.asarray(quality)
    band = np.where(q < 0, -1, (q >= int(fine_quality)).astype(np.int64))
    return band if (band == 1).any() and (band == 0).any() else None


def contrasts_of(ls: LevelScores, quality: np.ndarray | None = None, fine_quality: int | None = None,
                 far_gap: int | None = None, table: np.ndarray | None = None) -> tuple[dict[str, Contrast], dict[str, dict]]:
    """The level's contrasts (each same-model category vs the different-model pairs; other-photo
    pairs also vs same-make and vs different-make negatives when both exist) and their descriptions.

    With per-photo ``quality`` (IJG-equivalent, -1 unknown) and ``fine_quality`` set, the JPEG-quality
    rows too, each with positives and different-model negatives whose photos all satisfy its condition:
    every same-model category within each band of :func:`photo_bands` (``<category>@fine``,
    ``@coarse``; at fine quantisation the JPEG lattice that the backbone's JPEG branch reads is nearly
    gone, so the band rows show what is left), and the two-photo category with both photos of a pair
    at equal quality (``other_photo@same_q``) or at unequal quality (``@diff_q``): whether two photos
    of one model are recognised when their JPEG tables differ, against negatives that differ as much;
    with ``far_gap``, also with both photos at least ``far_gap`` quality steps apart (``@far_q``): a
    camera's quality presets, rather than one photo's adaptive table a step or two off. With per-photo
    ``table`` ids (equal for identical luminance tables, -1 unknown), also the two-photo category with
    both kinds of pair between photos of identical tables (``@same_table``: whether a network tells
    models apart beyond their quantisation table) or of different tables (``@diff_table``)."""
    neg = ls.category == "diff_model"
    out, about = {}, {}

    def add(name: str, pos: np.ndarray, nmask: np.ndarray, pos_name: str, neg_name: str, band: str | None) -> None:
        sel = pos | nmask
        link = np.array([LINK[c] for c in ls.category[sel]], np.int64)
        out[name] = Contrast(ls.score[sel], pos[sel], ls.photo_1[sel], ls.photo_2[sel], link,
                             None if ls.baseline is None else ls.baseline[sel])
        about[name] = {"positives": pos_name, "negatives": neg_name, "n_pos": int(pos.sum()),
                       "n_neg": int(nmask.sum()), "empty": False,
                       **({"band_label": BANDS[band].format(q=fine_quality, gap=far_gap)} if band else {})}

    for pos_name in POSITIVES[ls.level]:
        pos = ls.category == pos_name
        if not pos.any():
            about[f"{ls.level}/{pos_name}"] = {"positives": pos_name, "negatives": "diff_model", "n_pos": 0,
                                              "n_neg": int(neg.sum()), "empty": True}
            continue
        negs = {"diff_model": neg}
        if pos_name == "other_photo" and (neg & (ls.make_rel == 1)).any() and (neg & (ls.make_rel == 0)).any():
            negs["diff_model_same_make"] = neg & (ls.make_rel == 1)
            negs["diff_model_other_make"] = neg & (ls.make_rel == 0)
        for neg_name, nmask in negs.items():
            add(f"{ls.level}/{pos_name}" + ("" if neg_name == "diff_model" else f"~{neg_name[11:]}"),
                pos, nmask, pos_name, neg_name, None)
    def add_within(pos_name: str, tag: str, inside: np.ndarray) -> None:
        pos, nmask = (ls.category == pos_name) & inside, neg & inside
        if pos.any() and nmask.any():  # a condition without pairs of either kind has no row
            add(f"{ls.level}/{pos_name}@{tag}", pos, nmask, pos_name, "diff_model", tag)

    if quality is None or fine_quality is None:
        return out, about
    q = np.asarray(quality)
    bands = photo_bands(q, fine_quality)
    if bands is not None:
        b1, b2 = bands[ls.photo_1], bands[ls.photo_2]
        for pos_name in POSITIVES[ls.level]:
            for band, value in (("fine", 1), ("coarse", 0)):
                add_within(pos_name, band, (b1 == value) & (b2 == value))
    q1, q2 = q[ls.photo_1], q[ls.photo_2]
    known = (q1 >= 0) & (q2 >= 0)
    add_within("other_photo", "same_q", known & (q1 == q2))
    add_within("other_photo", "diff_q", known & (q1 != q2))
    if far_gap is not None:
        add_within("other_photo", "far_q", known & (np.abs(q1 - q2) >= int(far_gap)))
    if table is not None:
        t1, t2 = np.asarray(table)[ls.photo_1], np.asarray(table)[ls.photo_2]
        add_within("other_photo", "same_table", (t1 >= 0) & (t1 == t2))
        add_within("other_photo", "diff_table", (t1 >= 0) & (t2 >= 0) & (t1 != t2))
    return out, about


def choose_threshold(c: Contrast, eta: float, rule: str) -> float:
    """``eta`` (rule "eta"), or the threshold of highest balanced accuracy on the contrast itself
    ("best": the figure the rows report, so the oracle is one for it — the pair-weighted accuracy's
    best threshold, with 3–6× more different-model pairs, favoured TNR and lowered it)."""

    if rule == "eta" or c.positive.all() or not c.positive.any():
        return float(eta)
    return float(choose_eta(c.score, c.positive, "balanced"))


# ------------------------------------------------------------------------- the job


def _check_transfer_cfg(t: DictConfig) -> None:
    if t.fine_jpeg_quality is not None and not 1 <= int(t.fine_jpeg_quality) <= 100:
        raise ValueError(f"transfer.fine_jpeg_quality: an IJG quality 1..100 (or null: no band rows), "
                         f"got {t.fine_jpeg_quality}")
    if t.far_jpeg_gap is not None and not 1 <= int(t.far_jpeg_gap) <= 99:
        raise ValueError(f"transfer.far_jpeg_gap: a number of IJG quality steps 1..99 (or null: no such row), "
                         f"got {t.far_jpeg_gap}")
    if t.threshold not in ("eta", "best"):
        raise ValueError(f"transfer.threshold: {t.threshold!r} is not 'eta' or 'best'")
    if t.image.aggregate not in ("mean", "median"):
        raise ValueError(f"transfer.image.aggregate: {t.image.aggregate!r} is not 'mean' or 'median'")
    for key in ("per_photo", "per_photo_pair", "photo_pairs_per_model", "per_model_pair"):
        if int(t.pairs[key]) < 1:
            raise ValueError(f"transfer.pairs.{key}: must be ≥ 1, got {t.pairs[key]}")
    for key in ("patch_pairs", "photo_pairs_per_model_pair"):
        if int(t.image[key]) < 1:
            raise ValueError(f"transfer.image.{key}: must be ≥ 1, got {t.image[key]}")
    check_reps_level(int(t.bootstrap.reps), float(t.bootstrap.level), "transfer.bootstrap.")


def run_transfer(cfg: DictConfig) -> dict:
    """The transfer evaluation of ``cfg.ckpt`` on ``cfg.data`` (module docstring); returns metrics."""
    t0 = time.perf_counter()
    t = cfg.transfer
    _check_transfer_cfg(t)
    rule = check_fusion(cfg.fusion, allow_fit=True)          # before the networks load; a fusion.json read once
    nets = Networks.load(cfg.get("ckpt"))
    several = len(nets.sims) > 1
    fusion = nets.fusion(rule, allow_fit=True)
    fused = several or not isinstance(fusion, str) or fusion == FIT  # one network's logit reweighted: fused too
    eta = cfg.eval.eta
    if eta == "auto":
        eta = nets.eta()
        log.info("  eval.eta=auto: the threshold recorded with the network, eta = %.3f%s — a transfer evaluation "
                 "has no validation pairs to choose one on (an exported folder's eta, else the training "
                 "accuracies' 0.5)", eta, " (the networks' mean)" if several else "")
    eta = float(eta)
    source, index = read_index(cfg.data)
    settings_each = nets.patch_settings(cfg)
    settings = settings_each[0]
    sets = nets.training_sets
    roles = {m: training_role(m, sets) for m in index.model_names()}
    fp_here = data_fingerprint(cfg.data)
    fp_each = nets.fingerprints
    notes: list[str] = []
    if fused:
        rule = {"logit": "σ of the mean of their logits", "mean": "the mean of their scores",
                FIT: f"a logistic regression on {'their logits' if several else 'its logit'}, one set of weights "
                     "for pairs whose two photos carry the identical JPEG luminance table and one for the others, "
                     "fitted on this run's patch pairs (fusion.json; the figures below are in-sample: judge it on "
                     "other photos with fusion=<that file>)"}.get(fusion) if isinstance(fusion, str) else \
            f"the fitted fusion {fusion.path} (its weights for the pair's table relation: identical / different)"
        notes.append((f"{len(nets.sims)} networks ({nets.label}): each pair's score is {rule} (fusion="
                      f"{fusion if isinstance(fusion, str) else fusion.path}), the baseline the mean of their "
                      "Bray–Curtis similarities; a model counts as known when any of them was trained on it.")
                     if several else
                     f"Each pair's score is {rule} (fusion={fusion if isinstance(fusion, str) else fusion.path}).")
    known_here = [m for m, r in roles.items() if r]
    respelled = sorted({f"{m} = {t}" for m in known_here for t in (sets.get("a") or []) + (sets.get("b") or [])
                        if t != m and model_key(t) == model_key(m)})
    if respelled:
        notes.append("Known by the checkpoint's names spelled otherwise (case and separators ignored): "
                      f"{', '.join(respelled)}.")
    notes += nets.notes(known_here, fp_here, baseline=bool(cfg.eval.baseline))
    log.info("  checkpoint %s: A=%d models, B=%s; feature layer %s; patches %d px, align %d, min_entropy %.2f",
             " + ".join(map(str, nets.paths)), len(sets["a"]), "not recorded" if sets["b"] is None else len(sets["b"]),
             nets.feature_layer, settings.size, settings.align, settings.min_entropy)
    log.info("  source %s: %d camera models (%d known, %d unknown), %d photos", type(source).__name__,
             len(roles), len(known_here), len(roles) - len(known_here), sum(index.counts().values()))

    tables = [cut_and_embed(index, sim, st, cfg, path)
              for sim, st, path in zip(nets.sims, settings_each, nets.paths)]
    table = tables[0]
    for path, other in zip(nets.paths[1:], tables[1:]):
        if other.models != table.models or not (np.array_equal(other.photo, table.photo)
                                                and np.array_equal(other.yx, table.yx)):
            raise ValueError(f"ckpt: {path} cut other patches than {nets.paths[0]} from {index.root} (its colour "
                             "channels pass the entropy filter elsewhere?), so the networks cannot score the same "
                             "pairs")
    skipped = merge_skipped(index.skipped, *(tab.skipped for tab in tables))
    log_skipped(skipped, log)
    if skipped:
        shown = "; ".join(f"{Path(sk['file']).name}: {sk['reason']}" for sk in skipped[:3])
        notes.append(f"{len(skipped)} file(s) left out, each named with its reason in run.json (skipped_files) and "
                     f"the log: {shown}" + (" …" if len(skipped) > 3 else "") + ".")
    if table.no_patch:
        notes.append(f"{len(table.no_patch)} readable photo(s) gave no patch above {settings.min_entropy:g} nats "
                     "(flat fields, dark or saturated frames) and are not in any pair; run.json lists them "
                     "(no_patch_photos).")
    dropped = [m for m in index.model_names() if m not in table.models]
    if dropped:
        notes.append(f"No usable patch (unreadable or low-entropy photos), left out: {', '.join(dropped)}.")
    makes = [camera_make(m) if t.makes_from_names else None for m in table.models]
    fine_q = None if t.fine_jpeg_quality is None else int(t.fine_jpeg_quality)
    far_gap = None if t.far_jpeg_gap is None else int(t.far_jpeg_gap)
    bands = photo_bands(table.photo_quality, fine_q)
    q = table.photo_quality
    if fine_q is not None and (q >= 0).any():
        n_fine, n_coarse, n_other = int((q >= fine_q).sum()), int(((q >= 0) & (q < fine_q)).sum()), int((q < 0).sum())
        notes.append(f"JPEG quality (IJG-equivalent, from each photo's luma quantisation table): {n_fine} photo(s) at "
                     f"q ≥ {fine_q}, {n_coarse} below" + (f", {n_other} not JPEG" if n_other else "") + ". "
                     + ("Rows marked 'JPEG q ≥ …' / 'q < …' take positives and different-model negatives with both "
                        "photos in that band." if bands is not None else "One band only: no band rows.")
                     + " Two-photo rows marked 'equal' / 'unequal JPEG quality' take positives and negatives whose "
                       "two photos are at equal / unequal quality"
                     + (f"; 'JPEG qualities ≥ {far_gap} apart', both at least {far_gap} quality steps apart"
                        if far_gap is not None else "")
                     + f"; 'identical' / 'different JPEG tables', the two photos with the identical / different luminance "
                       f"table ({len(set(table.photo_table[table.photo_table >= 0].tolist()))} distinct table(s) here): "
                       "within identical tables the table says nothing of the model.")
    no_table = int((table.photo_table < 0).sum())
    if no_table and (fusion == FIT or isinstance(fusion, FittedFusion)):
        notes.append(f"{no_table} photo(s) carry no JPEG luminance table (not JPEG): the fitted fusion "
                     f"{'fits and scores' if fusion == FIT else 'scores'} every pair with one of them by its "
                     "different-tables weights.")
    layout = table.layout()
    n_models = len(table.models)
    rng = np.random.default_rng(int(t.seed))
    pp = sample_patch_pairs(layout, n_models, int(t.pairs.per_photo), int(t.pairs.per_photo_pair),
                            int(t.pairs.photo_pairs_per_model), int(t.pairs.per_model_pair), rng)
    half = halves(table.yx[:, 0], settings.size, table.photo_height[table.photo])
    ip = sample_image_pairs(layout, n_models, half, int(t.image.patch_pairs), int(t.pairs.photo_pairs_per_model),
                            int(t.image.photo_pairs_per_model_pair), rng)
    base_on = bool(cfg.eval.baseline)

    def same_table(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Per pair: its two photos carry the identical JPEG luminance table (a photo without one: no)."""
        a, b = table.photo_table[table.photo[i]], table.photo_table[table.photo[j]]
        return (a >= 0) & (a == b)

    def score(i: np.ndarray, j: np.ndarray, logits: list | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Pair scores (several networks' ``logits`` fused by ``fusion``) and the Bray–Curtis baseline
        (several networks': their mean)."""
        s = fuse_scores(logits, fusion, same_table(i, j) if isinstance(fusion, FittedFusion) else None) if fused else \
            nets.sims[0].score_pairs(table.features, i, j).astype(np.float64)
        b = np.mean([bray_curtis_similarity(tab.probs[i], tab.probs[j]).astype(np.float64) for tab in tables], 0) \
            if base_on else None
        return s, b

    def logits_of(i: np.ndarray, j: np.ndarray) -> list | None:
        return [sim.score_pairs(tab.features, i, j, logits=True) for sim, tab in zip(nets.sims, tables)] \
            if fused else None

    patch_z, img_z = logits_of(pp.i, pp.j), logits_of(ip.i, ip.j)
    if fusion == FIT:
        same = np.asarray(pp.categories)[pp.category] != "diff_model"  # two patches of one photo or model
        fusion = FittedFusion(fit_fusion(patch_z, same, same_table(pp.i, pp.j)), nets.identities(),
                              {"source": f"{type(source).__name__} {index.root}", "models": len(table.models),
                               "photos": len(table.photo_path), "patch_pairs": int(len(pp.i)),
                               "same": int(same.sum()), "different": int((~same).sum())})
        fusion.path = str(fusion.save(Path(cfg.paths.output_dir) / "fusion.json"))
        log.info("  fusion=fit: %s (weights per table relation, bias first: different %s, identical %s)",
                 fusion.path, np.round(fusion.weights[0], 3).tolist(), np.round(fusion.weights[1], 3).tolist())
    patch_s, patch_b = score(pp.i, pp.j, patch_z)
    img_patch_s, img_patch_b = score(ip.i, ip.j, img_z)
    how = str(t.image.aggregate)
    img_s = ip.aggregate(img_patch_s, how)
    img_b = ip.aggregate(img_patch_b, how) if base_on else None
    pm = table.photo_model
    levels = {
        "patch": LevelScores("patch", np.asarray(pp.categories)[pp.category], table.photo[pp.i], table.photo[pp.j],
                             make_relation(makes, pm[table.photo[pp.i]], pm[table.photo[pp.j]]), patch_s, patch_b),
        "image": LevelScores("image", np.asarray(ip.categories)[ip.category], ip.photo_1, ip.photo_2,
                             make_relation(makes, pm[ip.photo_1], pm[ip.photo_2]), img_s, img_b),
    }
    if n_models == 1:
        notes.append(f"One camera model ({table.models[0]}): no different-model pairs, so no ROC, TNR or EER; "
                     "the same-model categories are reported.")
    single = [m for k, m in enumerate(table.models) if (pm == k).sum() == 1]
    if single:
        notes.append(f"{len(single)} model(s) with one usable photo give no cross-photo pairs: {', '.join(single)}.")

    results: dict[str, dict] = {}
    for level, ls in levels.items():
        contrasts, about = contrasts_of(ls, table.photo_quality, fine_q, far_gap, table.photo_table)
        etas = {name: choose_threshold(c, eta, str(t.threshold)) for name, c in contrasts.items()}
        point = {name: c.figures(etas[name]) for name, c in contrasts.items()}
        log.info("  %s level: %s; bootstrap %d reps", level,
                 ", ".join(f"{k} {int((ls.category == k).sum())}" for k in dict.fromkeys(ls.category)) or "no pairs",
                 int(t.bootstrap.reps))
        ci = bootstrap(contrasts, etas, pm, int(t.bootstrap.reps), float(t.bootstrap.level), int(t.seed)) \
            if contrasts else {}
        for name, info in about.items():
            results[name] = {"level": level, **info, "eta": etas.get(name), "figures": point.get(name, {}),
                             "ci": ci.get(name, {}), "contrast": contrasts.get(name)}
    run = {"checkpoint": " + ".join(str(p.resolve()) for p in nets.paths), "networks": len(nets.sims),
           "fusion": (fusion if isinstance(fusion, str) else fusion.path) if fused else None, "source": repr(source),
           "source_name": f"{type(source).__name__} {index.root}", "photos_in_source": index.counts(), "eta": eta,
           "threshold": str(t.threshold), "aggregate": how, "fine_jpeg_quality": fine_q, "far_jpeg_gap": far_gap,
           "skipped_files": skipped, "no_patch_photos": table.no_patch,
           "timings_s": {"transfer": round(time.perf_counter() - t0, 2)}}
    return write_outputs(Path(cfg.paths.output_dir), cfg, nets=nets, table=table, roles=roles, makes=makes,
                         results=results, levels=levels, patch_pairs=pp, image_pairs=ip,
                         patch_scores=(patch_s, patch_b),
                         image_patch_scores=(img_patch_s, img_patch_b), notes=notes,
                         fingerprints=(fp_each if several else fp_each[0], fp_here),
                         settings=settings, run=run, dropped=dropped)


__all__ = ["run_transfer", "load_checkpoint", "Networks", "training_role", "contrasts_of", "make_relation",
           "photo_bands", "PatchTable", "LevelScores", "read_index", "patch_settings"]
