"""Localisation with a trained similarity network: one image, or a folder in batch mode.

Features are computed once per patch by the frozen backbone, and the similarity head's
per-patch part of them (:meth:`SimilarityNet.row_terms`) once per patch too; pairs are scored
from those rows (:meth:`SimilarityNet.score_rows`).

Patch settings have one source of truth, the checkpoint's training recipe
(``sim.patch_settings``: ``size``, ``align``, ``min_entropy``): the patch size and the
8-px alignment always come from it, ``min_entropy`` unless ``opts.min_entropy`` is set
(``null`` → the recipe's, or 4.0 for checkpoints saved before the recipe was recorded);
which one was used is logged and kept in ``Localizer.min_entropy_source``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch
from PIL import Image

from camsim.artefacts import atomic_write_json
from camsim.data.io import ImageReadError, error_reason, read_rgb
from camsim.data.patches import green_of
from camsim.data.sources import IMAGE_EXTENSIONS
from camsim.localize.engine import MAX_GRAPH_NODES, LocalizationResult, calibrate_threshold, expected_far, localize
from camsim.localize.grid import LocalizationError, PhotoError
from camsim.localize.outputs import OVERLAY_MAX_SIDE, write_outputs
from camsim.models.feature_pass import FeaturePass, feature_batch_size
from camsim.models.portable import weights_file
from camsim.models.fusion import FittedFusion, check_fusion, fuse_scores
from camsim.plain import file_sha256
from camsim.progress import track

log = logging.getLogger(__name__)

CSV_COLUMNS = ["image", "status", "decision", "score", "threshold", "mode", "decidable_patches", "patches",
               "suspect_share", "brightness_auc", "seconds", "cpu_s", "features_s", "other_s", "read_s", "scoring_s",
               "graph_s", "write_s", "out_dir", "message"]
#: a "spliced" photo whose suspected patches' brightness AUC is this far from 0.5 (≤ 0.2 or ≥ 0.8) gets a note
#: in the log: its cut may follow light and shadow (measured on authentic photos, docs/experiments.md)
BRIGHTNESS_NOTE = 0.3
#: min_entropy when neither the options nor the checkpoint give one (docs/method.md, "Patch entropy")
DEFAULT_MIN_ENTROPY = 4.0


def _opt(opts: Any, key: str, default: Any) -> Any:
    """``opts.key`` or ``default`` when the options (a DictConfig, or any object) lack it."""
    try:
        v = getattr(opts, key)
    except AttributeError:
        return default
    return default if v is None else v


def resolve_min_entropy(option: float | None, patch_settings: dict | None) -> tuple[float, str]:
    """``min_entropy`` and its source: the option when set, else the checkpoint's training
    recipe (``patch_settings["min_entropy"]``), else :data:`DEFAULT_MIN_ENTROPY`."""
    if option is not None:
        return float(option), "option min_entropy"
    if (patch_settings or {}).get("min_entropy") is not None:
        return float(patch_settings["min_entropy"]), "checkpoint training recipe"
    return DEFAULT_MIN_ENTROPY, "default 4.0 (checkpoint has no patch settings)"


class Localizer:
    """A similarity checkpoint turned into the engine's ``extract`` / ``score_matrix`` callables.

    ``extract`` gives each patch's row terms of the similarity head
    (:meth:`~camsim.models.similarity.SimilarityNet.row_terms` of f(X)): the head's branch runs
    once per patch, not once per ``score_matrix`` call, and ``score_matrix`` pairs them
    (:meth:`~camsim.models.similarity.SimilarityNet.score_rows`).

    The uncompiled feature pass runs ``batch`` patches per forward where its pixel budget
    allows (:func:`~camsim.models.feature_pass.feature_batch_size` with cap ``batch``: 256 at
    64 px, 16 at 256 px): the engine hands it ``batch`` patches at a time anyway, and the quick
    recipe's small network did ~1.15× more patches per CPU-second in batches of 128–256 than
    of 32 (``FeaturePass`` A/B in one process, 2 shared cores of an AMD EPYC, 2026-12-03). A
    compiled pass keeps its default batch (its static shape; measured best at 32 for 64 px).

    ``compile_scoring``: the head's fused pair kernel (``score_rows(compile=True)``: ~3× faster
    pair scoring of a concat head with one hidden layer; compiled once per process, ~2–8 s, so
    ``camsim-localize`` turns it on for a folder and off for one image unless told).
    """

    def __init__(self, sim: Any, batch: int = 256, channels_last: bool = True, compile: bool = False,
                 compile_scoring: bool = False):
        self.sim = sim.eval()
        self.batch = batch
        self.patch = sim.patch_size
        self.channels = int(sim.backbone.in_channels)  # 1: green patches, 3: RGB
        self.patch_settings = getattr(sim, "patch_settings", None)
        self.align = int((self.patch_settings or {}).get("align") or 8)
        self.feature_pass = FeaturePass(sim.backbone, [sim.feature_layer],
                                        None if compile else feature_batch_size(self.patch, cap=batch),
                                        channels_last=channels_last, compile=compile)
        self.compile_scoring = bool(compile_scoring)
        self._logged: set[str] = set()

    def min_entropy(self, opts: Any) -> tuple[float, str]:
        """The entropy threshold for ``opts`` and where it came from (logged once per source)."""
        value, source = resolve_min_entropy(_opt(opts, "min_entropy", None), self.patch_settings)
        if source not in self._logged:
            self._logged.add(source)
            log.info("min_entropy %.3g nats (%s); patch %d px, alignment %d px (checkpoint)", value, source,
                     self.patch, self.align)
        return value, source

    def eta(self, opts: Any) -> tuple[float, str]:
        """Reference mode's patch threshold for ``opts`` and where it came from: the option ``eta``,
        else the network's own (an exported folder's ``eta``, a checkpoint's ``hparams.eta``; several
        networks: their mean, as ``camsim-eval eval.eta=auto``). Logged once per source."""
        if _opt(opts, "eta", None) is not None:
            value, source = float(opts.eta), "option eta"
        else:
            sims = [m.sim for m in getattr(self, "members", [self])]
            value, source = float(np.mean([float(s.hparams.get("eta", 0.5)) for s in sims])), "the network's"
        if f"eta {source}" not in self._logged:
            self._logged.add(f"eta {source}")
            log.info("eta %.4g (%s): reference mode calls a patch S <= eta 'different source'", value, source)
        return value, source

    @torch.no_grad()
    def extract(self, patches: np.ndarray) -> np.ndarray:
        """The head's row terms ``[N, k]`` of uint8 patches ``[N, P, P]``: the frozen backbone's
        feature pass f(X), then the head's branch and first-layer terms (once per patch)."""
        f = self.feature_pass.extract(patches)[self.sim.feature_layer]
        return self.sim.head.row_terms(torch.from_numpy(f).to(self.sim.device)).cpu().numpy()

    @torch.no_grad()
    def score_matrix(self, R1: np.ndarray, R2: np.ndarray | None) -> np.ndarray:
        """S ``[N, M]`` of every pair of row terms (``R2=None``: ``R1`` against itself)."""
        r1 = torch.from_numpy(R1).to(self.sim.device)
        r2 = r1 if R2 is None else torch.from_numpy(R2).to(self.sim.device)
        return self.sim.head.score_rows(r1, r2, compile=self.compile_scoring).cpu().numpy()

    def run(self, green: np.ndarray, opts: Any, progress: bool = False,
            colour: np.ndarray | None = None) -> LocalizationResult:
        """Localise ``green`` with the options of ``opts`` (camsim-localize's config keys; the
        keys added by issue 17 — ``cover_border``, ``max_graph_nodes``, ``graph_method`` —
        may be absent and then take the engine's defaults). ``colour``: the photo in RGB
        ``[H, W, 3]``, needed by (and only used for) a network that takes RGB patches."""
        if self.channels == 3 and colour is None:
            raise LocalizationError("this network takes RGB patches (in_channels=3): pass colour, the photo in RGB")
        ref = opts.reference
        if ref is not None and not isinstance(ref, str):
            ref = (int(ref[0]), int(ref[1]))
        min_entropy, source = self.min_entropy(opts)
        eta, eta_source = self.eta(opts)
        result = localize(green, self.extract, self.score_matrix, self.patch,
                          stride=opts.stride, min_entropy=min_entropy, mode=str(opts.mode),
                          reference=ref, eta=eta, batch=self.batch,
                          decision_threshold=_opt(opts, "decision_threshold", None),
                          max_graph_nodes=int(_opt(opts, "max_graph_nodes", MAX_GRAPH_NODES)),
                          graph_method=str(_opt(opts, "graph_method", "spectral")),
                          cover_border=bool(_opt(opts, "cover_border", True)), align=self.align,
                          progress=progress, colour=colour if self.channels == 3 else None,
                          max_clipped=_max_clipped(opts))
        result.stats.update(min_entropy=min_entropy, min_entropy_source=source, eta=eta, eta_source=eta_source)
        return result


