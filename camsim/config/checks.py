"""Checks and helpers on composed configs: what the schema cannot express, validated at start
(:func:`validate`), and the few readings every stage shares (:func:`to_plain`,
:func:`feature_layer`, :func:`backbone_config`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from camsim.config.schema import LOCALIZATION_MODES
from camsim.config.synth import SynthTraitsConfig, without_later_keys_off
from camsim.plain import to_plain


def feature_layer(cfg: DictConfig) -> str:
    """The backbone layer whose output is f(X) for Phase B: ``phase_b.feature_layer``
    (``model.feature_layer``, where it was before, still wins, with a deprecation warning)."""
    old = cfg.model.get("feature_layer")
    if old is not None:
        warnings.warn(f"model.feature_layer is deprecated: use phase_b.feature_layer={old}", FutureWarning,
                      stacklevel=2)
        return str(old)
    return str(cfg.phase_b.feature_layer)


def backbone_config(cfg: DictConfig) -> dict:
    """The ``model`` config as the backbone takes it (without the deprecated ``feature_layer``, and
    without ``jpeg.dropout`` while it is 0: the key every artefact had before the option existed)."""
    model = {k: v for k, v in to_plain(cfg.model).items() if k != "feature_layer"}
    if isinstance(model.get("jpeg"), dict) and not model["jpeg"].get("dropout", 0):
        model["jpeg"] = {k: v for k, v in model["jpeg"].items() if k != "dropout"}
    return model


def data_fingerprint(data: Any) -> dict:
    """What identifies a data source: its ``data`` node (or a recorded copy of one) without the
    settings that do not change its images (``workers``, ``cache_dir``), ``root`` resolved to an
    absolute path — what a checkpoint records of its training data, and what a later evaluation
    compares with it."""
    fp = {k: v for k, v in to_plain(data).items() if k not in ("workers", "cache_dir")}
    if "synth" in fp or "jpeg_presets" in fp:
        # one form for the simulator's settings: data.jpeg_presets (deprecated alias) folded into
        # synth.jpeg.presets_per_model, synth left out while every trait is off (as before it existed)
        default = asdict(SynthTraitsConfig())
        synth = fp.pop("synth", None) or default
        presets = fp.pop("jpeg_presets", 1)
        if presets != 1 and synth["jpeg"]["presets_per_model"] == 1:
            synth = {**synth, "jpeg": {**synth["jpeg"], "presets_per_model": presets}}
        synth, default = without_later_keys_off(synth), without_later_keys_off(default)
        if synth != default:
            fp["synth"] = synth
    if fp.get("root"):
        fp["root"] = str(Path(str(fp["root"])).expanduser().resolve())
    return fp


def check_set_spec(key: str, value: Any) -> None:
    """``split.<key>`` must be a count ≥ 1, a non-empty list of model names, or (``a`` only)
    ``rest``; ValueError naming the key otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"split.{key} must be a count or a list of model names, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"split.{key} must be ≥ 1 (got {value}): every set must be non-empty")
        return
    if isinstance(value, str):
        if key == "a" and value == "rest":
            return
        raise ValueError(f"split.{key} must be a count or a list of model names, got {value!r}")
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) == 0:
            raise ValueError(f"split.{key} is an empty list: every set must be non-empty")
        return
    raise ValueError(f"split.{key} must be a count or a list of model names, got {value!r}")


def unknown_keys(node: Any, path: str = "") -> list[str]:
    """Keys of schema'd nodes that their dataclass does not have — what ``+key=value`` slips past
    Hydra's own check (e.g. ``+patches.sizee=64``)."""
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    names = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    out = []
    for key in node.keys():
        full = f"{path}{key}"
        if names is not None and key not in names:
            out.append(full)
        elif isinstance(node._get_node(key), DictConfig):
            out += unknown_keys(node[key], full + ".")
    return out


