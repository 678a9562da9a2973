"""How much a transfer evaluation's scores follow the patches' content rather than their camera.

A similarity network should call two patches of one photo "same" whatever they show. This script
reads a transfer run's ``scores.npz`` (``camsim-eval ckpt=… data=folder data.root=…``; its photos
must still be where the run read them), cuts each scored patch again from its photo's green
channel, and prints — for the run's two-patches-of-one-photo pairs (positives) and its
different-model pairs (negatives), patch level — the mean score S and the share called "same"
at the run's η, binned by how far apart the two patches are in mean brightness, in texture
(standard deviation of the patch) and in clipped pixels (share at 0 or 255), then the rank
correlation of S with each difference; last, two photos of one model and different-model pairs
by whether their photos carry the same luminance quantisation table (a network that reads the
table calls identical tables "same" whatever the camera). Where the positives' rows fall with a difference, that
difference within one photo pushes ``camsim-localize`` towards cutting the photo along it (a
camera's own traces do change with exposure — signal-dependent noise, the tone curve, clipping —,
so a fall says what the network reads, not that it reads no camera trace).

    python benchmarks/content.py <transfer run dir> [--patch P]

The patch size is read from the run's ``metrics.json`` (``--patch`` overrides it; 64 where
neither says).

``--light DIR [DIR …]`` needs no network: for each folder of photos (real ones, or a simulated
render ``outputs/artefacts/synth-<hash>``), the patches the recipe would cut (64 px on an 8-px
grid, entropy > 4 nats, at most 64 a photo; at most 120 photos, drawn with a fixed seed) and how
their mean grey level spreads — the share of patches per brightness bin, the median over photos of
the span from a photo's 5th to its 95th percentile, the share of a photo's patch pairs 100 or more
grey levels apart, and of patches with more than 5 % clipped pixels. Side by side it says whether
a simulator's photos hold light and shadow as the real ones do (docs/experiments.md, "Cast shadows").

Grey levels are the 0..255 green channel (RGB photos) or the single channel (grayscale), the
same plane the quick recipe's network reads; differences are absolute.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from camsim.data.io import ImageReadError, read_green
from camsim.data.patches import cut_patches, extract_image_patches
from camsim.data.sources import IMAGE_EXTENSIONS
from camsim.data.store import jpeg_table_ids

#: bin edges of each difference (mean brightness and texture in grey levels, clipped share in %)
BINS = {"brightness": (0, 10, 30, 60, 100, 256), "texture": (0, 5, 10, 20, 40, 256),
        "clipped": (0, 1, 5, 20, 50, 101)}
CATEGORIES = (("same_photo", "two patches of one photo"), ("diff_model", "different models"))


def patch_stats(green: np.ndarray, yx: np.ndarray, patch: int) -> np.ndarray:
    """``[n, 3]``: mean, standard deviation and clipped share (%) of each ``patch``-px patch at ``yx``."""
    return stats_of(cut_patches(green, np.asarray(yx, np.int64).reshape(-1, 2), patch))


def stats_of(patches: np.ndarray) -> np.ndarray:
    """``[n, 3]``: mean, standard deviation and clipped share (%, pixels at 0 or 255) of each patch ``[n, P, P]``."""
    p = patches.reshape(len(patches), int(np.prod(patches.shape[1:]))).astype(np.float64)  # [0, P²] when none
    return np.stack([p.mean(1), p.std(1), 100.0 * np.mean((p <= 0) | (p >= 255), axis=1)], axis=1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (scipy's, ties at their mean rank); NaN for fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _run_patch_size(metrics: Path, default: int = 64) -> int:
    """The patch size a transfer run cut (its ``metrics.json``), else ``default``."""
    import json

    try:
        m = json.loads(metrics.read_text())
        return int(m["transfer"]["patch_settings"]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


#: mean grey level bins of ``--light`` (a patch's mean, 0..255)
LIGHT_BINS = (0, 30, 60, 100, 150, 200, 256)


#: what ``--light`` cuts: the quick recipe's patches (size, grid, entropy filter), at most so many a
#: photo and photos a folder (drawn with ``seed``)
LIGHT_CUT = {"patch": 64, "align": 8, "min_entropy": 4.0, "per_photo": 64, "max_photos": 120, "seed": 0}


def light_spread(folder: Path, patch: int = LIGHT_CUT["patch"], align: int = LIGHT_CUT["align"],
                 min_entropy: float = LIGHT_CUT["min_entropy"], per_photo: int = LIGHT_CUT["per_photo"],
                 max_photos: int = LIGHT_CUT["max_photos"], seed: int = LIGHT_CUT["seed"]) -> dict:
    """How the mean grey levels of a folder's patches spread (``--light``): ``photos`` (with two or
    more patches), ``patches``, ``bins`` (% of patches per :data:`LIGHT_BINS` bin), ``span`` (median
    over photos of the 95th − 5th percentile), ``far`` (% of a photo's patch pairs ≥ 100 apart, over
    all photos' pairs) and ``clipped`` (% of patches with > 5 % of pixels at 0 or 255)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise SystemExit(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    files = sorted(random.Random(seed).sample(files, min(len(files), max_photos)))
    means, clipped, spans, far, pairs = [], [], [], 0, 0
    for f in files:
        cut = extract_image_patches(f, patch, align, min_entropy, per_photo, seed, 200_000_000)
        if len(cut.patches) < 2:
            continue
        st = stats_of(cut.patches)
        m = st[:, 0]
        means.append(m)
        clipped.append(st[:, 2] > 5.0)
        spans.append(np.percentile(m, 95) - np.percentile(m, 5))
        d = np.abs(m[:, None] - m[None, :])[np.triu_indices(len(m), 1)]
        far, pairs = far + int((d >= 100).sum()), pairs + len(d)
    if not means:
        raise SystemExit(f"{folder}: no photo with two patches above {min_entropy:g} nats")
    m = np.concatenate(means)
    return {"photos": len(spans), "patches": len(m),
            "bins": (100.0 * np.histogram(m, bins=LIGHT_BINS)[0] / len(m)).tolist(),
            "span": float(np.median(spans)), "far": 100.0 * far / pairs,
            "clipped": 100.0 * float(np.concatenate(clipped).mean())}


def print_light(folders: list[Path]) -> None:
    c = LIGHT_CUT
    print(f"Patches as the quick recipe cuts them ({c['patch']} px, {c['align']}-px grid, entropy > {c['min_entropy']:g} "
          f"nats, at most {c['per_photo']} a photo; at most {c['max_photos']} photos a folder, seed {c['seed']}), green "
          "channel; a patch's brightness = its mean grey level")
    bins = " / ".join(f"{lo}–{hi}" for lo, hi in zip(LIGHT_BINS[:-1], LIGHT_BINS[1:]))
    print(f"\n| folder | photos | patches | % of patches at mean grey {bins} | span within a photo (median) "
          f"| % of pairs within a photo ≥ 100 apart | % of patches > 5 % clipped |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for folder in folders:
        r = light_spread(folder)
        print(f"| {folder} | {r['photos']} | {r['patches']} | {' / '.join(f'{x:.1f}' for x in r['bins'])} | "
              f"{r['span']:.0f} | {r['far']:.1f} | {r['clipped']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", help="a transfer evaluation's run directory (or its scores.npz)")
    ap.add_argument("--patch", type=int, default=None, help="the run's patch size in pixels (default: its metrics.json's)")
    ap.add_argument("--light", type=Path, nargs="+", default=None, metavar="DIR",
                    help="no run: how the patches' brightness spreads in each folder of photos")
    a = ap.parse_args()
    if a.light:
        if a.run is not None:
            raise SystemExit("give a transfer run or --light folders, not both")
        return print_light(a.light)
    if a.run is None:
        ap.error("a transfer run directory (or --light DIR …) is required")
    f = a.run / "scores.npz" if a.run.is_dir() else a.run
    if not f.is_file():
        raise SystemExit(f"{f}: no scores.npz — give the run directory of a transfer evaluation")
    z = np.load(f, allow_pickle=False)
    need = ("photo_path", "level", "category", "image_1", "image_2", "yx_1", "yx_2", "score", "eta")
    missing = [k for k in need if k not in z.files]
    if missing:
        raise SystemExit(f"{f}: not a transfer evaluation's scores (missing {', '.join(missing)})")
    eta = float(z["eta"])
    if a.patch is None:
        a.patch = _run_patch_size(f.parent / "metrics.json")
    sel = (z["level"] == "patch") & np.isin(z["category"], [c for c, _ in CATEGORIES])
    cat, s = z["category"][sel], z["score"][sel]
    i1, i2, y1, y2 = z["image_1"][sel], z["image_2"][sel], z["yx_1"][sel], z["yx_2"][sel]
    st1, st2 = np.empty((len(s), 3)), np.empty((len(s), 3))
    for k in np.unique(np.concatenate([i1, i2])):
        path = str(z["photo_path"][k])
        try:
            green = read_green(path)
        except (ImageReadError, OSError) as e:
            raise SystemExit(f"{path}: cannot read the run's photo again ({e})") from e
        for ii, yy, st in ((i1, y1, st1), (i2, y2, st2)):
            rows = np.flatnonzero(ii == k)
            st[rows] = patch_stats(green, yy[rows], a.patch)
    diff = np.abs(st1 - st2)
    print(f"{f}: patch level, {a.patch}-px patches, η = {eta:g}; S = the run's score of a pair; "
          f"'same' = S > η; per bin: pairs, mean S, share called 'same'")
    for j, (what, edges) in enumerate(BINS.items()):
        unit = "%" if what == "clipped" else "grey levels"
        print(f"\n| difference in {what} ({unit}) | " + " | ".join(f"{name}: n, mean S, 'same'" for _, name in CATEGORIES)
              + " |\n|---|" + "---|" * len(CATEGORIES))
        for lo, hi in zip(edges[:-1], edges[1:]):
            cells = []
            for c, _ in CATEGORIES:
                w = (cat == c) & (diff[:, j] >= lo) & (diff[:, j] < hi)
                cells.append(f"{w.sum()}, {s[w].mean():.3f}, {np.mean(s[w] > eta):.2f}" if w.any() else "0, –, –")
            print(f"| {lo}–{hi} | " + " | ".join(cells) + " |")
        print("rank correlation of S with the difference: " + ", ".join(
            f"{name} {_spearman(diff[cat == c, j], s[cat == c]):+.2f}" for c, name in CATEGORIES))
    print_tables(z, eta)


def print_tables(z, eta: float) -> None:
    """Two photos of one model and different models (patch level), by whether the two photos carry
    the same luminance quantisation table: where both rows are called "same" alike, the network
    reads the table, not the camera."""
    # the run's own per-photo table ids (scores.npz of 2026-12-07 on); older runs: read from the photos
    tables = (z["photo_jpeg_table"] if "photo_jpeg_table" in z.files
              else jpeg_table_ids([str(p) for p in z["photo_path"]])[0])
    cats = (("other_photo", "two photos of one model"), ("diff_model", "different models"))
    sel = (z["level"] == "patch") & np.isin(z["category"], [c for c, _ in cats])
    cat, s, i1, i2 = z["category"][sel], z["score"][sel], z["image_1"][sel], z["image_2"][sel]
    same_table = (tables[i1] >= 0) & (tables[i1] == tables[i2])
    print("\n| the two photos' luminance quantisation tables | " + " | ".join(f"{n}: n, mean S, 'same'" for _, n in cats)
          + " |\n|---|" + "---|" * len(cats))
    for label, rows in (("identical", same_table), ("different (or not a JPEG)", ~same_table)):
        cells = []
        for c, _ in cats:
            w = (cat == c) & rows
            cells.append(f"{w.sum()}, {s[w].mean():.3f}, {np.mean(s[w] > eta):.2f}" if w.any() else "0, –, –")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
