"""Data-layer rows: patch extraction from files, the cached-patch loader, JPEG decoding.

The images are random textures (:func:`camsim.bench.common.texture_rgb`) written to a
temporary folder; the loader reads uniformly random uint8 patch sets.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from camsim.bench.common import NUM_CLASSES, table_line, texture_rgb, throughput, time_calls
from camsim.data.io import read_green
from camsim.data.patches import extract_image_patches
from camsim.data.store import PatchRequest, PatchSet, PatchSettings, PatchStore

__all__ = ["row_extract", "row_loader", "row_decode"]


def _write_images(folder: Path, n: int, size: Sequence[int], fmt: str, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"img{k:03d}.{fmt}"
        im = Image.fromarray(texture_rgb(int(size[0]), int(size[1]), seed + k))
        if fmt == "jpg":
            im.save(path, quality=90)
        else:
            im.save(path, compress_level=6)
        paths.append(path)
    return paths


def row_extract(p: dict) -> dict:
    """Patch extraction from JPEG or PNG files: decode once, cut the grid, entropy filter.

    ``in-process``: ``extract_image_patches`` per file, one core. ``PatchStore``: the cached
    path camsim runs (worker processes, round-robin selection, atomic write), cold cache.
    """
    fmt = p["format"]
    lines, res = [], {"format": fmt, "images": p["images"], "image_size": p["image_size"]}
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        paths = _write_images(Path(tmp) / "img", p["images"], p["image_size"], fmt, seed=11)
        mp = p["images"] * p["image_size"][0] * p["image_size"][1] / 1e6
        for P in p["patch_sizes"]:
            counts = {}

            def one_pass() -> None:
                kept = cells = 0
                for k, path in enumerate(paths):
                    r = extract_image_patches(path, P, 8, 4.0, 10 ** 9, k, 200_000_000)
                    if r.error:
                        raise RuntimeError(f"{path}: {r.error}")
                    kept += len(r.patches)
                    cells += len(r.patches) + r.low_entropy
                counts.update(kept=kept, cells=cells)

            times = time_calls(one_pass, p["timing"], warmup=1)
            rate = throughput(counts["kept"], times)
            builds = []
            for rep in range(max(1, min(2, p["timing"]["min_reps"]))):
                store = PatchStore(Path(tmp) / f"store-{P}-{rep}", PatchSettings.from_config(size=P),
                                   workers=p.get("workers"))
                req = PatchRequest("bench", "train", tuple(paths), counts["kept"])
                t = time.perf_counter()
                got = store.get([req])[("bench", "train")]
                builds.append(time.perf_counter() - t)
            store_rate = throughput(len(got), builds)
            res[str(P)] = {"patches": counts["kept"], "cells": counts["cells"], "in_process": rate,
                           "mp_s": mp / min(times), "store": store_rate, "store_patches": len(got)}
            lines.append(table_line(f"{P} px, 1 core (extract_image_patches)", rate["best"], "patches/s",
                                    note=f"{mp / min(times):.0f} MP/s; {counts['kept']}/{counts['cells']} cells kept"))
            lines.append(table_line(f"{P} px, PatchStore (workers: {p.get('workers') or 'all cores'})",
                                    store_rate["best"], "patches/s", note="cold cache, incl. writing the patch set"))
    res["lines"] = lines
    return res


def _patch_sets(folder: Path, n_sets: int, per_set: int, P: int) -> list[PatchSet]:
    """``n_sets`` saved sets of ``per_set`` random uint8 ``P``-px patches, opened memory-mapped."""
    rng = np.random.default_rng(0)
    sets = []
    for k in range(n_sets):
        f = folder / f"set{k}.npy"
        np.save(f, rng.integers(0, 256, (per_set, P, P), dtype=np.uint8))
        sets.append(PatchSet(f"model{k:02d}", "train", folder, np.load(f, mmap_mode="r"),
                             np.zeros(per_set, np.int64), np.zeros((per_set, 2), np.int64), np.zeros(per_set),
                             [], {}))
    return sets


def row_loader(p: dict) -> dict:
    """Cached-patch loader: ``PatchDataset`` (batched ``__getitems__``) + ``_loader`` as camsim
    builds them, one shuffled epoch per call; variants: worker processes, memory-mapped sets."""
    # deferred: datamodules pulls in Lightning (~180 MB), which would otherwise count in the
    # peak memory of the extract and decode rows that share this module
    from camsim.data import datamodules as dm

    P, n = int(p["patch"]), int(p["patches"])
    n_sets = NUM_CLASSES
    per_set = max(2, n // n_sets)
    lines, res = [], {"patch": P, "patches": per_set * n_sets, "loader": p["loader"]}
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        sets = _patch_sets(Path(tmp), n_sets, per_set, P)
        workers = p["loader"]["num_workers"]
        variants = [("quick", f"recipe loader (workers {workers}, in memory)", workers, True)]
        for w in p["extra_workers"]:
            if w != workers:
                variants.append((f"workers{w}", f"workers {w}, in memory", w, True))
        variants.append(("mmap", f"memory-mapped sets (workers {workers})", workers, False))
        saved = dm.IN_MEMORY_BYTES
        for key, label, w, in_memory in variants:
            try:
                dm.IN_MEMORY_BYTES = saved if in_memory else -1
                ds = dm.PatchDataset(sets, range(n_sets))
            finally:
                dm.IN_MEMORY_BYTES = saved
            cfg = OmegaConf.create({**p["loader"], "num_workers": w})
            loader = dm._loader(ds, cfg, shuffle=True)

            # training loaders drop the last partial batch (one batch shape per epoch)
            per_epoch = len(ds) - len(ds) % int(cfg.batch_size) if loader.drop_last else len(ds)

            def epoch() -> None:
                seen = 0
                for xb, yb in loader:
                    seen += len(xb)
                if seen != per_epoch:
                    raise RuntimeError(f"loader gave {seen} of {per_epoch} patches")

            times = time_calls(epoch, p["timing"], warmup=1 if w == 0 else 0)
            rate = throughput(per_epoch, times)
            res[key] = rate
            lines.append(table_line(label, rate["best"], "patches/s",
                                    note=f"batch {p['loader']['batch_size']}, {per_epoch} patches/epoch"
                                         + ("; worker start-up included" if w else "")))
    res["lines"] = lines
    return res


def row_decode(p: dict) -> dict:
    """``read_green`` of one large JPEG with the Pillow and simplejpeg decoders (pixels compared)."""
    h, w = p["image_size"]
    res: dict[str, Any] = {"image_size": [h, w]}
    lines = []
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        path = Path(tmp) / "big.jpg"
        Image.fromarray(texture_rgb(h, w, 5)).save(path, quality=90)
        res["file_mb"] = path.stat().st_size / 1e6
        out = {}
        for dec in ("pillow", "simplejpeg", "auto"):
            times = []
            for _ in range(int(p["reps"]) + 1):
                t = time.perf_counter()
                out[dec] = read_green(path, decoder=dec)
                times.append(time.perf_counter() - t)
            times = times[1:] if len(times) > 1 else times
            res[dec] = {"mp_s": h * w / 1e6 / min(times), "mp_s_median": h * w / 1e6 / statistics.median(times)}
        res["identical"] = bool(np.array_equal(out["pillow"], out["simplejpeg"])
                                and np.array_equal(out["pillow"], out["auto"]))
    for dec in ("pillow", "simplejpeg", "auto"):
        note = f"{h * w / 1e6:.2g} MP JPEG q90 ({res['file_mb']:.2g} MB)"
        if dec == "simplejpeg":
            note += f"; pixels {'identical to' if res['identical'] else 'DIFFER from'} Pillow"
        lines.append(table_line(f"read_green, decoder={dec}", res[dec]["mp_s"], "MP/s", note=note))
    res["lines"] = lines
    return res
