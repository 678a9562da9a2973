"""Splices of real camera-original photos, for detection power on real cameras (localisation).

The repository holds one real forgery (``../shared/data/splices``); a false-alarm rate measured on
authentic photos says nothing about what a change costs in detection. This script cuts a region of
a photo of one camera model and pastes it, where it lies in its own crop, into a photo of another
model — both camera originals from a ``<Model>/<photo>`` folder (``data=folder``'s layout, e.g. one
built by ``benchmarks/real_sets.py``). Both photos are cropped to one size at offsets on the 8-pixel
JPEG grid, so the pasted pixels keep their own camera's demosaicing, noise and JPEG traces, on a
grid aligned with the host's. The unspliced host crop is kept as that splice's control: spliced and
control differ only in the pasted region (a paired design; the detection AUC measures the region).

What it is not: no blending, scaling, rotation, recompression or retouching — the easiest splice a
forger makes (the kind of the simulated benchmark's splices, with real cameras' traces); scores on it
are an upper bound on what edited forgeries give.

Layout written (``splicing.real_dir`` / ``splicing.authentic_dir`` of the splicing benchmark)::

    <out>/images/<id>.png          spliced crop (lossless)
    <out>/masks/<id>_mask.png      255 where pasted
    <out>/authentic/<id>.png       the host crop, unspliced
    <out>/manifest.csv             host and donor file and model, crop, region, area share

    python benchmarks/real_splices.py ../realdata/fresh7 ../realdata/splices7 --n 60
    camsim-eval task=splicing ckpt=<phase_b>/model.ckpt splicing.real_dir=../realdata/splices7 \\
        splicing.authentic_dir=../realdata/splices7/authentic
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from camsim.data.io import ImageReadError, image_size, read_rgb
from camsim.data.sources import IMAGE_EXTENSIONS

GRID = 8  # JPEG block: crop origins on it keep each camera's block grid where it was


def _photos(root: Path) -> dict[str, list[Path]]:
    """Model folder → its photos (sorted)."""
    models = {d.name: sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
              for d in sorted(root.iterdir()) if d.is_dir()}
    return {m: ps for m, ps in models.items() if ps}


def _crop_shape(size: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int] | None:
    """The crop (rows, columns) that fits a photo of ``size``: ``hw`` or, for a portrait photo, ``hw`` turned."""
    for shape in (hw, hw[::-1]):
        if size[0] >= shape[0] and size[1] >= shape[1]:
            return shape
    return None


def _origin(rng: np.random.Generator, size: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    return tuple(int(rng.integers(0, (size[k] - shape[k]) // GRID + 1)) * GRID for k in range(2))  # type: ignore[return-value]


def region_mask(rng: np.random.Generator, shape: tuple[int, int], area: tuple[float, float]) -> np.ndarray:
    """A rectangle or an ellipse covering a share in ``area`` of ``shape``, at a random place (bool)."""
    share = rng.uniform(*area)
    aspect = rng.uniform(0.5, 2.0)
    ellipse = bool(rng.integers(2))
    box = share * shape[0] * shape[1] / (np.pi / 4 if ellipse else 1.0)   # bounding-box area
    h = int(min(shape[0], np.sqrt(box / aspect)))
    w = int(min(shape[1], box / max(h, 1)))
    y0, x0 = int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1))
    mask = np.zeros(shape, dtype=bool)
    if ellipse:
        yy, xx = np.ogrid[:h, :w]
        mask[y0:y0 + h, x0:x0 + w] = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
    else:
        mask[y0:y0 + h, x0:x0 + w] = True
    return mask


def build(src: Path, out: Path, n: int, hw: tuple[int, int], area: tuple[float, float], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    models: dict[str, list[tuple[Path, tuple[int, int]]]] = {}
    for model, photos in _photos(src).items():    # every header read once: unreadable files named up front
        for p in photos:
            try:
                size = image_size(p)
            except ImageReadError as e:
                print(f"skipped {e}", file=sys.stderr)
                continue
            if _crop_shape(size, hw) is not None:
                models.setdefault(model, []).append((p, size))
    if len(models) < 2:
        raise SystemExit(f"{src}: needs photos of at least {hw[0]}×{hw[1]} px of at least two camera models in "
                         f"<Model>/ folders; found {len(models)} such models")
    used: set[Path] = set()
    rows: list[dict] = []
    for d in ("images", "masks", "authentic"):
        (out / d).mkdir(parents=True, exist_ok=True)
    names = sorted(models)
    for _ in range(50 * n):
        if len(rows) == n:
            break
        m_host, m_donor = rng.choice(len(names), size=2, replace=False)
        host, host_size = models[names[m_host]][int(rng.integers(len(models[names[m_host]])))]
        donor, donor_size = models[names[m_donor]][int(rng.integers(len(models[names[m_donor]])))]
        shape = _crop_shape(host_size, hw)
        if host in used or shape is None or any(have < want for have, want in zip(donor_size, shape)):
            continue  # a host used already, or a donor too small for the host's crop (portrait vs landscape)
        try:
            a, b = read_rgb(host), read_rgb(donor)
        except ImageReadError as e:
            print(f"skipped {e}", file=sys.stderr)
            continue
        (ya, xa), (yb, xb) = _origin(rng, a.shape[:2], shape), _origin(rng, b.shape[:2], shape)
        a = a[ya:ya + shape[0], xa:xa + shape[1]]
        b = b[yb:yb + shape[0], xb:xb + shape[1]]
        mask = region_mask(rng, shape, area)
        spliced = a.copy()
        spliced[mask] = b[mask]
        sid = f"{len(rows):04d}"
        Image.fromarray(spliced).save(out / "images" / f"{sid}.png", compress_level=1)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{sid}_mask.png")
        Image.fromarray(a).save(out / "authentic" / f"{sid}.png", compress_level=1)
        used.add(host)
        ys, xs = np.nonzero(mask)
        rows.append({"id": sid, "host_model": names[m_host], "host": str(host.relative_to(src)),
                     "host_origin": f"{ya} {xa}", "donor_model": names[m_donor], "donor": str(donor.relative_to(src)),
                     "donor_origin": f"{yb} {xb}", "crop": f"{shape[0]}x{shape[1]}",
                     "region": f"{ys.min()} {xs.min()} {ys.max() + 1} {xs.max() + 1}",
                     "area": round(float(mask.mean()), 4)})
    if len(rows) < n:
        print(f"only {len(rows)} of {n} splices: too few photos of at least {hw[0]}×{hw[1]} px "
              f"(each photo is a host once)", file=sys.stderr)
    with (out / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id"])
        w.writeheader()
        w.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="folder of <Model>/<photo> camera originals")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=60, help="splices (each with its unspliced control)")
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 1536), metavar=("ROWS", "COLS"),
                    help="crop size (turned for portrait photos)")
    ap.add_argument("--area", type=float, nargs=2, default=(0.1, 0.3), metavar=("MIN", "MAX"),
                    help="pasted share of the crop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 1 or min(args.size) < 64 or not 0 < args.area[0] <= args.area[1] < 1:
        ap.error("--n ≥ 1, --size ≥ 64 px, 0 < --area MIN ≤ MAX < 1")
    if any(s % GRID for s in args.size):
        ap.error(f"--size: multiples of {GRID} (the JPEG grid)")
    rows = build(args.src, args.out, args.n, tuple(args.size), tuple(args.area), args.seed)
    pairs = len({(r["host_model"], r["donor_model"]) for r in rows})
    print(f"{len(rows)} splices ({pairs} host/donor model pairs) and their controls in {args.out}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