class FusedLocalizer(Localizer):
    """Several similarity networks localising as one (``camsim-localize ckpt=[a, b]``): each patch's
    row terms of every network side by side, each pair's S fused from the networks' logits
    (:func:`~camsim.models.fusion.fuse_scores`, rule ``fusion``) — the fusion of the transfer
    evaluation's ``ckpt=[a, b]``; a fitted fusion uses its identical-table weights (one photo, one table). The networks must cut the same patches (size and alignment of
    their recipes, and the same entropy threshold: their recipes' or the option ``min_entropy``);
    RGB patches are cut when any of them takes them, and a green network reads their green plane
    (the same pixels as a green patch)."""

    def __init__(self, sims: Sequence[Any], fusion: Any = "logit", **kwargs: Any):
        self.fusion = check_fusion(fusion)
        self.members = [Localizer(sim, **kwargs) for sim in sims]
        cuts = [(m.patch, m.align) for m in self.members]
        if len(set(cuts)) > 1:
            raise ValueError("ckpt: the networks cut different patches (size, align: "
                             + "; ".join(map(str, cuts)) + "), so they cannot score the same pairs")
        first = self.members[0]
        self.sim, self.batch, self.patch, self.align = first.sim, first.batch, first.patch, first.align
        self.patch_settings, self.compile_scoring = first.patch_settings, first.compile_scoring
        self.channels = max(m.channels for m in self.members)
        self._logged = set()

    def min_entropy(self, opts: Any) -> tuple[float, str]:
        """The option ``min_entropy`` when set, else the networks' common recipe threshold (a
        ValueError when their recipes differ: the pairs of one patch set need one threshold)."""
        if _opt(opts, "min_entropy", None) is None:
            own = [resolve_min_entropy(None, m.patch_settings)[0] for m in self.members]
            if len(set(own)) > 1:
                raise ValueError(f"ckpt: the networks' recipes drop patches below different entropies ({own} nats); "
                                 f"give one threshold for all: min_entropy={max(own):g} (camsim-localize) or "
                                 f"splicing.min_entropy={max(own):g} (the splicing benchmark)")
        return super().min_entropy(opts)

    def extract(self, patches: np.ndarray) -> np.ndarray:
        """Every network's row terms of ``patches``, side by side ``[N, Σ k]``."""
        return np.concatenate([m.extract(green_of(patches) if m.channels == 1 else patches) for m in self.members],
                              axis=1)

    @torch.no_grad()
    def score_matrix(self, R1: np.ndarray, R2: np.ndarray | None) -> np.ndarray:
        """S ``[N, M]``: each network's logits of every pair from its own columns, fused."""
        logits, at = [], 0
        for m in self.members:
            width = m.sim.head.row_width()
            r1 = torch.from_numpy(np.ascontiguousarray(R1[:, at:at + width])).to(m.sim.device)
            r2 = r1 if R2 is None else torch.from_numpy(np.ascontiguousarray(R2[:, at:at + width])).to(m.sim.device)
            logits.append(m.sim.head.score_rows(r1, r2, logits=True, compile=m.compile_scoring).cpu().numpy())
            at += width
        return fuse_scores(logits, self.fusion, same_table=True).astype(np.float32)  # one photo, one table


