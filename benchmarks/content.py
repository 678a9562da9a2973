"""How much a transfer evaluation's scores follow the patches' content rather than their camera.

A similarity network should call two patches of one photo "same" whatever they show. This script
reads a transfer run's ``scores.npz`` (``camsim-eval ckpt=… data=folder data.root=…``; its photos
must still be where the run read them), cuts each scored patch again from its photo's green
channel, and prints — for the run's two-patches-of-one-photo pairs (positives) and its
different-model pairs (negatives), patch level — the mean score S and the share called "same"
at the run's η, binned by how far apart the two patches are in mean brightness, in texture
(standard deviation of the patch) and in clipped pixels (share at 0 or 255), then the rank
correlation of S with each difference. Where the positives' rows fall with a difference, that
difference within one photo pushes ``camsim-localize`` towards cutting the photo along it (a
camera's own traces do change with exposure — signal-dependent noise, the tone curve, clipping —,
so a fall says what the network reads, not that it reads no camera trace).

    python benchmarks/content.py <transfer run dir> [--patch P]

The patch size is read from the run's ``metrics.json`` (``--patch`` overrides it; 64 where
neither says).

Grey levels are the 0..255 green channel (RGB photos) or the single channel (grayscale), the
same plane the quick recipe's network reads; differences are absolute.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from camsim.data.io import ImageReadError, read_green

#: bin edges of each difference (mean brightness and texture in grey levels, clipped share in %)
BINS = {"brightness": (0, 10, 30, 60, 100, 256), "texture": (0, 5, 10, 20, 40, 256),
        "clipped": (0, 1, 5, 20, 50, 101)}
CATEGORIES = (("same_photo", "two patches of one photo"), ("diff_model", "different models"))


def patch_stats(green: np.ndarray, yx: np.ndarray, patch: int) -> np.ndarray:
    """``[n, 3]``: mean, standard deviation and clipped share (%) of each ``patch``-px patch at ``yx``."""
    out = np.empty((len(yx), 3))
    for k, (y, x) in enumerate(yx):
        p = green[y:y + patch, x:x + patch].astype(np.float64)
        out[k] = p.mean(), p.std(), 100.0 * np.mean((p <= 0) | (p >= 255))
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a transfer evaluation's run directory (or its scores.npz)")
    ap.add_argument("--patch", type=int, default=None, help="the run's patch size in pixels (default: its metrics.json's)")
    a = ap.parse_args()
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


if __name__ == "__main__":
    main()
