"""Photo-like scenes beside dead leaves and bundled photos (``data.synth.scenes.texture_share``):
the textures real photographs are full of, so that patch selection by entropy behaves as on them
(smooth sky and skin mostly rejected, foliage and text kept).

* ``sky``: a zenith-to-horizon gradient with soft 1/f clouds over a textured ground band;
* ``foliage``: thousands of small leaves (radius 1.5–6…14 output px) in greens, fine grain, dark gaps;
* ``text``: printed lines of random words (Pillow's bundled font, anti-aliased) on shaded paper,
  sometimes a coloured sign;
* ``skin``: one to three skin-toned ellipses with smooth shading, pores and redness, over a
  blurred background.

Like :mod:`camsim.synth.scenes`, lengths are drawn in output pixels and scaled by the canvas
factor, and every camera sees the same scene (scene content carries no camera label).
:func:`make_scene` is the one entry: it picks a texture scene for a ``texture_share`` of scene
indices (from a stream of its own) and the original scene otherwise, then, where the
``data.synth.scenes`` node asks, puts it under a cast shadow (:func:`cast_shadow`) and out of focus.
"""

from __future__ import annotations

import dataclasses
import functools
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camsim.synth.isp import optics_blur
from camsim.synth.scenes import Scene, draw_leaves, leaf_labels, pil_resize, powerlaw_noise, render_scene, shade_leaves

TEXTURE_KINDS: tuple[str, ...] = ("sky", "foliage", "text", "skin")
TAG_TEXTURE = 0x545853  # "TXS"
TAG_DEFOCUS = 0x444643  # "DFC"
TAG_SHADOW = 0x534844  # "SHD"


def make_scene(index: int, seed: int, out_shape: tuple[int, int], canvas_factor: float = 2.0, namespace: int = 0,
               texture_share: float = 0.0, defocus: float = 0.0, shadow_ev: float = 0.0) -> Scene:
    """Scene ``index``: a texture scene (:data:`TEXTURE_KINDS`) with probability
    ``texture_share``, else :func:`camsim.synth.scenes.render_scene`'s scene; with ``shadow_ev`` > 0,
    under a cast shadow (:func:`cast_shadow`); with ``defocus`` > 0, out of focus by a Gaussian of σ
    drawn uniformly in [0, ``defocus``] output px. The shadow and the defocus draw from streams of
    their own: the content is the same scene's. The arguments after ``namespace`` are the
    ``data.synth.scenes`` node's keys."""
    scene = None
    if texture_share > 0:
        rng = np.random.default_rng([seed, TAG_TEXTURE, namespace, index])
        if rng.random() < texture_share:
            scene = texture_scene(index, seed, out_shape, canvas_factor, namespace, str(rng.choice(TEXTURE_KINDS)))
    scene = scene or render_scene(index, seed, out_shape, canvas_factor, namespace)
    if shadow_ev > 0:
        rng = np.random.default_rng([seed, TAG_SHADOW, namespace, index])
        light = cast_shadow(out_shape, scene.radiance.shape[1:], canvas_factor, shadow_ev, rng)
        scene = dataclasses.replace(scene, radiance=scene.radiance * light[None])
    if defocus > 0:
        sigma = np.random.default_rng([seed, TAG_DEFOCUS, namespace, index]).uniform(0.0, defocus)
        scene = dataclasses.replace(scene, radiance=optics_blur(scene.radiance, sigma * canvas_factor))
    return scene


