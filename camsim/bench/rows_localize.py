"""The analyst's time per photo: ``camsim-localize`` end to end on a folder of 12-MP JPEG photos,
run as the user runs it (its own process: start-up, decode, features, pair scoring, grid /
entropy / graph / maps, writing), the first photo and a later one of the folder apart."""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image

from camsim.bench.common import run_timed, table_line, texture_rgb
from camsim.bench.rows_similarity import _similarity
from camsim.data.sources import IMAGE_EXTENSIONS

__all__ = ["row_localize_photo", "PARTS"]

#: the parts of one photo's time, as camsim-localize's localize.csv names them
PARTS = (("read_s", "decode (JPEG, once)"), ("features_s", "feature pass"), ("scoring_s", "pair scoring"),
         ("graph_s", "grid, entropy, graph, maps"), ("write_s", "writing outputs"))


def _untrained_checkpoint(p: dict, path: Path) -> Path:
    """An untrained Phase B checkpoint of the recipe's backbone and head (same compute as a
    trained one), with the recipe's patch settings, loadable by ``camsim-localize``."""
    sim = _similarity(p, int(p["patch"]))
    sim.hparams["training"] = {"patches": {"size": int(p["patch"]), "align": int(p["align"]),
                                           "min_entropy": float(p["min_entropy"])}}
    torch.save({"state_dict": sim.state_dict(), "hyper_parameters": dict(sim.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    return path


def _photos(p: dict, folder: Path) -> list[Path]:
    """``p['photos']`` random-textured RGB photos of ``p['image_size']`` saved as JPEG q90 (every
    64-px patch decidable: the most work per pixel), or the images of ``p['folder']``."""
    if p.get("folder"):
        src = Path(p["folder"])
        if not src.is_dir():
            raise ValueError(f"--localize-folder: not a folder: {src}")
        images = sorted(q for q in src.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
        if len(images) < 2:
            raise ValueError(f"--localize-folder {src}: needs at least 2 images (a first and a later photo)")
        return images
    folder.mkdir()
    h, w = p["image_size"]
    out = []
    for i in range(int(p["photos"])):
        path = folder / f"photo{i}.jpg"
        Image.fromarray(texture_rgb(h, w, 10 + i)).save(path, quality=90)
        out.append(path)
    return out


def row_localize_photo(p: dict) -> dict:
    """``python -m camsim.cli.localize image=<folder> ckpt=…`` in a fresh process, timed from
    outside; the per-photo parts come from its ``localize.csv``. Start-up (imports, config,
    checkpoint load, exit) = wall time − the photos' seconds. ``others_cores``: the CPU the rest of
    the machine used meanwhile (busy CPU-seconds minus camsim-localize's, per second of the run;
    None without ``/proc/stat``) — on a shared machine the photo times are not a quiet machine's
    (docs/performance.md, "The analyst's time per photo")."""
    variant = p.get("variant", "channels_last")
    with tempfile.TemporaryDirectory(prefix="camsim-bench-photo-") as tmp:
        tmp_dir = Path(tmp)
        images = _photos(p, tmp_dir / "photos")
        folder = images[0].parent
        ckpt = Path(p["ckpt"]) if p.get("ckpt") else _untrained_checkpoint(p, tmp_dir / "model.ckpt")
        out = tmp_dir / "out"
        cmd = [sys.executable, "-m", "camsim.cli.localize", f"image={folder}", f"ckpt={ckpt}",
               f"hydra.run.dir={out}", f"feature_pass.channels_last={variant != 'eager'}",
               f"feature_pass.compile={variant == 'compile'}"]
        wall, _, others = run_timed("camsim-localize", cmd)
        with open(out / "localize.csv") as fh:
            rows = list(csv.DictReader(fh))
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            raise RuntimeError(f"camsim-localize: {bad[0]['image']}: {bad[0]['message']}")
        sizes = {f.name: f.stat().st_size for f in (out / Path(rows[-1]["out_dir"]).name).iterdir()}
        mp = _megapixels(images[-1])
    photos = [{k: float(r[k]) for k in ("seconds", "cpu_s", *(k for k, _ in PARTS))} | {"patches": int(r["patches"])}
              for r in rows]
    startup = wall - sum(ph["seconds"] for ph in photos)
    first, later = photos[0], photos[-1]
    # localize_s, not wall_s (the runner's, for the whole row: photos and checkpoint written too)
    res: dict[str, Any] = {"localize_s": wall, "startup_s": startup, "photos": photos, "variant": variant,
                           "megapixels": mp, "later_s": later["seconds"], "first_s": first["seconds"],
                           "write_share": later["write_s"] / later["seconds"], "output_bytes": sizes,
                           "others_cores": others,
                           "ckpt": str(p["ckpt"]) if p.get("ckpt") else "untrained (recipe's network)"}
    lines = [table_line("start-up and exit (imports, config, checkpoint load)", startup, "s",
                        note=f"{len(photos)} photos in one process; wall {wall:.1f} s"),
             table_line(f"first photo ({mp:.1f} MP), end to end", first["seconds"], "s",
                        note=f"{first['patches']} patches; feature_pass {variant}"),
             table_line(f"later photo (#{len(photos)} of the folder), end to end", later["seconds"], "s",
                        note=f"the analyst's time per photo after the first; CPU {later['cpu_s']:.1f} s "
                             f"(all threads: {later['cpu_s'] / later['seconds']:.1f} cores)")]
    lines += [table_line(f"  {label}", later[key], "s", note=f"{later[key] / later['seconds']:.0%} of the photo")
              for key, label in PARTS]
    lines.append(table_line("  outputs of one photo", sum(sizes.values()) / 1e6, "MB",
                            note=", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(sizes.items()))))
    lines.append(table_line("other processes' CPU use during the run", others, "cores",
                            note="~0 on a quiet machine: only then are the photo times a quiet machine's"))
    res["lines"] = lines
    return res


def _megapixels(path: Path) -> float:
    with Image.open(path) as im:
        return im.width * im.height / 1e6
