"""Render simulated cameras: one image (:func:`render_camera_image`) and a whole catalogue in the
layout of a real photo folder (:func:`render_catalogue`), or only the images a job needs
(:func:`render_missing`: any subset, later, the same bytes).

Folder layout written by :func:`render_catalogue`::

    out_dir/
      cameras.json                 # see below
      F00_M00/scene00000.jpg       # every model shows every scene:
      F00_M00/scene00001.jpg       #   <scene_id> is the same content for all models
      F01_M01/scene00000.jpg
      ...

``cameras.json``: ``{"format": FORMAT ("camsim.synth/2"), "seed", "num_models", "num_families",
"images_per_model", "image_size": [H, W], "ext": "jpg" | "png", "scene_ids": [...],
"cameras": {model_name: CameraParams.to_dict()}, "families": {family: [model names]},
"family_records": {family: CameraFamily.to_dict()}}``.

Scene ids are shared by all models (like the Dresden database, where every camera shot the
same scenes), so a split of images by file stem that is the same for every model keeps test
scenes out of training. Every model writes frames of exactly ``image_size``: a model that
resamples its output (``resample_scale`` ≠ 1) has a sensor of ``image_size / resample_scale``
(e.g. 1.33× larger for a 0.75 reduction), so the patch yield per frame is the same for every
model even though its CFA traces no longer sit on a 2-px lattice (the JPEG grid still does:
compression comes after resampling, on the output frame).

Seeds: scene ``i`` depends on ``(seed, i)``; the noise of model ``m`` in scene ``i`` on
``(seed, i, m's name)``, and so do its per-photo conditions and JPEG preset
(:mod:`camsim.synth.photo`, each from a stream of its own); nothing depends on the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from camsim.artefacts import (atomic_dir, atomic_write_bytes, atomic_write_json, clean_stale_temps, file_lock,
                              lock_path)
from camsim.config.synth import SynthScenesConfig, SynthTraitsConfig
from camsim.progress import parallel_map
from camsim.synth import isp, stages
from camsim.synth.params import CameraParams, CameraParamsError, family_of, make_families
from camsim.synth.photo import Photo, encode_photo, photo_conditions, photo_jpeg_quality
from camsim.synth.scenes import Scene, area_resize, scene_id
from camsim.synth.settings import is_default, settings_dict, synth_settings
from camsim.synth.textures import make_scene
from camsim.synth.traits import catalogue

FORMAT = "camsim.synth/2"  # bump when the rendered images change for the same config
SUPERSAMPLE = 2.0  # scene canvas pixels per output pixel
MIN_SUPERSAMPLE = 1.5  # ... and at least this many per sensor pixel of the largest sensor
AE_TARGET = 0.18  # auto-exposure: mean linear luminance of the frame at 0 EV bias
TAG_NOISE = 0x4E4F53  # "NOS"


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) as ints; both even and at least 16 (CFA tiles must be whole)."""
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size: must be (H, W), got {image_size!r}") from None
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise ValueError(f"image_size: H and W must be even and >= 16, got {(h, w)}")
    return h, w


def canvas_factor(cameras: Sequence[CameraParams]) -> float:
    """Scene canvas px per output px: 2 (SUPERSAMPLE), or more so that the largest sensor
    among ``cameras`` still gets at least 1.5 canvas px per sensor px."""
    return max(SUPERSAMPLE, MIN_SUPERSAMPLE * max([1.0] + [c.max_sensor_scale for c in cameras]))


def noise_rng(seed: int, scene_index: int, camera: CameraParams, namespace: int = 0) -> np.random.Generator:
    """The sensor-noise stream of ``camera`` in scene ``scene_index`` (by camera name, so it
    does not depend on the camera's position in a catalogue or on the worker)."""
    return np.random.default_rng([seed, TAG_NOISE, namespace, scene_index, zlib.crc32(camera.name.encode())])