def cast_shadow(out_shape: tuple[int, int], canvas_shape: tuple[int, int], canvas_factor: float, shadow_ev: float,
                rng: np.random.Generator) -> np.ndarray:
    """Light multiplier ``[H, W]`` on the canvas (1 in the light, down to 2^-depth in the shadow): a
    smooth random field's top 20–60 % of the frame is in shadow, its edge blurred by σ 0.5–4
    output px (penumbra), the depth drawn uniformly in [0, ``shadow_ev``] EV."""
    small = (max(4, out_shape[0] // 16), max(4, out_shape[1] // 16))
    field = pil_resize(powerlaw_noise(small, 3.0, rng), canvas_shape, Image.Resampling.BILINEAR)
    inside = (field > np.quantile(field, 1.0 - rng.uniform(0.2, 0.6))).astype(np.float32)
    penumbra = optics_blur(inside[None], rng.uniform(0.5, 4.0) * canvas_factor)[0]
    return np.exp2(-rng.uniform(0.0, shadow_ev) * penumbra).astype(np.float32)


def texture_scene(index: int, seed: int, out_shape: tuple[int, int], canvas_factor: float, namespace: int,
                  kind: str) -> Scene:
    """Scene ``index`` of texture ``kind`` on a canvas ``canvas_factor`` times finer than ``out_shape``."""
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"kind: unknown texture scene {kind!r}; choose one of {list(TEXTURE_KINDS)}")
    rng = np.random.default_rng([seed, TAG_TEXTURE, namespace, index, TEXTURE_KINDS.index(kind)])
    c = float(canvas_factor)
    canvas_shape = (int(round(out_shape[0] * c)), int(round(out_shape[1] * c)))
    canvas = _PAINTERS[kind](out_shape, canvas_shape, c, rng)
    darkness = float(rng.beta(1.2, 3.0))
    small = (max(4, out_shape[0] // 8), max(4, out_shape[1] // 8))
    light = pil_resize(np.exp(0.3 * powerlaw_noise(small, 4.0, rng)), canvas_shape, Image.Resampling.BILINEAR)
    canvas = np.clip(canvas, 1e-4, None) * light[:, :, None]
    return Scene(index=index, kind=kind, radiance=np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32),
                 darkness=darkness)


def _noise(out_shape: tuple[int, int], canvas_shape: tuple[int, int], beta: float,
           rng: np.random.Generator) -> np.ndarray:
    """Unit-σ 1/f^β noise drawn at twice the output size, resampled to the canvas."""
    ref = (2 * out_shape[0], 2 * out_shape[1])
    n = powerlaw_noise(ref, beta, rng)
    return n if ref == canvas_shape else pil_resize(n, canvas_shape, Image.Resampling.BICUBIC)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _sky(out_shape, canvas_shape, c, rng) -> np.ndarray:
    h, w = canvas_shape
    b = rng.uniform(0.5, 1.1)
    zenith = np.array([0.06, 0.16, 0.5]) * b * rng.uniform(0.8, 1.2, 3)
    horizon = np.array([0.55, 0.62, 0.78]) * b * rng.uniform(0.9, 1.1, 3)
    y = np.arange(h, dtype=np.float32)[:, None] / h
    x = np.arange(w, dtype=np.float32)[None, :] / w
    y_h = rng.uniform(0.55, 0.9) + 0.03 * _noise((1, out_shape[1]), (1, w), 2.5, rng)[0][None, :]
    t = np.clip(y / y_h, 0, 1) ** rng.uniform(0.5, 1.5)
    sky = (zenith * (1 - t[..., None]) + horizon * t[..., None]) * (1 + 0.2 * rng.uniform(-1, 1) * (x - 0.5))[..., None]
    cloud = _noise(out_shape, canvas_shape, 3.2, rng)
    mask = _smoothstep((cloud - rng.uniform(0.0, 1.6)) / 0.8)[..., None]
    grey = (0.75 + 0.1 * _noise(out_shape, canvas_shape, 2.0, rng))[..., None] * b
    sky = sky * (1 - mask) + grey * mask
    ground_col = np.array([rng.uniform(0.04, 0.15), rng.uniform(0.06, 0.2), rng.uniform(0.02, 0.08)])
    ground = ground_col * np.exp(0.5 * _noise(out_shape, canvas_shape, 1.8, rng))[..., None]
    return np.where((y >= y_h)[..., None], ground, sky).astype(np.float32)


def _foliage(out_shape, canvas_shape, c, rng) -> np.ndarray:
    r_min, r_max = 1.5, rng.uniform(6.0, 14.0)
    mean_r2 = 2.0 * r_min * r_min * np.log(r_max / r_min) / (1.0 - (r_min / r_max) ** 2)
    n = int(2.5 * out_shape[0] * out_shape[1] * 1.21 / (np.pi * mean_r2))
    leaves = draw_leaves(n, r_min, r_max, canvas_shape, c, 1, rng)
    lum = np.exp(rng.uniform(np.log(0.03), np.log(0.5), n))[:, None]
    hue = np.stack([rng.uniform(0.25, 0.7, n), np.ones(n), rng.uniform(0.1, 0.35, n)], axis=1)
    leaves = dataclasses.replace(leaves, colour=(lum * hue).astype(np.float32))
    grain = np.exp(0.25 * _noise(out_shape, canvas_shape, 1.2, rng))[..., None].astype(np.float32)
    canvas = np.empty((*canvas_shape, 3), dtype=np.float32)
    canvas[:] = np.array([0.01, 0.02, 0.008], dtype=np.float32) * rng.uniform(0.5, 2.0)
    shade_leaves(canvas, leaf_labels(leaves, canvas_shape), leaves, [grain])
    return canvas


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _words(rng: np.random.Generator, n: int) -> str:
    letters = string.ascii_lowercase + string.digits[:4]
    words = ["".join(rng.choice(list(letters), size=int(rng.integers(1, 10)))) for _ in range(n)]
    return " ".join(w.capitalize() if rng.random() < 0.15 else w for w in words)


def _text(out_shape, canvas_shape, c, rng) -> np.ndarray:
    h, w = canvas_shape
    paper = np.array([0.75, 0.72, 0.65]) * rng.uniform(0.6, 1.1) * rng.uniform(0.9, 1.1, 3)
    ink = np.array([0.02, 0.02, 0.03]) if rng.random() < 0.7 else rng.uniform(0.01, 0.3, 3)
    cover = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(cover)
    y = rng.uniform(0, 0.1) * h
    while y < h:  # blocks of lines, each block its own font size
        size = max(6, int(rng.uniform(6, 20) * c))
        x0 = rng.uniform(0, 0.15) * w
        for _ in range(int(rng.integers(2, 9))):
            draw.text((x0, y), _words(rng, max(2, int(w / (size * 3)))), fill=255, font=_font(size))
            y += size * rng.uniform(1.2, 1.6)
        y += size * rng.uniform(0.5, 3)
    alpha = (np.asarray(cover, dtype=np.float32) / 255)[..., None]
    shade = (1 + 0.08 * _noise(out_shape, canvas_shape, 3.0, rng))[..., None]
    canvas = (paper * (1 - alpha) + ink * alpha) * shade
    if rng.random() < 0.4:  # a sign: coloured panel with light lettering
        sh, sw = int(rng.uniform(0.2, 0.4) * h), int(rng.uniform(0.3, 0.6) * w)
        y0, x0 = int(rng.integers(0, h - sh)), int(rng.integers(0, w - sw))
        panel = Image.new("L", (sw, sh), 0)
        size = max(8, int(sh * rng.uniform(0.25, 0.4)))
        ImageDraw.Draw(panel).text((size // 4, size // 4), _words(rng, 3), fill=255, font=_font(size))
        a = (np.asarray(panel, dtype=np.float32) / 255)[..., None]
        colour = rng.dirichlet([1, 1, 1]) * rng.uniform(0.1, 0.5) * 3
        canvas[y0:y0 + sh, x0:x0 + sw] = colour * (1 - a) + 0.8 * a
    return canvas.astype(np.float32)


def _skin(out_shape, canvas_shape, c, rng) -> np.ndarray:
    h, w = canvas_shape
    bg_col = rng.dirichlet([2, 2, 2]) * rng.uniform(0.1, 0.6)
    canvas = (bg_col * np.exp(0.6 * _noise(out_shape, canvas_shape, 3.8, rng))[..., None]).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pores = 0.04 * _noise(out_shape, canvas_shape, 1.0, rng)
    blotch = 0.08 * _noise(out_shape, canvas_shape, 3.0, rng)
    for _ in range(int(rng.integers(1, 4))):
        ry, rx = rng.uniform(0.2, 0.45) * min(h, w) * np.array([rng.uniform(1.1, 1.5), 1.0])
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.85) * w
        d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        edge = _smoothstep((1 - np.sqrt(d2)) * min(ry, rx) / (3 * c))[..., None]
        ly, lx = rng.uniform(-0.6, 0.6, 2)
        shading = np.clip(1 - 0.45 * d2 + 0.35 * (ly * (yy - cy) / ry + lx * (xx - cx) / rx), 0.15, 1.3)
        tone = np.array([0.74, 0.41, 0.26]) * rng.uniform(0.15, 1.0) * rng.uniform(0.92, 1.08, 3)
        skin = tone * (shading * (1 + pores))[..., None] * np.stack([1 + blotch, 1 - 0.3 * blotch, 1 - 0.3 * blotch], -1)
        canvas = canvas * (1 - edge) + skin * edge
    return canvas.astype(np.float32)


_PAINTERS = {"sky": _sky, "foliage": _foliage, "text": _text, "skin": _skin}

__all__ = ["TEXTURE_KINDS", "cast_shadow", "make_scene", "texture_scene"]
