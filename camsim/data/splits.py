"""Camera-model sets A / B / C and the known subset of A; the per-model image split.

docs/method.md, "Camera-model sets": A trains the feature extractor (Phase A), B the similarity
network (Phase B), C is never trained on (unknown); evaluation uses known models (⊂ A)
and the models of C. Within every model, *images* (never patches) go to train/val/test.
"""

from __future__ import annotations

import re

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camsim.config import check_set_spec
from camsim.data.patches import stable_seed
from camsim.data.sources import model_key

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class SetSplit:
    """Disjoint, non-empty camera-model sets; ``known`` ⊂ ``a``. Names are model names."""

    a: tuple[str, ...]
    b: tuple[str, ...]
    c: tuple[str, ...]
    known: tuple[str, ...]
    #: models of B that Phase B validates on and never trains on (empty: it validates on B itself)
    b_val: tuple[str, ...] = ()

    @property
    def b_train(self) -> tuple[str, ...]:
        """The models of B whose pairs Phase B trains on."""
        return tuple(m for m in self.b if m not in self.b_val)

    @property
    def unknown(self) -> tuple[str, ...]:
        return self.c

    @property
    def eval_models(self) -> tuple[str, ...]:
        """Models of the evaluation: known first, then unknown."""
        return self.known + self.c

    def role(self, model: str) -> str:
        for name in ("a", "b", "c"):
            if model in getattr(self, name):
                return name
        raise KeyError(f"model {model!r} is in none of the sets A, B, C")

    def as_dict(self) -> dict[str, list[str]]:
        out = {"a": list(self.a), "b": list(self.b), "c": list(self.c), "known": list(self.known)}
        return {**out, "b_val": list(self.b_val)} if self.b_val else out

    def validate(self, models: Sequence[str]) -> None:
        """Raise ValueError naming the offending models if the sets are not a valid split."""
        available = set(models)
        for name in ("a", "b", "c", "known"):
            members = getattr(self, name)
            if not members:
                raise ValueError(f"set {name.upper() if name != 'known' else 'known'} is empty")
            missing = [m for m in members if m not in available]
            if missing:
                raise ValueError(f"split.{name} names camera models the data source does not have: "
                                 f"{missing}; available: {sorted(available)}")
            dup = sorted({m for m in members if list(members).count(m) > 1})
            if dup:
                raise ValueError(f"split.{name} lists models more than once: {dup}")
        dup = sorted({m for m in self.b_val if list(self.b_val).count(m) > 1})
        if dup:
            raise ValueError(f"split.b_val lists models more than once: {dup}")
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            both = sorted(set(getattr(self, x)) & set(getattr(self, y)))
            if both:
                raise ValueError(f"sets {x.upper()} and {y.upper()} must be disjoint, both contain: {both}")
        spelled: dict[str, list[str]] = {}
        for name in ("a", "b", "c"):
            for m in getattr(self, name):
                spelled.setdefault(model_key(m), []).append(f"{m} ({name.upper()})")
        twice = [names for names in spelled.values() if len(names) > 1]
        if twice:  # one model under two names: its pairs would be "different", or it is known and unknown
            raise ValueError(f"{' and '.join(twice[0])} name one camera model (case and separators aside); "
                             "merge their folders or leave one out")
        outside = sorted(set(self.known) - set(self.a))
        if outside:
            raise ValueError(f"split.known must be a subset of A; not in A: {outside}")
        if self.b_val:
            outside = sorted(set(self.b_val) - set(self.b))
            if outside:
                raise ValueError(f"split.b_val must be a subset of B; not in B: {outside}")
            if len(self.b_val) < 2 or len(self.b_train) < 2:
                raise ValueError(f"split.b_val: {len(self.b_val)} validation and {len(self.b_train)} training models of "
                                 f"B; each side needs at least 2 (different-model pairs)")