def render_camera_image(scene: Scene, camera: CameraParams, out_shape: tuple[int, int],
                        rng: np.random.Generator, cache: dict | None = None, photo: Photo | None = None) -> np.ndarray:
    """The frame ``camera`` takes of ``scene``: [H, W, 3] uint8 before compression.

    Stages in the order of ``camsim.synth.isp``'s docstring, with the realism traits
    (:mod:`camsim.synth.stages`) where the camera has them: lateral CA and vignetting before the
    optics blur, PRNU before and row / column patterns after the temporal noise, auto white
    balance instead of the preset gains. ``photo``: this photo's conditions (AE error, ISO
    offset, reduced size; :func:`camsim.synth.photo.photo_conditions`). ``scene.radiance`` is
    first integrated over the camera's own sensor pixels (memoised in ``cache`` by sensor shape,
    when given, for the next camera of the same scene).
    """
    photo = photo if photo is not None else Photo()
    if photo.scale != 1.0:
        camera = dataclasses.replace(camera, resample_scale=camera.resample_scale * photo.scale)
    sensor = camera.sensor_shape(out_shape)
    if cache is not None and sensor in cache:
        x = cache[sensor]
    else:
        x = area_resize(scene.radiance, sensor)  # planar [3, H, W]
        if cache is not None:
            cache[sensor] = x
    m = np.asarray(camera.colour_matrix, dtype=np.float32)
    x = stages.vignette(stages.lateral_ca(x, *camera.lateral_ca), camera.vignetting)
    x = isp.optics_blur(x, camera.blur_sigma)
    cam_rgb = isp.apply_colour_matrix(x, np.linalg.inv(m))  # sensor response: M⁻¹ (all ≥ 0)
    ev = camera.exposure_ev + photo.ev if photo.ev else camera.exposure_ev
    exposure = AE_TARGET * 2.0 ** ev / max(float(isp.luma(x).mean()), 1e-4)
    exposure = float(np.clip(exposure, 1 / 64, 64))
    wb = np.asarray(camera.wb_gains, dtype=np.float32)
    cmap = isp.cfa_channel_map(camera.cfa, sensor)
    raw = isp.mosaic(cam_rgb, camera.cfa) * (np.float32(exposure) / wb)[cmap]
    gain = isp.iso_gain(scene.darkness, camera.iso_min, camera.iso_max)
    if photo.iso_ev:
        gain = float(np.clip(gain * 2.0 ** photo.iso_ev, 1.0, camera.iso_max / camera.iso_min))
    raw = stages.prnu(raw, camera.prnu, camera.sensor_seed)
    raw = isp.sensor_noise(raw, camera.full_well, camera.read_noise, gain, rng)
    raw = stages.fixed_pattern(raw, camera.row_noise, camera.column_noise, camera.sensor_seed, camera.full_well, gain)
    raw = isp.adc_quantise(raw, camera.adc_bits)
    gains = stages.auto_wb_gains(raw, cmap, camera.wb_gains, camera.awb_strength) if camera.awb_strength \
        else camera.wb_gains
    raw = isp.white_balance(raw, camera.cfa, gains)
    rgb = isp.demosaic(raw, camera.cfa, camera.demosaic)
    # noise σ of luma after white balance and colour matrix (what the denoiser is tuned to)
    wb = np.asarray(gains, dtype=np.float32)
    a = (isp.LUMA @ m) * wb
    var_y = sum(float(a[c]) ** 2 * isp.noise_variance(rgb[c] / wb[c], camera.full_well, camera.read_noise, gain)
                for c in range(3))
    rgb = isp.apply_colour_matrix(rgb, m)
    if camera.smoothing:  # the same Gaussian, as the ISP's full-resolution smoothing
        rgb = isp.optics_blur(rgb, camera.smoothing)
    rgb = isp.denoise(rgb, camera.denoise_luma, camera.denoise_chroma, np.sqrt(var_y))
    rgb = isp.tone_curve(rgb, camera.gamma, camera.contrast)
    rgb = isp.sharpen(rgb, camera.sharpen_radius, camera.sharpen_amount)
    if camera.resample_scale != 1.0:
        rgb = isp.resample(rgb, out_shape, camera.resample_kernel)
    return isp.to_uint8(rgb)


def encode_image(img: np.ndarray, camera: CameraParams, jpeg: bool, quality: int | None = None) -> bytes:
    """The file a camera writes: JPEG with its chroma subsampling and tables at ``quality``
    (default: its one setting; :func:`~camsim.synth.photo.photo_jpeg_quality` picks a photo's),
    or, with ``jpeg=False``, lossless PNG of the same frame."""
    if jpeg:
        return encode_photo(img, camera, camera.jpeg_quality if quality is None else quality)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def camera_file(scene: Scene, camera: CameraParams, seed: int, out_shape: tuple[int, int], jpeg: bool = True,
                namespace: int = 0, cache: dict | None = None) -> bytes:
    """The file ``camera`` writes of ``scene`` (scene ``scene.index`` of ``seed``): this photo's
    conditions and sensor noise drawn by camera name, scene and ``namespace``, then
    :func:`render_camera_image` and :func:`encode_image` at the photo's JPEG quality."""
    photo = photo_conditions(camera, seed, scene.index, namespace)
    img = render_camera_image(scene, camera, out_shape, noise_rng(seed, scene.index, camera, namespace), cache, photo)
    return encode_image(img, camera, jpeg, photo_jpeg_quality(camera, seed, scene.index, namespace, img) if jpeg else None)