def localizer_for(sims: Sequence[Any], fusion: Any = "logit", **options: Any) -> Localizer:
    """One network's :class:`Localizer`, or several localising as one (:class:`FusedLocalizer`,
    rule ``fusion``) — what ``ckpt=`` or ``ckpt=[a, b]`` asks for, in camsim-localize and the
    splicing benchmark alike."""
    fitted = isinstance(check_fusion(fusion), FittedFusion)     # one network's logit reweighted: fused too
    return FusedLocalizer(sims, fusion=fusion, **options) if len(sims) > 1 or fitted else \
        Localizer(sims[0], **options)


def _palette_note(path: Path) -> str:
    """Why a palette image (mode P / PA) has few decidable patches: colours quantised to <= 256."""
    try:
        with Image.open(path) as im:
            palette = im.mode in ("P", "PA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return "; a palette image (<= 256 colours): its quantised colours erased the camera's traces" if palette else ""


def localize_file(loc: Localizer, path: Path, out_dir: Path, opts: Any, max_pixels: int,
                  save_scores: bool = True) -> tuple[LocalizationResult, str]:
    """Localise one image file; write overlay/heatmap/patches/mask (and scores) into ``out_dir``.

    The file is decoded once (RGB; the analysis reads its green channel, which is what
    ``read_green`` returns, and a network with ``in_channels=3`` its RGB patches). The overlay
    is a preview of at most ``opts.overlay_max_side`` pixels per side (default :data:`~camsim.localize.outputs.OVERLAY_MAX_SIDE`; 0: full
    resolution). ``result.stats["timing"]`` gains ``read_s`` (decode), ``graph_s`` (grid,
    entropy, graph, maps: the engine's time outside features and pair scoring),
    ``write_s``, ``seconds`` (the whole file) and ``cpu_s`` (this process's CPU seconds in it,
    all threads: on a shared machine, what the photo cost apart from waiting); ``features_s`` / ``scoring_s`` are the
    feature pass and the pair scoring within it.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    rgb = read_rgb(path, max_pixels=max_pixels)
    green = np.ascontiguousarray(rgb[..., 1])
    t_read = time.perf_counter() - t0
    try:
        result = loc.run(green, opts, progress=True, colour=rgb)
    except PhotoError as err:
        if note := _palette_note(path):
            raise PhotoError(f"{err}{note}") from err
        raise
    t1 = time.perf_counter()
    max_side = _opt(opts, "overlay_max_side", OVERLAY_MAX_SIDE)
    line = write_outputs(result, out_dir, rgb=rgb, save_scores=save_scores, overlay_max_side=int(max_side) or None)
    if result.decision and abs(result.brightness_auc - 0.5) >= BRIGHTNESS_NOTE:
        auc = result.brightness_auc
        log.info("%s: the suspected patches are the image's %s ones (brightness AUC %.2f): exposure differences within "
                 "one camera's photo move these scores too — check that the cut is not just light and shadow",
                 path.name, "brighter" if auc > 0.5 else "darker", auc)
    timing = result.stats["timing"]
    timing.update(read_s=t_read, graph_s=timing["total_s"] - timing["features_s"] - timing["scoring_s"],
                  write_s=time.perf_counter() - t1, seconds=time.perf_counter() - t0,
                  cpu_s=time.process_time() - c0)
    return result, f"{path.name}: {line}"


def timing_line(result: LocalizationResult) -> str:
    """``time 15.8 s: feature pass 9.4 s, everything else 6.4 s (…)`` for one file."""
    t = result.stats["timing"]
    other = t["seconds"] - t["features_s"]
    return (f"time {t['seconds']:.1f} s: feature pass {t['features_s']:.1f} s, everything else {other:.1f} s "
            f"(read {t['read_s']:.1f} s, pair scoring {t['scoring_s']:.1f} s, grid/entropy/graph/maps "
            f"{t['graph_s']:.1f} s, writing outputs {t['write_s']:.1f} s)")


def output_names(images: Sequence[Path]) -> dict[Path, str]:
    """Each image's output folder in batch mode: its stem, or stem and extension (``a_jpg``,
    ``a_png``) where two images of the folder share a stem, and a counter (``a_jpg_2``) where that
    name is taken too (``a_jpg.png``; case ignored) — one folder each, none overwritten."""
    stems = Counter(p.stem for p in images)
    wanted = {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in images}
    taken = {n.casefold() for n in wanted.values()}   # no photo is renamed into another's name
    names: dict[Path, str] = {}
    seen: set[str] = set()
    for p, name in wanted.items():
        unique, k = name, 1
        if name.casefold() in seen:
            while unique.casefold() in taken:
                k += 1
                unique = f"{name}_{k}"
            taken.add(unique.casefold())
        seen.add(name.casefold())
        names[p] = unique
    return names


#: errors of one image that a folder run (and the splicing benchmark) turns into that image's
#: error row and goes on: :func:`image_error` says why, or re-raises a RuntimeError of another kind
IMAGE_ERRORS = (ImageReadError, LocalizationError, MemoryError, RuntimeError, np.linalg.LinAlgError)
#: torch's out-of-memory on CPU (DefaultCPUAllocator) is a plain RuntimeError: known by its message
_NO_MEMORY = re.compile(r"can't allocate memory|cannot allocate memory|not enough memory|out of memory", re.I)


def image_error(err: BaseException, oom_hint: str = "") -> str | None:
    """Why one image could not be analysed (its row's message), for an error of
    :data:`IMAGE_ERRORS`: unreadable, not localisable, out of memory (``MemoryError``, torch's
    out-of-memory on GPU or CPU; ``oom_hint`` appended) or a numerical failure (LinAlgError,
    ArpackError). ``None`` for any other error (a RuntimeError not about memory): the run must stop."""
    if isinstance(err, (ImageReadError, LocalizationError)):
        return error_reason(err)
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(err, RuntimeError) and _NO_MEMORY.search(str(err))):
        torch.cuda.empty_cache()  # the next photo starts with the memory this one held (no-op without CUDA)
        return "out of memory" + (f" ({oom_hint})" if oom_hint else "")
    if isinstance(err, (np.linalg.LinAlgError, scipy.sparse.linalg.ArpackError)):
        return f"numerical failure ({type(err).__name__}: {err})"
    return None


def _localize_row(loc: Localizer, path: Path, out: Path, opts: Any, max_pixels: int, save_scores: bool,
                  scores: list[float]) -> dict:
    """One image of a folder as its CSV row (an image that cannot be analysed: why, and the
    folder goes on — a photo too large for memory included); its score appended to ``scores``."""
    row = {"image": str(path), "out_dir": "", "mode": opts.mode}
    try:
        result, _ = localize_file(loc, path, out, opts, max_pixels, save_scores=save_scores)
    except IMAGE_ERRORS as err:
        reason = image_error(err, oom_hint="lower max_pixels, or localise it alone")
        if reason is None:
            raise
        row.update(status="error", message=reason)
        log.warning("%s: %s", path, reason)
        return row
    t = result.stats["timing"]
    row.update(status="ok", decision="spliced" if result.decision else "not spliced",
               score=f"{result.score:.4f}", threshold=f"{result.threshold:.4f}",
               decidable_patches=result.n_decidable, patches=len(result.positions),
               suspect_share=f"{result.suspect_share:.4f}", brightness_auc=f"{result.brightness_auc:.3f}",
               seconds=f"{t['seconds']:.2f}",
               features_s=f"{t['features_s']:.2f}", other_s=f"{t['seconds'] - t['features_s']:.2f}",
               **{k: f"{t[k]:.2f}" for k in ("cpu_s", "read_s", "scoring_s", "graph_s", "write_s")},
               out_dir=str(out), message=result.message)
    scores.append(float(result.score))
    return row


def localize_folder(loc: Localizer, folder: Path, out_dir: Path, opts: Any, max_pixels: int) -> Path:
    """Batch mode: every image of ``folder``; one CSV row per image (failures say why),
    with the seconds per image (whole, feature pass, everything else; and its parts: decode,
    pair scoring, grid/entropy/graph/maps, writing). One process and one feature pass
    (compiled once with ``feature_pass.compile=true``) serve the whole folder. ``scores.npy`` only
    with ``save_scores: true``. With ``calibrate_far`` (the folder holds authentic images)
    the threshold with that false-alarm rate on the folder's scores is logged and written
    to ``calibration.json``."""
    far = check_calibrate_far(_opt(opts, "calibrate_far", None), folder=True)   # before any photo runs
    setting = calibration_setting(loc, opts) if far is not None else None       # ditto (reads the weights)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    left = [f"{p.name}/ (a sub-folder: not searched)" if p.is_dir() else f"{p.name} (extension not in "
            f"{', '.join(IMAGE_EXTENSIONS)})" for p in entries if p not in images]
    if left:
        log.warning("%s: %d entr%s not analysed: %s", folder, len(left), "y" if len(left) == 1 else "ies",
                    "; ".join(left))
    out_names = output_names(images)
    save_scores = bool(_opt(opts, "save_scores", False))
    rows = []
    scores: list[float] = []                                     # full precision, for calibration
    out = out_dir / "localize.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:  # a row per image as it is done: a stopped run keeps them
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for path in track(images, desc=f"localising {len(images)} images"):
            rows.append(_localize_row(loc, path, out_dir / out_names[path], opts, max_pixels, save_scores, scores))
            w.writerow(rows[-1])
            fh.flush()
    ok = [r for r in rows if r["status"] == "ok"]

    n_err = len(rows) - len(ok)
    log.info("%d images: %d spliced, %d not spliced, %d errors", len(rows),
             sum(r["decision"] == "spliced" for r in ok), sum(r["decision"] == "not spliced" for r in ok), n_err)
    if far is not None:
        thr = calibrate_threshold(scores, float(far))
        cal = {"threshold": thr, "target_far": float(far), "mode": str(opts.mode),
               "graph_method": str(_opt(opts, "graph_method", "spectral")),
               "setting": setting, "n_images": len(scores),
               "n_errors": n_err, "folder": str(folder),
               "achieved_far": float(np.mean(np.asarray(scores) >= thr)),
               "expected_far_new_images": expected_far(len(scores), float(far))}
        atomic_write_json(out_dir / "calibration.json", cal)
        # the threshold in full (repr): a rounded one can sit below a calibration score and flag it
        log.info("calibrated on %d authentic images: false-alarm rate %.3f <= %.3f on them, %.3f to expect on new "
                 "images of that kind ((k+1)/(n+1): more images, closer to the target); pass it as "
                 "decision_threshold=%r", len(scores), cal["achieved_far"], float(far), cal["expected_far_new_images"],
                 thr)
    return out


def _fusion_id(rule: str) -> str:
    """A fusion rule, or a fitted fusion's file by its content (a refit under the same name differs)."""
    return f"{rule} (sha256 {file_sha256(rule)[:16]})" if rule.endswith(".json") else rule


def _max_clipped(opts: Any) -> float | None:
    """The option ``max_clipped`` (near-white patches undecidable above that clipped share) as a float or None."""
    value = _opt(opts, "max_clipped", None)
    return None if value is None else float(value)


def calibration_setting(loc: Localizer, opts: Any) -> dict:
    """What an image-level threshold is calibrated for: the networks (their weights' sha256), how
    their scores are fused, the patch grid (stride, border), which patches count (entropy,
    ``max_clipped``) and the image score (mode, graph method, landmark count; reference mode's η).
    The same photos give other scores under another setting, so a threshold carries no
    false-alarm rate there."""
    ckpts = list(opts.ckpt) if isinstance(opts.ckpt, Sequence) and not isinstance(opts.ckpt, str) else [opts.ckpt]
    mode = str(opts.mode)
    stride = _opt(opts, "stride", None)
    reference = _opt(opts, "reference", None) if mode == "reference" else None
    rule = str(_opt(opts, "fusion", "logit"))
    return {"networks": [file_sha256(weights_file(Path(str(c)).expanduser())) for c in ckpts],
            "fusion": _fusion_id(rule) if len(ckpts) > 1 or rule.endswith(".json") else None,
            "mode": mode, "graph_method": str(_opt(opts, "graph_method", "spectral")) if mode == "graph" else None,
            "max_graph_nodes": int(_opt(opts, "max_graph_nodes", MAX_GRAPH_NODES)) if mode == "graph" else None,
            "eta": loc.eta(opts)[0] if mode == "reference" else None,
            "reference": reference if reference is None or isinstance(reference, str) else [int(v) for v in reference],
            "stride": int(loc.patch) // 2 if stride is None else int(stride),   # the grid: null is half a patch
            "cover_border": bool(_opt(opts, "cover_border", True)), "min_entropy": loc.min_entropy(opts)[0],
            "max_clipped": _max_clipped(opts)}


def resolve_decision_threshold(value: Any, loc: Localizer, opts: Any) -> float | None:
    """``decision_threshold`` as a number: given as one, or as the ``calibration.json`` of a folder run
    with ``calibrate_far`` — then only when this run's :func:`calibration_setting` is the one it was
    calibrated for (a ValueError naming each difference otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    path = Path(str(value))
    try:
        cal = json.loads(path.read_text())
        threshold, setting = float(cal["threshold"]), cal["setting"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        why = f"no {err} in it (written before settings were recorded? pass its threshold as a number)" \
            if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ValueError(f"decision_threshold={value}: a number or a calibration.json of camsim-localize "
                         f"calibrate_far=…; {why}") from err
    now = calibration_setting(loc, opts)
    diff = [f"{k}: calibrated {setting.get(k)!r}, now {now[k]!r}" + (" (the sha256 of each weights file: a checkpoint "
            "and its camsim-export folder differ)" if k == "networks" else "")
            for k in now if setting.get(k) != now[k]]
    if diff:
        raise ValueError(f"decision_threshold={value} was calibrated for another setting, where its false-alarm "
                         f"rate does not hold — {'; '.join(diff)}")
    log.info("decision_threshold %r from %s (false-alarm rate %s on %s authentic images)", threshold, path,
             cal.get("achieved_far"), cal.get("n_images"))
    return threshold


def check_calibrate_far(far: Any, folder: bool) -> float | None:
    """``calibrate_far`` as a float, checked before anything runs: a false-alarm rate in [0, 1)
    (a ValueError naming the key otherwise); given for one image (``folder=False``) it does
    nothing, and a warning says so."""
    if far is None:
        return None
    try:
        value = float(far)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"calibrate_far={far!r}: a false-alarm rate in [0, 1) (0.05 for 5 %), or null")
    if not folder:
        log.warning("calibrate_far=%s ignored: it calibrates on a folder of authentic images, not one image", far)
    return value


def check_reference(ref: Any) -> Sequence[int] | str | None:
    if ref is None or ref == "auto":
        return ref
    if isinstance(ref, str) or len(ref) != 2:
        raise ValueError(f"localize.reference must be 'auto' or [y, x] pixel coordinates, got {ref!r}")
    return ref
