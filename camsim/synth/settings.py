"""The simulator's realism settings (``data.synth``, schema :mod:`camsim.config.synth`): read from a
plain dict, validated (each error names the key and the reason, in one line) and keyed for caches.

:func:`synth_settings` is the one reader: the renderer, the splice renderer and
:class:`camsim.data.sources.SynthSource` all take its result, so a bad value fails at start,
before anything is rendered.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from camsim.config.synth import (
    DEFAULT_DEMOSAIC,
    DEFAULT_SHARED_QUALITIES,
    SynthTraitsConfig,
    without_later_keys_off,
)
from camsim.synth.params import ALL_DEMOSAIC_METHODS, DEMOSAIC_METHODS, SHARED_JPEG_PRESETS, SIBLING_TRAITS

assert tuple(DEFAULT_DEMOSAIC) == DEMOSAIC_METHODS and tuple(DEFAULT_SHARED_QUALITIES) == SHARED_JPEG_PRESETS

# key -> (kind, lo, hi) for every number; kind "int", "float" or "bool"
_RULES: dict[str, tuple[str, float, float]] = {
    "jpeg.presets_per_model": ("int", 1, 100),
    "jpeg.adaptive_share": ("float", 0.0, 1.0),
    "jpeg.fine_share": ("float", 0.0, 1.0),
    "jpeg.fine_fixed": ("bool", 0, 1),
    "jpeg.table_families": ("int", 0, 1000),
    "exposure.ev_sigma": ("float", 0.0, 2.0),
    "exposure.iso_sigma": ("float", 0.0, 2.66),  # a model draws up to 1.5x it, and a camera's cap is 4 stops
    "white_balance.per_photo": ("bool", 0, 1),
    "white_balance.strength": ("float", 0.0, 1.0),
    "noise.fixed_pattern": ("float", 0.0, 10.0),
    "noise.prnu": ("float", 0.0, 0.1),
    "lens.vignetting": ("float", 0.0, 0.8),
    "lens.chromatic_aberration": ("float", 0.0, 4.0),
    "resample.downscale_share": ("float", 0.0, 1.0),
    "family.differ_in": ("int", 0, len(SIBLING_TRAITS)),
    "scenes.texture_share": ("float", 0.0, 1.0),
    "scenes.defocus": ("float", 0.0, 4.0),
    "scenes.shadow_ev": ("float", 0.0, 6.0),
    "processing.smoothing": ("float", 0.0, 2.0),
}


class SynthSettingsError(ValueError):
    """An invalid ``data.synth`` value; the message names the key and the reason."""


def synth_settings(d: Mapping | SynthTraitsConfig | None = None, prefix: str = "synth") -> SynthTraitsConfig:
    """``d`` (a plain dict as Hydra gives it, a :class:`SynthTraitsConfig`, or None = every trait
    off) validated into a :class:`SynthTraitsConfig`; missing keys take their defaults. Raises
    :class:`SynthSettingsError` naming ``<prefix>.<node>.<key>`` and the reason."""
    if isinstance(d, SynthTraitsConfig):
        d = dataclasses.asdict(d)
    d = {} if d is None else d
    if not isinstance(d, Mapping):
        raise SynthSettingsError(f"{prefix}: must be a mapping of trait nodes, got {d!r}")
    out = SynthTraitsConfig()
    nodes = {f.name: f for f in dataclasses.fields(out)}
    for node, values in d.items():
        if node not in nodes:
            raise SynthSettingsError(f"{prefix}.{node}: unknown node; choose among {sorted(nodes)}")
        sub = getattr(out, node)
        if not isinstance(values, Mapping):
            raise SynthSettingsError(f"{prefix}.{node}: must be a mapping, got {values!r}")
        names = {f.name for f in dataclasses.fields(sub)}
        for key, value in values.items():
            if key not in names:
                raise SynthSettingsError(f"{prefix}.{node}.{key}: unknown key; choose among {sorted(names)}")
            setattr(sub, key, _check(f"{node}.{key}", value, prefix))
    if out.jpeg.presets_per_model > len(out.jpeg.shared_qualities):
        raise SynthSettingsError(f"{prefix}.jpeg.presets_per_model: {out.jpeg.presets_per_model} presets need as many "
                                 f"shared_qualities, got {len(out.jpeg.shared_qualities)}")
    return out


def _check(key: str, value: Any, prefix: str) -> Any:
    full = f"{prefix}.{key}"
    if key == "jpeg.shared_qualities":
        qs = list(value) if isinstance(value, (list, tuple)) else None
        if not qs:
            raise SynthSettingsError(f"{full}: must be a non-empty list of JPEG qualities (1..100), got {value!r}")
        for q in qs:
            if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
                raise SynthSettingsError(f"{full}: quality {q!r} is not an integer in 1..100")
        if len(set(qs)) != len(qs):
            raise SynthSettingsError(f"{full}: repeated quality in {qs}")
        return qs
    if key == "demosaic.methods":
        ms = list(value) if isinstance(value, (list, tuple)) else None
        if not ms:
            raise SynthSettingsError(f"{full}: must be a non-empty list of {list(ALL_DEMOSAIC_METHODS)}, got {value!r}")
        bad = [m for m in ms if m not in ALL_DEMOSAIC_METHODS]
        if bad or len(set(ms)) != len(ms):
            raise SynthSettingsError(f"{full}: {bad or ms} — each one of {list(ALL_DEMOSAIC_METHODS)}, once")
        return ms
    kind, lo, hi = _RULES[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise SynthSettingsError(f"{full}: must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (kind == "int" and int(value) != value):
        raise SynthSettingsError(f"{full}: must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        why = "cannot be negative" if value < 0 else f"is outside [{lo}, {hi}]"
        raise SynthSettingsError(f"{full}: {value!r} {why}")
    return int(value) if kind == "int" else float(value)


def settings_dict(s: SynthTraitsConfig) -> dict:
    """Plain dict of ``s`` (JSON-able)."""
    return dataclasses.asdict(s)


def is_default(s: SynthTraitsConfig, ignore_presets: bool = False) -> bool:
    """Whether every trait is off (the original simulator; a later key that does nothing counts as
    off, :func:`~camsim.config.synth.without_later_keys_off`); ``ignore_presets``: whatever
    ``jpeg.presets_per_model`` is (it has its own, older cache key)."""
    d, base = settings_dict(s), settings_dict(SynthTraitsConfig())
    if ignore_presets:
        d["jpeg"]["presets_per_model"] = 1
    return without_later_keys_off(d) == without_later_keys_off(base)


def cache_key(s: SynthTraitsConfig) -> dict:
    """The part of a render's cache key that ``s`` adds: ``{}`` when every trait but
    ``jpeg.presets_per_model`` is off (so older caches keep their key), else every setting
    but that one (which enters the key as ``jpeg_presets``); ``jpeg.fine_share`` and the later keys
    (:func:`~camsim.config.synth.without_later_keys_off`) only when on (they came later: caches
    rendered before them keep their key)."""
    if is_default(s, ignore_presets=True):
        return {}
    d = without_later_keys_off(settings_dict(s))
    del d["jpeg"]["presets_per_model"]
    if not d["jpeg"]["fine_share"]:
        del d["jpeg"]["fine_share"]
    return {"synth": d}


__all__ = ["SynthSettingsError", "synth_settings", "settings_dict", "is_default", "cache_key"]
