"""The trained network(s) a transfer evaluation scores with (:mod:`camsim.eval.transfer`).

A Phase B checkpoint or ``camsim-export`` folder, or several of them (``ckpt=[a, b]``) whose pair
scores are fused; the patch settings they cut with; which camera models they were trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from camsim.config import data_fingerprint
from camsim.data.sources import model_key
from camsim.data.store import PatchSettings
from camsim.lit.phase_b import load_similarity
from camsim.models.fusion import FittedFusion, check_fusion
from camsim.models.portable import weights_file
from camsim.plain import file_sha256

log = logging.getLogger("camsim")


def load_checkpoint(path: str | Path | None) -> tuple[Path, Any]:
    """``(path, ForensicSimilarity)`` of a Learning Phase B checkpoint or a ``camsim-export`` folder
    (``model=DIR``; the path returned is then its weights file, whose identity keys the feature
    cache). A missing ``ckpt``, a missing, truncated or corrupt file, or a checkpoint of another
    kind (Phase A) is one clear error naming what was given and what is needed
    (:func:`camsim.lit.checkpoints.checkpoint_kind`, :func:`camsim.models.portable.read_exported`)."""
    if not path:
        raise ValueError("ckpt: camsim-eval task=transfer needs ckpt=<Learning Phase B checkpoint> "
                         "(outputs/artefacts/phase_b-<hash>/model.ckpt) or model=<camsim-export folder>")
    p = Path(str(path)).expanduser()
    sim = load_similarity(p)
    return weights_file(p), sim


@dataclass
class Networks:
    """The network(s) a transfer run scores with: one checkpoint, or several whose pair scores are
    fused (``ckpt=[a, b]``, ``fusion``). ``paths[k]`` is the file keying network ``k``'s
    feature cache."""

    paths: list[Path]
    sims: list[Any]

    @classmethod
    def load(cls, ckpt: Any) -> Networks:
        """From ``ckpt``: a path, or a list of paths (a list of one is one network; a repeated
        path is refused — fusing a network with itself changes nothing)."""
        given = list(ckpt) if isinstance(ckpt, (list, tuple, ListConfig)) else [ckpt]
        seen = [str(Path(str(c)).expanduser().resolve()) for c in given if c]
        dup = sorted({c for c in seen if seen.count(c) > 1})
        if dup:
            raise ValueError(f"ckpt: {', '.join(dup)} given more than once; each network of a list counts once")
        loaded = [load_checkpoint(c) for c in given or [None]]
        return cls([p for p, _ in loaded], [sim for _, sim in loaded])

    @property
    def label(self) -> str:
        return " + ".join(f"{p.parent.name}/{p.name}" for p in self.paths)

    @property
    def feature_layer(self) -> str:
        return " + ".join(str(sim.feature_layer) for sim in self.sims)

    @property
    def training_sets(self) -> dict:
        """The camera models any of the networks was trained on, per set (B ``None`` when one of
        them does not record it)."""
        union = {}
        for key in ("a", "b"):
            lists = [sim.training_sets.get(key) for sim in self.sims]
            union[key] = None if any(x is None for x in lists) else list(dict.fromkeys(m for x in lists for m in x))
        return union

    @property
    def fingerprints(self) -> list[dict | None]:
        """Each network's training-data fingerprint (``None``: not recorded)."""
        return [None if sim.data_fingerprint is None else data_fingerprint(sim.data_fingerprint) for sim in self.sims]

    def notes(self, known_here: list[str], fp_here: dict, baseline: bool) -> list[str]:
        """The report's notes on each network: what it does not record, whether this source is its
        training data (``fp_here``) for the ``known_here`` models it trained on, a fine-tuned baseline."""
        notes = []
        for path, sim, fp in zip(self.paths, self.sims, self.fingerprints):
            which = f"{path.parent.name}: " if len(self.sims) > 1 else ""
            known_by = [m for m in known_here if training_role(m, sim.training_sets)]
            if sim.training_sets.get("b") is None:
                notes.append(f"{which}This checkpoint does not record its set B: models of B cannot be recognised "
                             "and count as unknown.")
            if fp is None:
                notes.append(f"{which}This checkpoint does not record its training data: whether a known name is the "
                             "same camera cannot be checked.")
            elif fp != fp_here and known_by and _without_root(fp) == _without_root(fp_here):
                msg = (f"{which}{', '.join(known_by)}: names of models the checkpoint was trained on, and this source "
                       f"has its training data's settings in another folder (trained on {fp.get('root')}, this is "
                       f"{fp_here.get('root')}): if it holds the same photos (a copy, another machine), photos of "
                       "known models include photos it was trained on (the transfer evaluation has no split)")
                log.warning("  %s", msg)
                notes.append(msg + ".")
            elif fp != fp_here and known_by:
                msg = (f"{which}{', '.join(known_by)}: names of models the checkpoint was trained on, but this source "
                       f"is not its training data ({fp}); the same name may be another device or other photos")
                log.warning("  %s", msg)
                notes.append(msg + ".")
            elif fp == fp_here and known_by:
                notes.append(f"{which}This source is the checkpoint's training data: photos of known models include "
                             "photos it was trained on (the transfer evaluation has no split).")
            if getattr(sim, "finetuning", False) and baseline:
                notes.append(f"{which}Fine-tuned network: its Bray–Curtis baseline runs Phase A's classifier layer, "
                             "which fine-tuning left as it was, on the fine-tuned features — not Phase A's own "
                             "baseline; the frozen network's transfer run has that one.")
        return notes

    def identities(self) -> list[dict]:
        """Each network's file name and sha256 (what a fitted fusion records and checks)."""
        return [{"file": f"{p.parent.name}/{p.name}", "sha256": file_sha256(p)} for p in self.paths]

    def fusion(self, rule: Any, allow_fit: bool = False) -> str | FittedFusion:
        """``fusion`` checked for these networks (:func:`~camsim.models.fusion.check_fusion`): a fitted
        fusion only for the very networks it was fitted with, in the same order."""
        rule = check_fusion(rule, allow_fit=allow_fit)
        if isinstance(rule, FittedFusion):
            mine = self.identities()
            if [n.get("sha256") for n in rule.networks] != [n["sha256"] for n in mine]:
                raise ValueError(f"fusion: {rule.path} was fitted for "
                                 f"{' + '.join(n.get('file', '?') for n in rule.networks)}, not for these networks "
                                 f"({' + '.join(n['file'] for n in mine)}; compared by sha256, in order) — fit it "
                                 "again for them (fusion=fit)")
        return rule

    def eta(self) -> float:
        """``eval.eta=auto``: the mean of the networks' own thresholds."""
        return float(np.mean([float(sim.hparams.get("eta", 0.5)) for sim in self.sims]))

    def patch_settings(self, cfg: DictConfig) -> list:
        """Each network's :func:`patch_settings`; a ValueError naming them when they cut different patches."""
        settings = [patch_settings(sim, cfg) for sim in self.sims]
        shape = [(st.size, st.align, st.min_entropy) for st in settings]
        if len(set(shape)) > 1:
            raise ValueError("ckpt: the networks cut different patches (size, align, min_entropy: "
                             + "; ".join(f"{p.parent.name}: {sh}" for p, sh in zip(self.paths, shape))
                             + "), so they cannot score the same pairs; fuse networks trained with equal patch "
                               "settings, or set transfer.min_entropy for all")
        return settings


