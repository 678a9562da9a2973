"""PatchStore: uint8 green (or RGB) patches per (camera model, image subset), cut once and cached.

Each patch set lives in ``<artefact_dir>/patches-<hash>/`` (``patches.npy`` memory-mapped,
``index.npz`` with image ids / corners / entropies, ``info.json``), keyed by the files'
identities and the patch settings, written atomically; later runs and every job of a
sweep reuse it. Extraction runs per image in worker processes with a progress bar.
:func:`jpeg_table_ids` turns photos' JPEG luminance tables into ids (the transfer evaluation's
per-photo ids); :func:`patch_tables` gives each patch its photo's id (Phase B's table-balanced pairs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from camsim.artefacts import atomic_dir, atomic_write_json, content_hash, file_identity, file_lock
from camsim.config import PatchConfig
from camsim.data.io import ImageReadError, read_jpeg_luma_table
from camsim.data.patches import CHANNELS, ImagePatches, extract_image_patches, stable_seed
from camsim.progress import parallel_iter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchSettings:
    """The fields of the ``patches`` config node that decide what a patch set holds, and
    ``channels``: the network's ``in_channels`` (1: green patches, 3: RGB), not a patch key of its own."""

    size: int
    align: int
    min_entropy: float
    seed: int
    max_pixels: int
    channels: int = 1

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"model.in_channels={self.channels}: patches can have {' or '.join(map(str, CHANNELS))} "
                             "channels (1: the green channel, 3: RGB)")

    @classmethod
    def from_config(cls, node: Any = None, channels: int = 1, **overrides: Any) -> PatchSettings:
        """From a ``patches`` config node (default: the schema's defaults), ``overrides`` on top;
        ``channels`` from the model (``model.in_channels``)."""
        node = PatchConfig() if node is None else node
        return cls(**{f.name: type(getattr(PatchConfig, f.name))(overrides.get(f.name, getattr(node, f.name)))
                      for f in fields(cls) if f.name != "channels"}, channels=int(channels))

    def key(self) -> dict:
        """The settings as a patch set's key holds them (``channels`` only when RGB: green sets keep
        the key they had before colour patches existed)."""
        return {k: v for k, v in self.__dict__.items() if not (k == "channels" and v == 1)}


@dataclass
class PatchSet:
    """Patches of one camera model from one image subset (memory-mapped, read-only)."""

    model: str
    subset: str
    path: Path
    patches: np.ndarray  # [n, P, P] uint8 (green) or [n, 3, P, P] (RGB)
    image_ids: np.ndarray  # [n] index into ``images``
    positions: np.ndarray  # [n, 2] (y, x)
    entropy: np.ndarray  # [n]
    images: list[str]
    info: dict

    def __len__(self) -> int:
        return len(self.patches)

    @classmethod
    def load(cls, path: Path) -> PatchSet:
        info = json.loads((path / "info.json").read_text())
        idx = np.load(path / "index.npz")
        return cls(info["model"], info["subset"], path, np.load(path / "patches.npy", mmap_mode="r"),
                   idx["image_ids"], idx["positions"], idx["entropy"], info["images"], info)


@dataclass(frozen=True)
class PatchRequest:
    """Up to ``count`` patches of ``model`` from ``images`` (one subset)."""

    model: str
    subset: str
    images: tuple[Path, ...]
    count: int

    def key(self, settings: PatchSettings) -> dict:
        return {"model": self.model, "subset": self.subset, "count": self.count,
                "files": [file_identity(p) for p in self.images], "settings": settings.key()}


def _extract_job(job: tuple) -> ImagePatches:
    return extract_image_patches(*job)


def _select_round_robin(per_image: list[ImagePatches], count: int) -> list[tuple[int, int]]:
    """Pick ``count`` (image, patch) indices taking one patch per image in turn (balanced over images)."""
    chosen: list[tuple[int, int]] = []
    depth = 0
    while len(chosen) < count:
        added = False
        for i, ip in enumerate(per_image):
            if depth < len(ip.patches):
                chosen.append((i, depth))
                added = True
                if len(chosen) == count:
                    break
        if not added:
            break
        depth += 1
    return chosen