@dataclass(frozen=True)
class _SceneJob:
    index: int
    seed: int
    out_shape: tuple[int, int]
    factor: float
    cameras: tuple[dict, ...]  # the cameras whose file of this scene is wanted (any subset of the catalogue)
    out_dir: str
    jpeg: bool
    scenes: SynthScenesConfig = dataclasses.field(default_factory=SynthScenesConfig)  # data.synth.scenes


def _render_scene_job(job: _SceneJob) -> dict:
    """Worker: one scene through the job's cameras, each file written atomically into ``out_dir``.
    A camera's file does not depend on which other cameras the job holds (its noise and photo
    conditions are drawn by its name; ``factor`` is the whole catalogue's)."""
    t0 = time.perf_counter()
    scene = make_scene(job.index, job.seed, job.out_shape, job.factor, **dataclasses.asdict(job.scenes))
    t_scene = time.perf_counter() - t0
    ext = "jpg" if job.jpeg else "png"
    sid = scene_id(job.index)
    nbytes = 0
    cache: dict = {}
    for cd in job.cameras:
        cam = CameraParams.from_dict(cd)
        data = camera_file(scene, cam, job.seed, job.out_shape, job.jpeg, cache=cache)
        atomic_write_bytes(Path(job.out_dir) / cam.name / f"{sid}.{ext}", data)
        nbytes += len(data)
    return {"scene": sid, "kind": scene.kind, "seconds_scene": t_scene,
            "seconds": time.perf_counter() - t0, "bytes": nbytes}


def render_catalogue(out_dir: Path, num_models: int, num_families: int, images_per_model: int,
                     image_size: tuple[int, int], seed: int, workers: int | None = None,
                     jpeg: bool = True, synth: SynthTraitsConfig | Mapping | None = None,
                     images: bool = True) -> Path:
    """Render ``num_models`` simulated cameras × ``images_per_model`` shared scenes to
    ``out_dir/<model_name>/<scene_id>.jpg`` (``.png`` with ``jpeg=False``) plus
    ``out_dir/cameras.json``; returns ``out_dir``.

    ``out_dir`` may be an existing *empty* directory (e.g. the temp dir that
    ``camsim.artefacts.cached_dir`` hands to its builder): it is filled in place. If it does
    not exist it is built atomically (temp sibling, then rename). Scenes are rendered in
    ``workers`` processes (default: all cores; 0/1 = in-process) with a progress bar.
    ``synth``: the realism traits (``data.synth``; :func:`camsim.synth.traits.catalogue`,
    :mod:`camsim.config.synth`), default all off. ``cameras.json`` records them under ``"synth"``
    when any is on. ``images=False``: the catalogue without its images (``cameras.json`` and one
    empty folder per model); :func:`render_missing` renders any of them later, the same bytes.
    """
    out_dir = Path(out_dir)
    synth = synth_settings(synth)
    cameras = catalogue(num_models, num_families, seed, synth)
    if isinstance(images_per_model, bool) or not isinstance(images_per_model, (int, np.integer)) \
            or images_per_model < 1:
        raise ValueError(f"images_per_model: must be an integer >= 1, got {images_per_model!r}")
    images_per_model = int(images_per_model)
    out_shape = check_image_size(image_size)

    def fill(d: Path) -> None:  # a folder no one else sees yet: no lock
        _write_catalogue(d, cameras, num_families, images_per_model, out_shape, seed, jpeg, synth)
        if images:
            render_missing(d, catalogue_files(d), workers=workers, lock=False)

    if out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise ValueError(f"out_dir: {out_dir} exists and is not an empty directory")
        fill(out_dir)
    else:
        with atomic_dir(out_dir) as tmp:
            fill(tmp)
    return out_dir


def _write_catalogue(out_dir: Path, cameras: list[CameraParams], num_families: int, images_per_model: int,
                     out_shape: tuple[int, int], seed: int, jpeg: bool, synth: SynthTraitsConfig) -> None:
    for cam in cameras:
        (out_dir / cam.name).mkdir(parents=True, exist_ok=False)
    families = make_families(num_families, seed)
    atomic_write_json(out_dir / "cameras.json", {
        "format": FORMAT,
        "seed": int(seed),
        "num_models": len(cameras),
        "num_families": int(num_families),
        "images_per_model": images_per_model,
        "image_size": list(out_shape),
        "ext": "jpg" if jpeg else "png",
        "scene_ids": [scene_id(i) for i in range(images_per_model)],
        "cameras": _camera_records(cameras),
        "families": {f.name: [c.name for k, c in enumerate(cameras) if family_of(k, num_families) == f.index]
                     for f in families},
        "family_records": {f.name: f.to_dict() for f in families},
        **({} if is_default(synth, ignore_presets=True) else {"synth": settings_dict(synth)}),
    })


def _camera_records(cameras: Sequence[CameraParams]) -> dict:
    """``cameras.json``'s ``"cameras"``: model name → its parameters."""
    return {c.name: c.to_dict() for c in cameras}