def training_role(model: str, sets: dict) -> str:
    """"A", "B", "A+B" for a model the checkpoint was trained on (its name spelled as in
    :func:`model_key`), else "" (unknown)."""
    key = model_key(model)
    in_a, in_b = (key in {model_key(m) for m in sets.get(s) or []} for s in ("a", "b"))
    return "A+B" if in_a and in_b else "A" if in_a else "B" if in_b else ""


def patch_settings(sim: Any, cfg: DictConfig):
    """The checkpoint's patch settings (size, align, min_entropy), ``transfer.min_entropy`` overriding;
    green or RGB patches as its backbone takes them."""

    rec = sim.patch_settings or {"size": int(cfg.patches.size), "align": int(cfg.patches.align),
                                  "min_entropy": float(cfg.patches.min_entropy)}
    size = int(sim.patch_size)
    if int(rec["size"]) != size:
        log.warning("  patches.size=%s differs from the checkpoint's patch size %d: using %d", rec["size"], size, size)
    ent = cfg.transfer.min_entropy
    return PatchSettings.from_config(cfg.patches, channels=int(sim.backbone.in_channels), size=size,
                                     align=rec["align"], min_entropy=rec["min_entropy"] if ent is None else ent)


def _without_root(fp: dict) -> dict:
    """A data fingerprint without its folder: the same settings read from another place."""
    return {k: v for k, v in fp.items() if k != "root"}


__all__ = ["Networks", "load_checkpoint", "training_role", "patch_settings"]