class PatchStore:
    """Builds and loads cached :class:`PatchSet` s under ``artefact_dir``."""

    def __init__(self, artefact_dir: Path, settings: PatchSettings, workers: int | None = None):
        self.root = Path(artefact_dir)
        self.settings = settings
        self.workers = workers

    def path_for(self, req: PatchRequest) -> Path:
        return self.root / f"patches-{content_hash(req.key(self.settings))}"

    def get(self, requests: Sequence[PatchRequest]) -> dict[tuple[str, str], PatchSet]:
        """Return the patch sets of ``requests``, extracting the missing ones (in parallel)."""
        missing = [r for r in requests if not self.path_for(r).exists()]
        if missing:
            self._build(missing)
        return {(r.model, r.subset): PatchSet.load(self.path_for(r)) for r in requests}

    def _build(self, requests: Sequence[PatchRequest]) -> None:
        s = self.settings
        with file_lock(self.root / ".locks" / "patches.lock"):
            requests = [r for r in requests if not self.path_for(r).exists()]  # built meanwhile?
            if not requests:
                return
            jobs, owners = [], []
            for ri, r in enumerate(requests):
                for p in r.images:
                    seed = stable_seed("patches", s.seed, r.model, Path(p).name)
                    jobs.append((str(p), s.size, s.align, s.min_entropy, r.count, seed, s.max_pixels, s.channels))
                    owners.append(ri)
            # results arrive in job order: write each patch set as soon as its images are done
            done: list[ImagePatches] = []
            results = parallel_iter(_extract_job, jobs, workers=self.workers,
                                    desc=f"cutting patches: {len(requests)} sets from {len(jobs)} images")
            for k, res in enumerate(results):
                done.append(res)
                if k + 1 == len(jobs) or owners[k + 1] != owners[k]:
                    self._write(requests[owners[k]], done)
                    done = []

    def _write(self, req: PatchRequest, per_image: list[ImagePatches]) -> None:
        s = self.settings
        chosen = _select_round_robin(per_image, req.count)
        patches = np.zeros((len(chosen),) + ((s.channels,) if s.channels > 1 else ()) + (s.size, s.size), np.uint8)
        image_ids = np.zeros(len(chosen), np.int64)
        positions = np.zeros((len(chosen), 2), np.int64)
        entropy = np.zeros(len(chosen))
        for k, (i, j) in enumerate(chosen):
            patches[k] = per_image[i].patches[j]
            image_ids[k], positions[k], entropy[k] = i, per_image[i].positions[j], per_image[i].entropy[j]
        # named in the log once per run, with the source's own skips (``log_skipped``), not here:
        # here they were named only when the set was built, never when it was reused
        skipped = [{"file": ip.path, "reason": ip.error} for ip in per_image if ip.error]
        low = int(sum(ip.low_entropy for ip in per_image))
        info = {"model": req.model, "subset": req.subset, "requested": req.count, "count": len(chosen),
                "images": [ip.path for ip in per_image], "low_entropy_dropped": low, "skipped": skipped,
                "patch_size": s.size, "channels": s.channels}
        if len(chosen) < req.count:
            log.warning("%s/%s: %d of %d patches asked for (%d images, %d skipped, %d low-entropy cells dropped)",
                        req.model, req.subset, len(chosen), req.count, len(per_image), len(skipped), low)
        final = self.path_for(req)
        with atomic_dir(final) as tmp:
            np.save(tmp / "patches.npy", patches)
            np.savez(tmp / "index.npz", image_ids=image_ids, positions=positions, entropy=entropy)
            atomic_write_json(tmp / "info.json", info)
            atomic_write_json(tmp / "key.json", req.key(s))


