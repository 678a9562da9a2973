"""Spliced images from two different simulated cameras, with ground-truth masks.

:func:`make_splice` is the pure pixel operation; :func:`render_splices` makes a benchmark
folder for splicing localisation (``docs/method.md``, "Splicing demonstration")::

    out_dir/
      splices.json                 # manifest, see render_splices
      splice0000.png               # host frame with a region from the donor camera
      splice0000_mask.png          # 8-bit, 255 = spliced (donor) pixel, 0 = host
      splice0001.png               # an unspliced control: mask all 0, donor null
      ...

Host and donor frames each go through their camera's full pipeline *including its JPEG*
(decoded), as a forger would take two camera-original JPEGs; the composite is saved as
lossless PNG so both cameras' traces survive. The donor region stays at the same pixel
position it had in the donor's frame, so both keep their own 8-px JPEG grid and 2-px CFA
phase; host and donor show different scenes.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from camsim.artefacts import atomic_dir, atomic_write_json
from camsim.progress import parallel_map
from camsim.config.synth import SynthScenesConfig, SynthTraitsConfig
from camsim.synth.params import CameraParams
from camsim.synth.render import camera_file, canvas_factor, check_image_size
from camsim.synth.scenes import pil_resize, powerlaw_noise
from camsim.synth.settings import synth_settings
from camsim.synth.textures import make_scene
from camsim.synth.traits import catalogue

SPLICE_NAMESPACE = 1  # scene stream of splice hosts/donors (never the catalogue's scenes)
TAG_SPLICE = 0x53504C  # "SPL"
MASK_SHAPES: tuple[str, ...] = ("rectangle", "ellipse", "blob")


def make_splice(host: np.ndarray, donor: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``host`` with the pixels where ``mask`` is true (non-zero) taken from ``donor``.

    ``host`` and ``donor``: same shape, [H, W] or [H, W, C], same dtype; ``mask``: [H, W]
    (bool or 0/255). Returns a new array; inputs are not modified.
    """
    host = np.asarray(host)
    donor = np.asarray(donor)
    mask = np.asarray(mask)
    if host.shape != donor.shape:
        raise ValueError(f"donor: shape {donor.shape} differs from host shape {host.shape}")
    if host.dtype != donor.dtype:
        raise ValueError(f"donor: dtype {donor.dtype} differs from host dtype {host.dtype}")
    if host.ndim not in (2, 3):
        raise ValueError(f"host: must be [H, W] or [H, W, C], got shape {host.shape}")
    if mask.shape != host.shape[:2]:
        raise ValueError(f"mask: shape {mask.shape} must be the image's [H, W] {host.shape[:2]}")
    m = mask.astype(bool)
    if host.ndim == 3:
        m = m[:, :, None]
    return np.where(m, donor, host)


