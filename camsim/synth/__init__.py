"""Simulated camera models: the embedded default data source (issue 3).

Each simulated camera model is a seeded image pipeline (``params`` → ``isp`` stages) that
renders shared scenes (``scenes``, ``textures``) into the folder layout of a real photo
collection (``render``). ``data.synth``'s realism traits (``settings``, ``traits``, ``photo``,
``stages``, ``demosaic``) add per-photo variation and richer pipelines, all off by default.
``splice`` makes spliced images with ground-truth masks. How hard a catalogue is (camera traces
rather than scene statistics) is measured by ``camsim.eval.difficulty``.
"""

from __future__ import annotations

from camsim.synth.params import (
    ALL_DEMOSAIC_METHODS,
    CFA_PATTERNS,
    DEMOSAIC_METHODS,
    JPEG_SUBSAMPLINGS,
    RESAMPLE_KERNELS,
    CameraFamily,
    CameraParams,
    CameraParamsError,
    make_catalogue,
    make_families,
)
from camsim.synth.render import load_cameras, render_camera_image, render_catalogue
from camsim.synth.settings import SynthSettingsError, synth_settings
from camsim.synth.traits import catalogue
from camsim.synth.scenes import PHOTO_NAMES, render_scene, scene_id
from camsim.synth.splice import load_splices, make_splice, render_splices

__all__ = [
    "ALL_DEMOSAIC_METHODS", "CFA_PATTERNS", "DEMOSAIC_METHODS", "JPEG_SUBSAMPLINGS", "RESAMPLE_KERNELS", "PHOTO_NAMES",
    "CameraFamily", "CameraParams", "CameraParamsError", "make_catalogue", "make_families",
    "render_catalogue", "render_camera_image", "load_cameras", "render_scene", "scene_id",
    "make_splice", "render_splices", "load_splices", "catalogue", "synth_settings", "SynthSettingsError",
]