def _read_meta(root: Path) -> dict:
    import json

    path = Path(root) / "cameras.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a camsim.synth catalogue ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def check_catalogue(root: Path, cameras: Sequence[CameraParams]) -> None:
    """Raise ValueError unless the catalogue recorded at ``root`` is ``cameras`` — what this code
    draws for the settings the render was cached under. A render cached by a simulator whose draws
    changed without a new :data:`FORMAT` would otherwise be reused under the same key, and so would
    every network trained on it."""
    import json

    meta = _read_meta(root)
    want, got = json.loads(json.dumps(_camera_records(cameras))), meta["cameras"]  # tuples as JSON lists
    if got == want:
        return
    name = next((n for n in sorted(set(want) | set(got)) if got.get(n) != want.get(n)))
    have, draw = got.get(name) or {}, want.get(name) or {}
    fields = sorted(k for k in set(have) | set(draw) if have.get(k) != draw.get(k))
    raise ValueError(f"{Path(root) / 'cameras.json'}: this cached render was drawn by another version of the "
                     f"simulator ({name}: {', '.join(fields) or 'the model itself'} "
                     f"{'differs' if len(fields) == 1 else 'differ'} from what this camsim draws for the same "
                     f"settings); delete {root} and the networks trained on it, or use another "
                     "paths.artefact_dir, to render anew")


def catalogue_files(root: Path) -> dict[str, list[Path]]:
    """Model → the paths of every image the catalogue at ``root`` holds once rendered (sorted;
    rendered or not), from its ``cameras.json``."""
    meta = _read_meta(root)
    return {name: [Path(root) / name / f"{sid}.{meta['ext']}" for sid in sorted(meta["scene_ids"])]
            for name in sorted(meta["cameras"])}


def render_missing(root: Path, files: Mapping[str, Sequence[Path]] | Sequence[Path], workers: int | None = None,
                   lock: bool = True) -> int:
    """Render the images among ``files`` (paths of the catalogue at ``root``, or model → paths)
    that do not exist yet, byte for byte as a whole-catalogue render writes them: one job per scene
    with the cameras that lack it, in ``workers`` processes, each file written atomically, under
    the catalogue's render lock (``lock``; concurrent callers render each file once). Returns how
    many were rendered."""
    root = Path(root)
    paths = [Path(p) for ps in files.values() for p in ps] if isinstance(files, Mapping) else [Path(p) for p in files]
    if all(p.exists() for p in paths):
        return 0
    meta = _read_meta(root)
    scene_of = {sid: i for i, sid in enumerate(meta["scene_ids"])}
    held = file_lock(lock_path(root).with_suffix(".render.lock")) if lock else contextlib.nullcontext()
    with held:
        wanted: dict[int, set[str]] = {}
        for p in paths:
            if p.exists():  # rendered meanwhile (another job)
                continue
            if p.parent.parent != root or p.parent.name not in meta["cameras"] or p.stem not in scene_of \
                    or p.suffix != f".{meta['ext']}":
                raise ValueError(f"{p}: not an image of the simulated-camera catalogue {root}")
            wanted.setdefault(scene_of[p.stem], set()).add(p.parent.name)
        if not wanted:
            return 0
        for d in {root / name for names in wanted.values() for name in names}:  # a killed render's temp files
            for e in [e for e in d.iterdir() if e.name.startswith(".") and ".tmp-" in e.name]:
                clean_stale_temps(d / e.name[1:e.name.index(".tmp-")], locked=lock)
        cameras = {name: CameraParams.from_dict(d) for name, d in meta["cameras"].items()}
        factor = canvas_factor(list(cameras.values()))  # the whole catalogue's, whichever cameras render
        synth = synth_settings(meta.get("synth"))
        shape = (int(meta["image_size"][0]), int(meta["image_size"][1]))
        jobs = [_SceneJob(i, int(meta["seed"]), shape, factor, tuple(cameras[n].to_dict() for n in sorted(names)),
                          str(root), meta["ext"] == "jpg", synth.scenes)
                for i, names in sorted(wanted.items())]
        n = sum(len(j.cameras) for j in jobs)
        parallel_map(_render_scene_job, jobs, workers=workers,
                     desc=f"synth: {n} images of {len(cameras)} cameras × {len(jobs)} scenes")
    return n


def load_cameras(root: Path) -> dict[str, CameraParams]:
    """The camera records of a rendered catalogue (``root/cameras.json``), by model name."""
    meta = _read_meta(root)
    try:
        return {name: CameraParams.from_dict(d) for name, d in meta["cameras"].items()}
    except CameraParamsError as exc:
        raise ValueError(f"{Path(root) / 'cameras.json'}: {exc}") from exc