def jpeg_table_ids(paths: Sequence[str | Path], key: str | None = None) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """``(ids, tables)``: each photo's JPEG luminance table (:func:`~camsim.data.io.read_jpeg_luma_table`,
    headers only) as an int id, equal for identical tables, and ``tables[id]`` the table. A photo
    without a table (not a JPEG) or whose header cannot be read gets -1; with ``key`` (the setting
    that needs tables) it is a ValueError naming the setting, the file and the reason instead."""
    index: dict[tuple[int, ...], int] = {}
    ids = np.full(len(paths), -1, np.int64)
    for k, path in enumerate(paths):
        try:
            table = read_jpeg_luma_table(path)
        except ImageReadError:
            if key:
                raise
            continue
        if table is None and key:
            raise ValueError(f"{key}: {path} has no JPEG luminance quantisation table (not a JPEG); "
                             "pairs are balanced by their photos' tables, so these photos must be JPEGs")
        if table is not None:
            ids[k] = index.setdefault(table, len(index))
    return ids, list(index)


def patch_tables(sets: Sequence[PatchSet], names: Sequence[Sequence[Path]] | None = None,
                 key: str = "phase_b.table_balance") -> np.ndarray:
    """Each patch's photo's JPEG luminance table id (:func:`jpeg_table_ids`; only photos with patches
    are read), equal across sets for equal tables. ``names``: each set's photos as this run spells
    them, in the set's order (a cached set keeps the spelling of the run that built it). ValueError
    naming the file for a photo without a table."""
    photos, where = [], []
    for k, ps in enumerate(sets):
        images = list(names[k]) if names is not None and len(names[k]) == len(ps.images) else ps.images
        used = np.unique(np.asarray(ps.image_ids, np.int64))
        photos += [images[i] for i in used]
        where.append(used)
    ids = jpeg_table_ids(photos, key)[0]
    out, start = [], 0
    for ps, used in zip(sets, where):
        per_image = np.zeros(len(ps.images), np.int64)
        per_image[used] = ids[start:start + len(used)]
        start += len(used)
        out.append(per_image[np.asarray(ps.image_ids, np.int64)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def merge_skipped(*groups: Iterable) -> list[dict]:
    """Skipped files from several places — an index's ``(path, reason)`` pairs, patch sets'
    ``{"file", "reason"}`` records — as one list of ``{"file", "reason"}``, each file once
    (its first reason), sorted by file. Every count of skipped files is the length of this."""
    out: dict[str, str] = {}
    for group in groups:
        for item in group or ():
            path, reason = (item["file"], item["reason"]) if isinstance(item, dict) else item
            out.setdefault(str(path), str(reason))
    return [{"file": f, "reason": out[f]} for f in sorted(out)]


def log_skipped(skipped_files: Sequence[dict], logger: logging.Logger | None = None) -> None:
    """Name every skipped file once, with its reason (one warning line each)."""
    logger = logger or log
    for sk in skipped_files:
        logger.warning("skipped %s: %s", sk["file"], sk["reason"])


def summarise(sets: Iterable[PatchSet], listing_skipped: Iterable = ()) -> dict:
    """Totals for logging and run.json: patches kept, low-entropy cells dropped, shortfalls and
    ``skipped_files``: the files the source left out when listing (``listing_skipped``, an
    :class:`ImageIndex`'s ``skipped``) and those unreadable when cut, each once with its reason."""
    sets = list(sets)
    return {
        "patch_sets": len(sets),
        "patches": int(sum(len(p) for p in sets)),
        "low_entropy_dropped": int(sum(p.info["low_entropy_dropped"] for p in sets)),
        "skipped_files": merge_skipped(listing_skipped, *(p.info["skipped"] for p in sets)),
        "short": {f"{p.model}/{p.subset}": [p.info["count"], p.info["requested"]]
                  for p in sets if p.info["count"] < p.info["requested"]},
    }