def make_split(models: Sequence[str], a: Any, b: Any, c: Any, known: Any, seed: int,
               c_seed: int | None = None, b_val: Any = 0) -> SetSplit:
    """Resolve counts and explicit lists into a validated :class:`SetSplit`.

    Explicit lists are taken as given. Counts are drawn without replacement from the
    models not named explicitly: C first (``c_seed``, default ``seed``), then B and A
    (``seed``); ``a="rest"`` takes every remaining model. ``known``: a count drawn from A
    (``seed``) or an explicit list; ``b_val``: likewise from B (0: none).
    """
    for key, spec in (("a", a), ("b", b), ("c", c), ("known", known)):
        check_set_spec(key, spec)
    models = sorted(models)
    explicit = {k: [str(m) for m in v] for k, v in (("a", a), ("b", b), ("c", c)) if _is_list(v)}
    taken = {m for v in explicit.values() for m in v}
    pool = [m for m in models if m not in taken]
    sets: dict[str, list[str]] = dict(explicit)

    def draw(name: str, count: Any, rng: np.random.Generator) -> None:
        nonlocal pool
        if name in sets:
            return
        if count == "rest":
            sets[name] = list(pool)
            pool = []
            return
        count = int(count)
        if count > len(pool):
            raise ValueError(
                f"split.{name}={count} asks for more camera models than are left ({len(pool)} of "
                f"{len(models)} after the other sets); the source has: {models}")
        idx = rng.permutation(len(pool))[:count]
        sets[name] = sorted(pool[i] for i in idx)
        pool = [m for i, m in enumerate(pool) if i not in set(idx.tolist())]

    draw("c", c, np.random.default_rng(stable_seed("split-c", seed if c_seed is None else c_seed)))
    rng = np.random.default_rng(stable_seed("split-ab", seed))
    draw("b", b, rng)
    draw("a", a, rng)
    if _is_list(known):
        known_list = [str(m) for m in known]
    else:
        k = int(known)
        if k > len(sets["a"]):
            raise ValueError(f"split.known={k} is larger than set A ({len(sets['a'])} models)")
        krng = np.random.default_rng(stable_seed("split-known", seed))
        known_list = sorted(sets["a"][i] for i in krng.permutation(len(sets["a"]))[:k])
    if _is_list(b_val):
        b_val_list = [str(m) for m in b_val]
    elif int(b_val) > len(sets["b"]):
        raise ValueError(f"split.b_val={b_val} is larger than set B ({len(sets['b'])} models)")
    else:
        vrng = np.random.default_rng(stable_seed("split-b-val", seed))
        b_val_list = sorted(sets["b"][i] for i in vrng.permutation(len(sets["b"]))[:int(b_val)])
    split = SetSplit(tuple(sets["a"]), tuple(sets["b"]), tuple(sets["c"]), tuple(known_list), tuple(b_val_list))
    split.validate(models)
    return split


def _is_list(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) or type(v).__name__ == "ListConfig"


#: images a camera model needs to be split into train / val / test (one each at least)
MIN_SPLIT_IMAGES = 3


#: a re-shared copy's name, which names its original too: VISION's D01_I_natWA_0001 is nat photo
#: 0001 sent through WhatsApp (natFBH / natFBL: Facebook high / low quality)
_SHARED_COPY = re.compile(r"_nat(WA|FBH|FBL)_")


def photo_key(path: str | Path) -> str:
    """What a photo is split by: its file stem, a re-shared copy's mapped to its original's, so the
    original and its copies (``data.variants=[nat,natWA]``) fall into one subset (:func:`split_images`)."""
    return _SHARED_COPY.sub("_nat_", Path(path).stem)


def photo_units(paths: Sequence[Path]) -> list[list[Path]]:
    """``paths`` as the units a split keeps together, in their order: a photo with its re-shared
    copies (:func:`photo_key`), every other file alone (two DCIM folders' IMG_0001.JPG stay apart)."""
    keys = [photo_key(p) for p in paths]
    shared = {k for k, p in zip(keys, paths) if _SHARED_COPY.search(Path(p).stem)}  # photos with a copy here
    units: dict[str, list[Path]] = {}
    for k, p in zip(keys, paths):
        units.setdefault(k if k in shared else str(p), []).append(p)
    return list(units.values())


def split_images(paths: Sequence[Path], fractions: Sequence[float], seed: int) -> dict[str, list[Path]]:
    """Split one model's images into train / val / test by a seeded hash of the file *stem*
    (:func:`photo_key`: a re-shared copy goes with its original).

    Ordering by the stem (not the model) puts same-named images of different models into
    the same subset: the simulator names its images by scene, so a scene never gives
    patches to both training and test (a real data set's file names carry no scene: Dresden
    photographs each scene with every camera, and its scenes can sit in training and test).
    Every subset gets ≥ 1 image when there are ≥ 3.
    """
    groups = {str(u[0]): u for u in photo_units(sorted(paths, key=str))}
    keys = sorted(groups, key=lambda k: (stable_seed("image-split", seed, photo_key(k)), k))
    n = len(keys)
    if n < MIN_SPLIT_IMAGES:
        raise ValueError(f"{n} usable image(s) in {Path(paths[0]).parent if paths else '?'}: "
                         f"need at least {MIN_SPLIT_IMAGES} to split into train / val / test")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        n_train, n_test = 1, n - 1 - n_val
    cut = {"train": keys[:n_train], "val": keys[n_train:n_train + n_val], "test": keys[n_train + n_val:]}
    return {name: sorted(p for k in ks for p in groups[k]) for name, ks in cut.items()}