def random_mask(shape: tuple[int, int], rng: np.random.Generator, area: tuple[float, float] = (0.05, 0.3),
                kind: str | None = None) -> np.ndarray:
    """A random splice region, [H, W] bool, covering roughly ``area`` (fraction) of the frame:
    an axis-aligned rectangle, an ellipse, or a smooth blob (thresholded low-pass noise)."""
    h, w = shape
    kind = kind if kind is not None else str(rng.choice(MASK_SHAPES))
    if kind not in MASK_SHAPES:
        raise ValueError(f"kind: unknown mask shape {kind!r}; choose one of {list(MASK_SHAPES)}")
    frac = rng.uniform(*area)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "blob":
        small = powerlaw_noise((max(8, h // 16), max(8, w // 16)), 4.0, rng)
        field = pil_resize(small, (h, w), Image.Resampling.BICUBIC)
        # a bump in the middle keeps the blob away from the borders, threshold sets its area
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        field = field - 2.0 * (((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2) * 8
        return field > np.quantile(field, 1.0 - frac)
    aspect = rng.uniform(0.5, 2.0)
    rh = np.sqrt(frac * h * w / aspect) / 2  # half-height
    rw = rh * aspect
    if kind == "ellipse":
        rh, rw = rh * 2 / np.sqrt(np.pi), rw * 2 / np.sqrt(np.pi)
    rh, rw = min(rh, 0.45 * h), min(rw, 0.45 * w)
    cy, cx = rng.uniform(rh, h - rh), rng.uniform(rw, w - rw)
    if kind == "rectangle":
        return (np.abs(yy - cy) <= rh) & (np.abs(xx - cx) <= rw)
    return ((yy - cy) / rh) ** 2 + ((xx - cx) / rw) ** 2 <= 1.0


def decoded_camera_image(scene_index: int, seed: int, camera: CameraParams, out_shape: tuple[int, int],
                         factor: float, scenes: SynthScenesConfig | None = None) -> np.ndarray:
    """The camera's JPEG of splice-scene ``scene_index`` (scenes as ``data.synth.scenes`` says), decoded
    to [H, W, 3] uint8."""
    scene = make_scene(scene_index, seed, out_shape, factor, SPLICE_NAMESPACE,
                       **dataclasses.asdict(scenes or SynthScenesConfig()))
    data = camera_file(scene, camera, seed, out_shape, namespace=SPLICE_NAMESPACE)
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


@dataclass(frozen=True)
class _SpliceJob:
    index: int
    seed: int
    out_shape: tuple[int, int]
    factor: float
    host: dict
    donor: dict | None
    out_dir: str
    scenes: SynthScenesConfig = dataclasses.field(default_factory=SynthScenesConfig)  # data.synth.scenes


def _splice_name(i: int) -> str:
    return f"splice{i:04d}"


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _render_splice_job(job: _SpliceJob) -> dict:
    host_cam = CameraParams.from_dict(job.host)
    host_scene, donor_scene = 2 * job.index, 2 * job.index + 1
    host = decoded_camera_image(host_scene, job.seed, host_cam, job.out_shape, job.factor, job.scenes)
    rng = np.random.default_rng([job.seed, TAG_SPLICE, job.index])
    if job.donor is None:
        image, mask, donor_name = host, np.zeros(job.out_shape, dtype=bool), None
    else:
        donor_cam = CameraParams.from_dict(job.donor)
        donor = decoded_camera_image(donor_scene, job.seed, donor_cam, job.out_shape, job.factor, job.scenes)
        mask = random_mask(job.out_shape, rng)
        image, donor_name = make_splice(host, donor, mask), donor_cam.name
    name = _splice_name(job.index)
    out = Path(job.out_dir)
    (out / f"{name}.png").write_bytes(_png(image))
    (out / f"{name}_mask.png").write_bytes(_png(mask.astype(np.uint8) * 255))
    return {"name": name, "image": f"{name}.png", "mask": f"{name}_mask.png", "spliced": donor_name is not None,
            "host_model": host_cam.name, "donor_model": donor_name,
            "host_family": host_cam.family, "donor_family": None if job.donor is None else job.donor["family"],
            "host_scene": host_scene, "donor_scene": None if donor_name is None else donor_scene,
            "mask_fraction": float(mask.mean())}


def render_splices(out_dir: Path, num_images: int, image_size: tuple[int, int], seed: int,
                   num_models: int = 20, num_families: int = 6, models: Sequence[str] | None = None,
                   control_fraction: float = 0.25, workers: int | None = None,
                   catalogue_seed: int | None = None,
                   synth: SynthTraitsConfig | Mapping | None = None) -> Path:
    """Write ``num_images`` spliced images (a ``control_fraction`` of them unspliced controls)
    made from the catalogue ``catalogue(num_models, num_families, catalogue_seed, synth)``
    (default seed: ``seed``), restricted to ``models`` (names) when given — e.g. the known and
    unknown evaluation models. ``seed`` draws the scenes, cameras, masks and controls;
    ``synth``: the catalogue's realism traits (:func:`camsim.synth.traits.catalogue`).

    Each spliced image: a host camera and a different donor camera drawn at random from those
    models, a random mask (rectangle, ellipse or blob, 5–30 % of the frame). Manifest
    ``splices.json``: ``{"format", "seed", "image_size", "images": [{"name", "image", "mask",
    "spliced", "host_model", "donor_model", "host_family", "donor_family", "host_scene",
    "donor_scene", "mask_fraction"}], "cameras": {name: CameraParams.to_dict()}}``.
    Same rules for ``out_dir`` as :func:`camsim.synth.render.render_catalogue`.
    """
    out_dir = Path(out_dir)
    out_shape = check_image_size(image_size)
    if int(num_images) < 1:
        raise ValueError(f"num_images: must be at least 1, got {num_images}")
    if not 0.0 <= float(control_fraction) <= 1.0:
        raise ValueError(f"control_fraction: must be in [0, 1], got {control_fraction}")
    synth = synth_settings(synth)
    cameras = catalogue(num_models, num_families, seed if catalogue_seed is None else catalogue_seed, synth)
    by_name = {c.name: c for c in cameras}
    if models is not None:
        unknown = [m for m in models if m not in by_name]
        if unknown:
            raise ValueError(f"models: {unknown} are not in the catalogue (names: {sorted(by_name)})")
        pool = [by_name[m] for m in dict.fromkeys(models)]
    else:
        pool = cameras
    n_controls = int(round(int(num_images) * float(control_fraction)))
    if not pool:
        raise ValueError("models: an empty list — splices and controls need at least one camera")
    if len(pool) < 2 and n_controls < int(num_images):
        raise ValueError(f"models: splices need at least 2 different cameras, got {[c.name for c in pool]}")
    rng = np.random.default_rng([int(seed), TAG_SPLICE])
    is_control = np.zeros(int(num_images), dtype=bool)
    is_control[rng.permutation(int(num_images))[:n_controls]] = True
    factor = canvas_factor(pool)
    jobs = []
    for i in range(int(num_images)):
        h, d = rng.choice(len(pool), size=2, replace=False) if len(pool) >= 2 else (0, 0)
        jobs.append(_SpliceJob(i, int(seed), out_shape, factor, pool[h].to_dict(),
                               None if is_control[i] else pool[d].to_dict(), "", synth.scenes))

    def build(tmp: Path) -> None:
        jobs_here = [dataclasses.replace(j, out_dir=str(tmp)) for j in jobs]
        records = parallel_map(_render_splice_job, jobs_here, desc=f"synth: {len(jobs)} splices", workers=workers)
        used = sorted({r["host_model"] for r in records} | {r["donor_model"] for r in records if r["donor_model"]})
        atomic_write_json(tmp / "splices.json", {
            "format": "camsim.synth.splices/1", "seed": int(seed), "image_size": list(out_shape),
            "images": records, "cameras": {n: by_name[n].to_dict() for n in used}})

    if out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise ValueError(f"out_dir: {out_dir} exists and is not an empty directory")
        build(out_dir)
    else:
        with atomic_dir(out_dir) as tmp:
            build(tmp)
    return out_dir


def load_splices(root: Path) -> list[dict]:
    """The manifest records of a splice folder (``root/splices.json``)."""
    path = Path(root) / "splices.json"
    try:
        return list(json.loads(path.read_text())["images"])
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read a camsim.synth splice manifest ({exc})") from exc


__all__ = ["make_splice", "random_mask", "render_splices", "load_splices"]
