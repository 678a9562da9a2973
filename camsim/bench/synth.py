"""Render-speed benchmark of the simulated cameras (prints numbers; asserts nothing).

    python -m camsim.bench.synth                       # data=synth's catalogue (the quick recipe's)
    python -m camsim.bench.synth --images 8 --workers 1
    python -m camsim.bench.synth --data synth_real     # another conf/data/<name>.yaml, traits included

Reports wall time, images/s and output megapixels/s for a whole catalogue rendered into a
temporary directory, the CPU seconds it took (wall time on a shared machine overstates the
cost; CPU time / workers is what otherwise idle cores would need), plus a single-process
breakdown: CPU seconds per scene and per camera frame. ``row_synth`` is the ``data/synth``
row of ``python -m camsim.bench`` (a small catalogue, images/s and MP/s).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from camsim.bench.common import cpu_seconds, table_line
from camsim.bench.plan import recipe
from camsim.progress import default_workers
from camsim.synth.render import canvas_factor, encode_image, noise_rng, render_camera_image, render_catalogue
from camsim.synth.scenes import render_scene
from camsim.synth.settings import synth_settings
from camsim.synth.traits import catalogue

__all__ = ["row_synth", "breakdown", "recipe_catalogue", "main"]


def recipe_catalogue(name: str = "synth") -> dict:
    """``conf/data/<name>.yaml``'s catalogue as the quick recipe renders it: models, families,
    images, size, seed and the realism traits (``data.synth``)."""
    d = recipe(data=name)["data"]
    if "num_models" not in d:
        raise SystemExit(f"--data {name}: not a simulated-camera source (conf/data/{name}.yaml has no num_models)")
    return dict(models=int(d["num_models"]), families=int(d["num_families"]), images=int(d["images_per_model"]),
                size=tuple(int(v) for v in d["image_size"]), seed=int(d["seed"]), synth=d.get("synth"))


def row_synth(p: dict) -> dict:
    """The camera simulator: ``render_catalogue`` of a small catalogue, images/s and MP/s."""
    s = p["synth"]
    n_img = s["num_models"] * s["images_per_model"]
    with tempfile.TemporaryDirectory(prefix="camsim-bench-") as tmp:
        t = time.perf_counter()
        render_catalogue(Path(tmp) / "cat", s["num_models"], s["num_families"], s["images_per_model"],
                         tuple(s["image_size"]), 0, workers=p.get("workers"))
        dt = time.perf_counter() - t
    mp = n_img * s["image_size"][0] * s["image_size"][1] / 1e6
    label = f"render_catalogue ({n_img} images {s['image_size'][1]}x{s['image_size'][0]})"
    return {"images_s": n_img / dt, "mp_s": mp / dt, "seconds": dt, **s,
            "lines": [table_line(label, n_img / dt, "images/s", note=f"{mp / dt:.2f} MP/s; workers: "
                                                                       f"{p.get('workers') or 'all cores'}")]}


def breakdown(num_models: int, num_families: int, size: tuple[int, int], scenes: int = 2, seed: int = 0,
              synth: Any = None) -> dict:
    """CPU seconds per scene render and per camera frame (in-process; the cameras' traits as
    ``synth`` sets them, without the per-photo capture conditions)."""
    cams = catalogue(num_models, num_families, seed, synth_settings(synth))
    factor = canvas_factor(cams)
    t_scene = t_cams = 0.0
    for i in range(scenes):
        t0 = time.process_time()
        scene = render_scene(i, seed, size, factor)
        t1 = time.process_time()
        cache: dict = {}
        for c in cams:
            encode_image(render_camera_image(scene, c, size, noise_rng(seed, i, c), cache), c, True)
        t_scene += t1 - t0
        t_cams += time.process_time() - t1
    return {"canvas_factor": factor, "cpu_s_per_scene": t_scene / scenes,
            "cpu_s_per_frame": t_cams / (scenes * len(cams))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m camsim.bench.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synth", help="conf/data/<name>.yaml whose catalogue to render (default synth)")
    ap.add_argument("--models", type=int, help="default: the --data config's")
    ap.add_argument("--families", type=int)
    ap.add_argument("--images", type=int)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    cat = recipe_catalogue(args.data)
    for key in ("models", "families", "images", "size", "seed"):
        if getattr(args, key) is None:
            setattr(args, key, cat[key])
    size = (args.size[0], args.size[1])
    b = breakdown(args.models, args.families, size, seed=args.seed, synth=cat["synth"])
    mp = size[0] * size[1] / 1e6
    print(f"single process: scene {b['cpu_s_per_scene']:.3f} s CPU (canvas factor {b['canvas_factor']:.2f}), "
          f"frame {b['cpu_s_per_frame'] * 1000:.0f} ms CPU ({mp / b['cpu_s_per_frame']:.2f} MP/s per core)")
    tmp = Path(tempfile.mkdtemp(prefix="camsim-bench-"))

    try:
        this_and_workers = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        t0, c0 = time.perf_counter(), cpu_seconds(*this_and_workers)
        render_catalogue(tmp / "cat", args.models, args.families, args.images, size, args.seed, workers=args.workers,
                         synth=cat["synth"])
        wall, cpu_s = time.perf_counter() - t0, cpu_seconds(*this_and_workers) - c0
        n = args.models * args.images
        nbytes = sum(f.stat().st_size for f in (tmp / "cat").rglob("*.jpg"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    workers = args.workers if args.workers is not None else default_workers()
    print(f"catalogue (data={args.data}): {args.models} models x {args.images} images of {size[0]}x{size[1]} = {n} images, "
          f"{workers} workers: {wall:.1f} s, {n / wall:.2f} images/s, {n * mp / wall:.2f} MP/s, "
          f"{nbytes / 2**20:.0f} MiB; load average now {np.round(os.getloadavg(), 2).tolist()}")
    print(f"CPU time {cpu_s:.1f} s: on {workers} otherwise idle cores about {cpu_s / max(1, workers):.0f} s "
          f"({n / (cpu_s / max(1, workers)):.2f} images/s)")


if __name__ == "__main__":
    main()