def check_recompress(rc: Any, cache_features: bool) -> None:
    """``phase_b.recompress``: a share in [0, 1] and a quality range [low, high] within 1–100."""
    share = float(rc.share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"phase_b.recompress.share={rc.share}: a fraction of the training patches, 0 (off) to 1")
    q = list(rc.quality)
    if len(q) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in q) or not 1 <= q[0] <= q[1] <= 100:
        raise ValueError(f"phase_b.recompress.quality={q}: [low, high], whole IJG qualities with 1 <= low <= high <= 100")
    if share > 0 and not cache_features:
        raise ValueError("phase_b.recompress.share > 0 needs phase_b.cache_features=true (the twins' features are "
                         "computed once, like the patches')")


def validate(cfg: DictConfig) -> None:
    """Checks the schema cannot express; raises ValueError naming the key."""
    extra = [k for k in unknown_keys(cfg) if k != "hydra" and not k.startswith("hydra.")]
    if extra:
        raise ValueError(f"unknown config key(s) {extra}: not in the schema (camsim/config/schema.py) — a typo? "
                         "`camsim-run --cfg job` prints every key")
    for phase in ("phase_a", "phase_b"):
        if int(cfg[phase].max_epochs) < 1:
            raise ValueError(f"{phase}.max_epochs={cfg[phase].max_epochs}: a learning phase needs at least 1 epoch")
    start = cfg.phase_a.get("average_from")
    if start is not None and not 0 <= int(start) < int(cfg.phase_a.max_epochs):
        raise ValueError(f"phase_a.average_from={start}: the epoch (0 to phase_a.max_epochs - 1 = "
                         f"{int(cfg.phase_a.max_epochs) - 1}) from which the weights are averaged, or null (off)")
    ft = cfg.phase_b.get("finetune")
    if ft is not None and ft.enabled:
        if int(ft.max_epochs) < 1:
            raise ValueError(f"phase_b.finetune.max_epochs={ft.max_epochs}: fine-tuning needs at least 1 epoch "
                             "(or phase_b.finetune.enabled=false)")
        if int(ft.train_pairs) < 2:
            raise ValueError(f"phase_b.finetune.train_pairs={ft.train_pairs}: needs ≥ 2 (one same, one different pair)")
        if ft.backbone_lr is not None and not float(ft.backbone_lr) > 0:
            raise ValueError(f"phase_b.finetune.backbone_lr={ft.backbone_lr}: must be > 0 (null: the optimiser's lr)")
    rc = cfg.phase_b.get("recompress")
    if rc is not None:
        check_recompress(rc, bool(cfg.phase_b.cache_features))
    if cfg.model.get("in_channels", 1) not in (1, 3):
        raise ValueError(f"model.in_channels={cfg.model.in_channels}: 1 (green-channel patches, the paper's) or "
                         "3 (RGB patches)")
    size, min_h = int(cfg.patches.size), float(cfg.patches.min_entropy)
    if math.log(min(size * size, 256)) <= min_h + 0.5:
        raise ValueError(f"patches.size={size}: a {size}x{size} patch has at most ln({min(size * size, 256)}) = "
                         f"{math.log(min(size * size, 256)):.2f} nats of entropy, too close to patches.min_entropy="
                         f"{min_h}: (almost) no patch would pass the filter; use larger patches or a lower min_entropy")
    for key, count in cfg.patches.per_model.items():
        if int(count) < 1:
            raise ValueError(f"patches.per_model.{key}={count}: every patch set needs at least 1 patch")
    for key in ("a", "b", "c", "known"):
        check_set_spec(key, cfg.split[key])
    b_val = cfg.split.get("b_val", 0)
    count_ok = isinstance(b_val, int) and not isinstance(b_val, bool) and (b_val == 0 or b_val >= 2)
    if not (count_ok or (isinstance(b_val, (list, tuple, ListConfig)) and len(b_val) >= 2)):
        raise ValueError(f"split.b_val={b_val!r}: 0 (validate on B itself), a count ≥ 2, or a list of ≥ 2 models of B")
    fr = list(cfg.split.image_fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6 or min(fr) <= 0:
        raise ValueError(f"split.image_fractions must be three positive shares (train, val, test) summing to 1, got {fr}")
    align = cfg.patches.align
    if not isinstance(align, int) or isinstance(align, bool) or align < 1:
        raise ValueError(f"patches.align={align!r}: the grid patches are cut on, a whole number ≥ 1 of pixels "
                         "(8: the JPEG grid, the default)")
    if cfg.model.get("jpeg") and align % 8:
        raise ValueError(f"patches.align={align}: the JPEG branch (model.jpeg) reads 8×8 blocks from the patch's "
                         "corner, so patches must start on the JPEG grid: a multiple of 8")
    if cfg.patches.size < 8 or cfg.patches.size % cfg.patches.align:
        raise ValueError(f"patches.size={cfg.patches.size} must be ≥ 8 and a multiple of patches.align={cfg.patches.align}")
    eta = cfg.eval.eta
    if not (eta == "auto" or (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 < eta < 1)):
        raise ValueError(f"eval.eta must be a number in (0, 1) or 'auto', got {eta!r}")
    if cfg.eval.get("self_pairs", "any") not in ("any", "two_photos"):
        raise ValueError(f"eval.self_pairs must be 'any' or 'two_photos', got {cfg.eval.self_pairs!r}")
    if cfg.eval.eta_rule not in ("max_acc", "eer", "balanced"):
        raise ValueError(f"eval.eta_rule must be 'max_acc', 'eer' or 'balanced', got {cfg.eval.eta_rule!r}")
    if str(cfg.data.get("_target_", "")).endswith("SynthSource"):
        h, w = (int(v) for v in cfg.data.image_size)
        if min(h, w) < size:
            raise ValueError(f"data.image_size=[{h}, {w}]: smaller than one patches.size={size} patch; both sides "
                             f"must be ≥ {size}")
        if h * w > int(cfg.patches.max_pixels):
            raise ValueError(f"data.image_size=[{h}, {w}]: {h * w} pixels, over patches.max_pixels="
                             f"{cfg.patches.max_pixels} (every rendered image would be refused when read)")
    if cfg.get("splicing") is not None:
        check_splicing(cfg.splicing, size)


def check_splicing(sc: DictConfig, patch_size: int) -> None:
    """The splicing benchmark's settings (``splicing.*``), before any network is trained or image
    localised."""
    h, w = (int(v) for v in sc.image_size)
    if min(h, w) < max(16, patch_size) or h % 2 or w % 2:
        raise ValueError(f"splicing.image_size=[{h}, {w}]: both sides even and ≥ {max(16, patch_size)} (a patch, "
                         "and whole CFA tiles)")
    if int(sc.num_images) < 1 or int(sc.seed) < 0:
        raise ValueError(f"splicing.num_images={sc.num_images}, splicing.seed={sc.seed}: at least one image, and a "
                         "seed ≥ 0")
    modes = list(sc.modes)
    if not modes or any(m not in LOCALIZATION_MODES for m in modes):
        raise ValueError(f"splicing.modes={modes}: a non-empty list of {list(LOCALIZATION_MODES)}")
    if not 0.0 < float(sc.target_far) < 1.0:
        raise ValueError(f"splicing.target_far={sc.target_far}: a false-alarm rate in (0, 1)")
    if not 0.0 <= float(sc.control_fraction) < 1.0:
        raise ValueError(f"splicing.control_fraction={sc.control_fraction}: a share in [0, 1)")
    for key in ("calibration_images", "examples"):
        if int(sc[key]) < 0:
            raise ValueError(f"splicing.{key}={sc[key]}: must be ≥ 0")
    if sc.stride is not None and int(sc.stride) < 1:
        raise ValueError(f"splicing.stride={sc.stride}: a patch stride ≥ 1 pixel (null: half a patch)")
    if sc.get("max_clipped") is not None and not 0.0 <= float(sc.max_clipped) <= 1.0:
        raise ValueError(f"splicing.max_clipped={sc.max_clipped}: a share of a patch's pixels in [0, 1] (null: off)")
