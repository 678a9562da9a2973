"""CameraData (source → sets → image split → patch store) and the LightningDataModules.

- :class:`PhaseADataModule`: patches of set A with class labels (Learning Phase A).
- :class:`PairDataModule`: balanced same/different pairs from set B (Learning Phase B),
  as index pairs over cached features f(X) (or over patches when features are not cached).
- :class:`EvalPairDataModule`: pairs over known (A's test images) and unknown (C) models,
  every model pair and every self pair, labels carrying both model names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camsim.data.layouts import camera_make
from camsim.data.pairs import sample_balanced_pairs, sample_cell_pairs, sample_table_balanced_pairs
from camsim.data.patches import recompress, stable_seed
from camsim.data.sources import listed_images, render_images
from camsim.data.splits import MIN_SPLIT_IMAGES, SUBSETS, SetSplit, make_split, photo_key, split_images
from camsim.data.store import PatchRequest, PatchSet, PatchSettings, PatchStore, patch_tables, summarise

log = logging.getLogger(__name__)

#: patch sets smaller than this are read into memory; larger ones stay memory-mapped
IN_MEMORY_BYTES = 2 << 30


def families_of(source: Any, models: Iterable[str] | None = None) -> dict[str, str]:
    """Camera model → family: the source's own where it knows them (the simulator); else, given
    ``models``, each one's make (:func:`~camsim.data.layouts.camera_make`; a model without one is
    left out); else {}."""
    known = getattr(source, "families", None)
    if callable(known):
        return known()
    return {m: mk for m in models or () if (mk := camera_make(m)) is not None}


def as_batch(patches: np.ndarray) -> torch.Tensor:
    """uint8 patches as a network batch ``[N, C, P, P]`` (green ``[N, P, P]`` gains C = 1)."""
    x = torch.from_numpy(patches)
    return x.unsqueeze(1) if x.dim() == 3 else x


class CameraData:
    """A data source's images, the camera-model sets, the image split and the patch store.

    ``source``: anything with ``index() -> ImageIndex`` (folder, EXIF, simulated cameras).
    ``split``: the ``split`` config node; ``patches``: the ``patches`` config node;
    ``channels``: the network's input channels (``model.in_channels``: 1 green, 3 RGB patches).
    """

    def __init__(self, source: Any, split: Any, patches: Any, artefact_dir: str | Path, channels: int = 1):
        self.source = source
        self.split_cfg = split
        self.patch_cfg = patches
        self.store = PatchStore(Path(artefact_dir), PatchSettings.from_config(patches, channels=channels),
                                workers=patches.workers)
        self._index = None
        self._split: SetSplit | None = None
        self._images: dict[str, dict[str, list[Path]]] | None = None

    @property
    def index(self):
        """The source's images. A source that renders its images (the simulator: ``planned_index``)
        lists them all before any is rendered; :meth:`requests` renders those a stage needs."""
        if self._index is None:
            self._index = listed_images(self.source)
            if not callable(getattr(self.source, "planned_index", None)):  # the simulator's are distinct
                self._index = self._index.without_copies()
        return self._index

    @property
    def split(self) -> SetSplit:
        if self._split is None:
            s = self.split_cfg
            # a source that knows its model names without reading images (simulated cameras)
            # lets a bad split fail before anything is rendered
            names = self.source.model_names() if hasattr(self.source, "model_names") else self.index.model_names()
            self._split = make_split(names, s.a, s.b, s.c, s.known, int(s.seed),
                                     None if s.get("c_seed") is None else int(s.c_seed), s.get("b_val") or 0)
        return self._split

    @property
    def images(self) -> dict[str, dict[str, list[Path]]]:
        """model → subset (train/val/test) → image paths, for every model of A, B and C."""
        if self._images is None:
            sp = self.split
            per_model = getattr(self.source, "images_per_model", None)  # the simulator's, set by one key
            if per_model is not None and per_model < MIN_SPLIT_IMAGES:
                raise ValueError(f"data.images_per_model={per_model}: each model's images are split into train / val / "
                                 f"test, so training needs at least {MIN_SPLIT_IMAGES}")
            short = [m for m in sp.a + sp.b + sp.c if len(self.index.models[m]) < MIN_SPLIT_IMAGES]
            if short:  # every such model at once: a public folder may hold several
                raise ValueError(
                    f"{self.index.root}: {len(short)} camera model(s) of the split have fewer than "
                    f"{MIN_SPLIT_IMAGES} images, too few to split into train / val / test: "
                    + ", ".join(f"{m} ({len(self.index.models[m])})" for m in short)
                    + f". Add photos, or leave such models out of the source with data.min_images={MIN_SPLIT_IMAGES}")
            self._images = {m: split_images(self.index.models[m], list(self.split_cfg.image_fractions),
                                            int(self.split_cfg.image_seed))
                            for m in sp.a + sp.b + sp.c}
        return self._images

    def requests(self, role: str) -> list[PatchRequest]:
        """Patch sets a stage needs: ``phase_a`` (A: train/val/test), ``phase_b`` (B: train/val),
        ``eval`` (known and C: test); their images rendered first where the source renders them
        (a request's key reads its files)."""
        reqs = self._requests(role)
        self.render([p for r in reqs for p in r.images])
        return reqs

    def _requests(self, role: str) -> list[PatchRequest]:
        n = self.patch_cfg.per_model
        sp = self.split
        plan: dict[str, list[tuple[Sequence[str], str, int]]] = {
            "phase_a": [(sp.a, "train", n.train_a), (sp.a, "val", n.val_a), (sp.a, "test", n.test)],
            "phase_b": [(sp.b_train, "train", n.train_b), (sp.b_val or sp.b, "val", n.val_b)],
            "eval": [(sp.eval_models, "test", n.test)],
        }
        if role not in plan:
            raise ValueError(f"unknown role {role!r}; one of {sorted(plan)}")
        return [PatchRequest(m, subset, tuple(self.images[m][subset]), int(count))
                for models, subset, count in plan[role] for m in models]

    def render(self, paths: Sequence[Path]) -> None:
        """Render those of ``paths`` a rendering source has not rendered yet (no-op for photo folders)."""
        render_images(self.source, paths)

    def patch_sets(self, role: str) -> dict[tuple[str, str], PatchSet]:
        return self.store.get(self.requests(role))

    def prepare(self, roles: Sequence[str] = ("phase_a", "phase_b", "eval")) -> dict:
        """Cut every patch set the given stages need in one parallel pass; return a summary.

        A camera model left with fewer than 2 usable patches in a subset (all files unreadable,
        images smaller than a patch, every patch at or below ``patches.min_entropy``) is an
        error naming it — one error naming every such model and subset: a class or an evaluation
        model must never silently drop out, and same-model pairs need two patches."""
        every = [r for role in roles for r in self._requests(role)]
        self.render([p for r in every for p in r.images])  # one pass: each scene generated once
        reqs = list({self.store.path_for(r): r for r in every}.values())
        sets = self.store.get(reqs)
        s = self.store.settings
        short = []  # every model and subset at once, not the first of them
        for (model, subset), ps in sets.items():
            if len(ps) < 2:
                info = ps.info
                why = "; ".join(sorted({sk["reason"] for sk in info["skipped"]})) or "none was skipped"
                short.append(
                    f"camera model {model!r} has {'no' if len(ps) == 0 else 'only 1'} usable {s.size}x{s.size} "
                    f"patch in its {subset} images (2 are needed) "
                    f"({len(info['images'])} images, {len(info['skipped'])} unusable: {why}; "
                    f"{info['low_entropy_dropped']} cells at or below patches.min_entropy={s.min_entropy})")
        if short:
            raise ValueError(("\n  ".join([f"{len(short)} patch sets are too small:", *short]) if len(short) > 1
                              else short[0]) + ".\nFix or remove their files, lower patches.size or "
                             "patches.min_entropy, or leave the models out of the split")
        return summarise(sets.values(), self.index.skipped)

    @property
    def families(self) -> dict[str, str]:
        """Camera model → family where the source knows families (the simulator), else {}
        (:func:`families_of` without models: makes do not count as families here)."""
        return families_of(self.source)

    def describe(self) -> dict:
        return {"models": self.index.counts(), "split": self.split.as_dict()}


# --------------------------------------------------------------------------- datasets


def _already_batched(batch: Any) -> Any:
    """collate_fn for datasets that return whole batches from ``__getitems__``."""
    return batch


class PatchDataset(Dataset):
    """Patch sets concatenated, each patch labelled with its set's class index.

    ``__getitems__`` reads a whole batch at once: ``(x uint8 [B, C, P, P], y int64 [B])`` (C = 1: green).
    """

    def __init__(self, sets: Sequence[PatchSet], labels: Sequence[int]):
        total = sum(p.patches.nbytes for p in sets)
        arrays = [np.asarray(p.patches) if total <= IN_MEMORY_BYTES else p.patches for p in sets]
        self.patches = np.concatenate(arrays) if total <= IN_MEMORY_BYTES and arrays else None
        self._arrays = arrays
        self.labels = np.concatenate([np.full(len(p), lab, np.int64) for p, lab in zip(sets, labels)]) \
            if sets else np.zeros(0, np.int64)
        self._offsets = np.cumsum([0] + [len(p) for p in sets])
        self._photos = sets  # :meth:`photo_ids` reads their image lists when asked

    def photo_ids(self) -> np.ndarray:
        """Each patch's photo as an int: equal for two patches of one photo (a re-shared copy counts
        as its original, :func:`~camsim.data.splits.photo_key`), different across sets."""
        ids, keys = [], {}
        for k, p in enumerate(self._photos):
            per_image = np.array([keys.setdefault((k, photo_key(name)), len(keys)) for name in p.images], np.int64)
            ids.append(per_image[np.asarray(p.image_ids, np.int64)] if len(p) else np.zeros(0, np.int64))
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """uint8 patches ``[len(idx), P, P]`` (RGB sets: ``[len(idx), 3, P, P]``) for global indices ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.patches is not None:
            return self.patches[idx]
        out = None
        which = np.searchsorted(self._offsets, idx, side="right") - 1
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            local = idx[sel] - self._offsets[k]
            order = np.argsort(local)  # sorted reads from the memory map
            block = self._arrays[k][local[order]]
            if out is None:
                out = np.empty((len(idx),) + block.shape[1:], np.uint8)
            out[sel[order]] = block
        return out

    def __getitem__(self, i: int):
        return as_batch(self.take(np.array([i])))[0], int(self.labels[i])

    def __getitems__(self, indices: list[int]):
        idx = np.asarray(indices, dtype=np.int64)
        return as_batch(self.take(idx)), torch.from_numpy(self.labels[idx])


class PairDataset(Dataset):
    """Pairs (i, j, same) over ``items`` (feature matrix ``[N, d]`` or a :class:`PatchDataset`).

    With ``resample`` set, every epoch draws fresh balanced pairs (see :meth:`set_epoch`); with
    ``tables`` (each item's JPEG table id), pairs balanced by table too (:func:`sample_table_balanced_pairs`).
    """

    def __init__(self, items: np.ndarray | PatchDataset, labels: np.ndarray, n_pairs: int, seed: int,
                 resample: bool = False, tables: np.ndarray | None = None):
        self.items, self.labels, self.n_pairs, self.seed, self.resample = items, labels, n_pairs, seed, resample
        self.tables = tables
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch`` (with ``resample``; else the one fixed set): from the seed
        sequence ``[seed, epoch]``, so no two (seed, epoch) share a draw — replicates
        ``phase_b.seed=1,2,3`` train on independent pairs (``seed + epoch`` gave seed 1's epoch 1
        seed 2's epoch 0) — and epoch 0's equals ``seed`` alone (numpy drops trailing zeros)."""
        seed = [self.seed, epoch] if self.resample else self.seed
        if self.tables is None:
            self.i, self.j, self.same = sample_balanced_pairs(self.labels, self.n_pairs, seed)
        else:
            self.i, self.j, self.same = sample_table_balanced_pairs(self.labels, self.tables, self.n_pairs, seed)

    def __len__(self) -> int:
        return self.n_pairs

    def _get(self, idx: np.ndarray):
        if isinstance(self.items, PatchDataset):
            a, b = as_batch(self.items.take(self.i[idx])), as_batch(self.items.take(self.j[idx]))
        else:
            a, b = torch.from_numpy(self.items[self.i[idx]]), torch.from_numpy(self.items[self.j[idx]])
        return a, b, torch.from_numpy(self.same[idx].astype(np.float32))

    def __getitem__(self, k: int):
        a, b, y = self._get(np.array([k]))
        return a[0], b[0], y[0]

    def __getitems__(self, indices: list[int]):
        return self._get(np.asarray(indices, dtype=np.int64))


def recompressed_twins(patches: PatchDataset, share: float, quality: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, twins)``: a seeded ``share`` of the patches, each re-saved at a quality drawn
    uniformly from ``quality`` = [low, high] (:func:`~camsim.data.patches.recompress`)."""
    rng = np.random.default_rng(stable_seed("recompress", seed))
    n = len(patches)
    idx = np.sort(rng.choice(n, size=int(round(share * n)), replace=False))
    q = rng.integers(int(quality[0]), int(quality[1]) + 1, size=len(idx))
    return idx, recompress(patches.take(idx), q)


class _EpochPairs(L.Callback):
    """Redraws Phase B pairs at the start of each training epoch (``phase_b.resample_pairs``)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "train_set", None) is not None:
            dm.train_set.set_epoch(trainer.current_epoch)


def check_resample_loader(resample: bool, loader: Any, key: str) -> None:
    """Pairs redrawn each epoch (``resample_pairs``) are redrawn in this process: persistent loader
    workers keep the copy of the pairs they started with, so every epoch would train on the first
    epoch's pairs. ValueError naming ``key`` (the loader's config node) for that combination."""
    if resample and int(loader.num_workers) > 0 and bool(loader.persistent_workers):
        raise ValueError(f"{key}.persistent_workers=true with {key}.num_workers={int(loader.num_workers)}: "
                         "phase_b.resample_pairs redraws the pairs each epoch in the main process, which "
                         "persistent workers never see (every epoch would reuse the first one's) — set "
                         f"{key}.persistent_workers=false or phase_b.resample_pairs=false")


def _loader(dataset: Dataset, loader: Any, shuffle: bool) -> DataLoader:
    """Training loaders (``shuffle``) drop the last partial batch: one batch shape per epoch,
    so a compiled model (``phase_a.compile``) never recompiles for it."""
    workers = int(loader.num_workers)
    return DataLoader(dataset, batch_size=int(loader.batch_size), shuffle=shuffle, num_workers=workers,
                      pin_memory=bool(loader.pin_memory), persistent_workers=bool(loader.persistent_workers) and workers > 0,
                      collate_fn=_already_batched, drop_last=shuffle and len(dataset) > int(loader.batch_size))


# --------------------------------------------------------------------------- datamodules


class PhaseADataModule(L.LightningDataModule):
    """Patches of set A, labelled by the index of their model in ``classes`` (= sorted A)."""

    def __init__(self, data: CameraData, loader: Any):
        super().__init__()
        self.data, self.loader = data, loader
        self.classes = list(data.split.a)
        self.sets: dict[str, PatchDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        ps = self.data.patch_sets("phase_a")
        for subset in SUBSETS:
            self.sets[subset] = PatchDataset([ps[(m, subset)] for m in self.classes], range(len(self.classes)))

    def train_dataloader(self) -> DataLoader:
        return _loader(self.sets["train"], self.loader, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.sets["val"], self.loader, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return _loader(self.sets["test"], self.loader, shuffle=False)


class PairDataModule(L.LightningDataModule):
    """Balanced Phase B pairs over set B (docs/method.md: 250k same + 250k different in the paper).

    ``features``: a function mapping a :class:`PatchSet` to its cached f(X) ``[n, d]``
    (``phase_b.cache_features``); without it the pairs carry uint8 patches (and so serve
    end-to-end fine-tuning, ``phase_b.finetune``). Training pairs are drawn with ``seed``,
    validation pairs with ``val_seed`` (default ``seed + 1``). ``recompress``
    (``phase_b.recompress``: ``share``, ``quality``) with ``extract`` (f(X) of a uint8 array):
    training patches get re-saved twins (:func:`recompressed_twins`) that pairs are drawn over too.
    ``table_balance`` (``phase_b.table_balance``): pairs drawn so that two photos sharing a JPEG
    table says nothing of the label (:func:`~camsim.data.pairs.sample_table_balanced_pairs`).
    """

    def __init__(self, data: CameraData, loader: Any, train_pairs: int, val_pairs: int, seed: int,
                 resample: bool = False, features: Callable[[PatchSet], np.ndarray] | None = None,
                 val_seed: int | None = None, with_a: bool = False, recompress: Any = None,
                 extract: Callable[[np.ndarray], np.ndarray] | None = None, table_balance: bool = False):
        super().__init__()
        self.data, self.loader, self.features, self.table_balance = data, loader, features, table_balance
        #: ``phase_b.recompress`` while it is on (a share > 0), else None
        self.recompress = recompress if recompress is not None and float(recompress["share"]) > 0 else None
        self.extract = extract
        if self.recompress is not None and (features is None or extract is None):
            raise ValueError("phase_b.recompress needs cached features (phase_b.cache_features=true)")
        if self.recompress is not None and table_balance:
            raise ValueError("phase_b.table_balance with phase_b.recompress: a re-saved twin's table is not its "
                             "photo's; use one of them")
        check_resample_loader(resample, loader, "loader")
        self.train_pairs, self.val_pairs, self.seed, self.resample = train_pairs, val_pairs, seed, resample
        self.val_seed = seed + 1 if val_seed is None else val_seed
        sp = data.split
        #: training pairs from B's training models (``with_a``: and from A's models, their Phase A
        #: training images — A's models are the known ones, C stays unseen); validation pairs from
        #: ``split.b_val`` (models Phase B never trains on) when set, else from B's own models
        self.models = {"train": list(sp.b_train) + (list(sp.a) if with_a else []), "val": list(sp.b_val or sp.b)}
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None

    def _pairs(self, subset: str, n: int, seed: int, resample: bool) -> PairDataset:
        ps = self.data.patch_sets("phase_b")
        if subset == "train" and set(self.models["train"]) & set(self.data.split.a):
            ps = {**ps, **self.data.patch_sets("phase_a")}
        sets = [ps[(m, subset)] for m in self.models[subset]]
        patches = PatchDataset(sets, range(len(sets)))
        items = np.concatenate([self.features(s) for s in sets]) if self.features else patches
        labels = patches.labels
        if subset == "train" and self.recompress is not None:
            idx, twins = recompressed_twins(patches, float(self.recompress["share"]), self.recompress["quality"], seed)
            items, labels = np.concatenate([items, self.extract(twins)]), np.concatenate([labels, labels[idx]])
        tables = (patch_tables(sets, [self.data.images[m][subset] for m in self.models[subset]])
                  if self.table_balance else None)
        if tables is not None:
            cells = np.unique(np.stack([labels, tables], 1), axis=0)  # (model, table) pairs present
            log.info("Phase B %s pairs balanced by JPEG table: %d tables over %d models, %d models with several, "
                     "%d tables shared by ≥ 2 models", subset, len(np.unique(tables)), len(sets),
                     int((np.bincount(cells[:, 0]) >= 2).sum()), int((np.bincount(cells[:, 1]) >= 2).sum()))
        try:
            return PairDataset(items, labels, n, seed, resample, tables=tables)
        except ValueError as e:
            if tables is None:
                raise
            raise ValueError(f"phase_b.table_balance: set B's {subset} patches: {e}") from e

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._pairs("train", self.train_pairs, self.seed, self.resample)
            self.val_set = self._pairs("val", self.val_pairs, self.val_seed, False)

    def callbacks(self) -> list[L.Callback]:
        return [_EpochPairs()] if self.resample else []

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.loader, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.val_set, self.loader, shuffle=False)


@dataclass
class EvalPairs:
    """The evaluation pairs: indices into ``patches`` and the model names of both sides."""

    patches: PatchDataset
    models: list[str]  # index → model name (known first, then unknown)
    known: list[str]
    i: np.ndarray
    j: np.ndarray

    @property
    def model_1(self) -> np.ndarray:
        return np.asarray(self.models, dtype=object)[self.patches.labels[self.i]]

    @property
    def model_2(self) -> np.ndarray:
        return np.asarray(self.models, dtype=object)[self.patches.labels[self.j]]

    def same_photo_share(self) -> float | None:
        """Of the same-model ("Self") pairs, the share whose two patches come from one photo (the
        pairs are drawn from a model's test patches, whatever their photo); None without such pairs."""
        same = self.patches.labels[self.i] == self.patches.labels[self.j]
        if not same.any():
            return None
        photo = self.patches.photo_ids()
        return float(np.mean(photo[self.i[same]] == photo[self.j[same]]))


class EvalPairDataModule(L.LightningDataModule):
    """Evaluation pairs over known (⊂ A, test images) and unknown (C) models (docs/method.md, Fig. 2)."""

    def __init__(self, data: CameraData, loader: Any, pairs_per_cell: int, seed: int, two_photos: bool = False):
        super().__init__()
        self.data, self.loader, self.pairs_per_cell, self.seed = data, loader, pairs_per_cell, seed
        self.two_photos = two_photos  # eval.self_pairs=two_photos
        self.pairs: EvalPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.pairs is not None:
            return
        sp = self.data.split
        models = list(sp.eval_models)
        ps = self.data.patch_sets("eval")
        patches = PatchDataset([ps[(m, "test")] for m in models], range(len(models)))
        i, j = sample_cell_pairs(patches.labels, self.pairs_per_cell, self.seed,
                                 photos=patches.photo_ids() if self.two_photos else None)
        self.pairs = EvalPairs(patches, models, list(sp.known), i, j)

    def predict_dataloader(self) -> DataLoader:
        """The evaluation patches (each once): features are computed per patch, pairs scored from them."""
        return _loader(self.pairs.patches, self.loader, shuffle=False)
