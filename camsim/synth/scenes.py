"""Scene content that needs no download: dead leaves and scikit-image's bundled photographs.

A scene is linear-light RGB radiance (linear sRGB primaries, reflectance-like values around
0–1) rendered on a *canvas* finer than any sensor that will see it; the camera pipeline
integrates it to its own pixel grid (``area_resize``). Scene ``index`` of seed ``seed`` is the
same content at any canvas resolution up to resampling, because every geometric quantity is
drawn in units of output pixels and scaled by the canvas factor.

Two kinds:

* ``dead_leaves`` (65 %): occluding discs painted back to front, radius density ∝ r⁻³
  between 2 output px and 40 % of the short side (scale-invariant, like natural images);
  each leaf is flat (35 %), a linear gradient (30 %) or textured (35 %: 1/f^β noise with
  β 1.5–2.5, an oriented grating of period 3–30 px, or a photo's texture); over a
  photo or 1/f background; under a smooth illumination field (shading).
* ``photo`` (35 %): one of :data:`PHOTO_NAMES` (shipped inside the scikit-image wheel), sRGB
  decoded to linear light, resampled by 1/1.25–1/2 (native px per output px 1.25–2, with a
  Lanczos antialiasing filter at a non-integer ratio, which washes out the photo's own
  CFA / JPEG-grid traces; mirror-padded where the photo is too small), randomly cropped,
  grey photos given a random tint, with 0–40 large foreground leaves.

Any trace of the source photo that survives is identical for every camera model, because
every model renders every scene: scene content carries no camera-model information. For the
same reason it is harmless that one photo appears (as different crops and textures) in
several scenes, some of which may land in training and others in test: the split by scene
id keeps each *scene* on one side, and content shared across scenes cannot carry the label.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle_left",
    "motorcycle_right", "page", "retina", "rocket", "text",
)
"""Photos bundled in the scikit-image wheel (no download at run time)."""

SCENE_KINDS: tuple[str, ...] = ("dead_leaves", "photo")
TAG_SCENE = 0x53434E  # "SCN"

R_MIN_PX = 2.0  # smallest leaf radius, in output pixels
R_MAX_FRAC = 0.4  # largest leaf radius, fraction of the short side
COVERAGE = 3.0  # expected number of leaves over a point


@dataclass(frozen=True)
class Scene:
    """One rendered scene: linear RGB radiance on a canvas, plus how dark it is (0–1),
    which drives each camera's auto-ISO."""

    index: int
    kind: str
    radiance: np.ndarray  # planar [3, H, W] float32, linear light
    darkness: float


def scene_id(index: int) -> str:
    """File stem of scene ``index`` (shared by every camera model)."""
    return f"scene{index:05d}"


# ---------------------------------------------------------------------- photos

@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` from scikit-image's bundled data, decoded to *linear* light:
    float32 [H, W, 3] in [0, 1]."""
    import skimage.data as skd

    if name not in PHOTO_NAMES:
        raise ValueError(f"photo: unknown name {name!r}; choose one of {list(PHOTO_NAMES)}")
    try:
        if name.startswith("motorcycle_"):
            left, right, _ = skd.stereo_motorcycle()
            img = left if name.endswith("left") else right
        else:
            img = getattr(skd, name)()
    except Exception as exc:  # a missing bundled file would change every scene: say so
        raise RuntimeError(f"photo {name!r}: could not be loaded from the installed scikit-image "
                           f"({type(exc).__name__}: {exc}); camsim.synth needs the photos bundled "
                           "in the scikit-image wheel") from exc
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3])
    return _SRGB_LUT[img]


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer function (IEC 61966-2-1), float in [0, 1] in, float32 out."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


_SRGB_LUT = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


def is_grey_photo(name: str) -> bool:
    p = load_photo(name)
    return bool(np.array_equal(p[:, :, 0], p[:, :, 1]) and np.array_equal(p[:, :, 1], p[:, :, 2]))


def pil_resize(img: np.ndarray, shape: tuple[int, int], kernel: int = Image.Resampling.LANCZOS,
               box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize float32 [H, W] or [H, W, C] to ``shape`` (H, W) channel by channel with PIL
    (antialiased when shrinking); ``box`` (x0, y0, x1, y1) crops the source first."""
    img = np.asarray(img, dtype=np.float32)
    h, w = int(shape[0]), int(shape[1])
    if img.ndim == 2:
        return np.asarray(Image.fromarray(img, mode="F").resize((w, h), kernel, box=box), dtype=np.float32)
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c]), mode="F").resize((w, h), kernel, box=box))
             for c in range(img.shape[2])]
    return np.stack(chans, axis=2).astype(np.float32, copy=False)


def area_resize(planes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixel integration of planar [C, H, W] to [C, *shape]: each output pixel is the mean
    of the canvas area it covers."""
    planes = np.asarray(planes, dtype=np.float32)
    c, h, w = planes.shape
    hs, ws = int(shape[0]), int(shape[1])
    if (h, w) == (hs, ws):
        return planes.copy()
    if h % hs == 0 and w % ws == 0 and h // hs == w // ws:
        f = h // hs
        return planes.reshape(c, hs, f, ws, f).mean(axis=(2, 4), dtype=np.float32)
    return np.stack([np.asarray(Image.fromarray(p, mode="F").resize((ws, hs), Image.Resampling.BOX))
                     for p in planes]).astype(np.float32, copy=False)


def photo_crop(name: str, out_shape: tuple[int, int], canvas_shape: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """A random crop of photo ``name`` in linear light covering ``out_shape`` output pixels at
    1.25–2 native px per output px (mirror-extended if the photo is too small), rendered on
    ``canvas_shape``; grey photos get a random tint."""
    photo = load_photo(name)
    rho = rng.uniform(1.25, 2.0)
    ch, cw = out_shape[0] * rho, out_shape[1] * rho
    ph, pw = photo.shape[:2]
    pad_h, pad_w = max(0, int(np.ceil(ch)) + 1 - ph), max(0, int(np.ceil(cw)) + 1 - pw)
    top, left = int(rng.integers(0, pad_h + 1)), int(rng.integers(0, pad_w + 1))
    if pad_h or pad_w:
        # np.pad's "symmetric" mode reflects repeatedly when the pad exceeds the image.
        photo = np.pad(photo, ((top, pad_h - top), (left, pad_w - left), (0, 0)), mode="symmetric")
        ph, pw = photo.shape[:2]
    y0 = rng.uniform(0, ph - ch)
    x0 = rng.uniform(0, pw - cw)
    flip = rng.random() < 0.5
    tint = _random_colour(rng, 1.0, 0.35)
    out = np.clip(pil_resize(photo, canvas_shape, Image.Resampling.LANCZOS, box=(x0, y0, x0 + cw, y0 + ch)), 0, None)
    if flip:
        out = out[:, ::-1]
    if is_grey_photo(name):
        out = out * tint[None, None, :]
    return np.ascontiguousarray(out, dtype=np.float32)


# ---------------------------------------------------------------------- textures

def powerlaw_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise with power spectrum ∝ 1/f^beta (float32)."""
    h, w = shape
    white = rng.standard_normal((h, w), dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec *= (f ** (-beta / 2.0)).astype(np.float32)
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    return out / max(float(out.std()), 1e-8)


def _random_colour(rng: np.random.Generator, lum: float | np.ndarray, sat: float | np.ndarray,
                   n: int | None = None) -> np.ndarray:
    """Colour(s) of luminance-ish ``lum`` and saturation ``sat`` (channel mean = lum)."""
    c = rng.dirichlet([2.0, 2.0, 2.0], size=n) * 3.0
    lum = np.asarray(lum, dtype=np.float64)[..., None]
    sat = np.asarray(sat, dtype=np.float64)[..., None]
    return (lum * ((1.0 - sat) + sat * c)).astype(np.float32)


def _textures(out_shape: tuple[int, int], canvas_shape: tuple[int, int], c: float,
              seeds: list[np.random.SeedSequence]) -> list[np.ndarray]:
    """Multiplicative textures (mean ≈ 1, [H, W, C]) on the canvas: 1/f noise, an oriented
    grating, a photo. Noise is drawn at twice the output size whatever the canvas."""
    h, w = canvas_shape
    rng = np.random.default_rng(seeds[0])
    ref = (2 * out_shape[0], 2 * out_shape[1])
    noise = np.exp(rng.uniform(0.2, 0.6) * powerlaw_noise(ref, rng.uniform(1.5, 2.5), rng))
    if ref != canvas_shape:
        noise = np.clip(pil_resize(noise, canvas_shape, Image.Resampling.BICUBIC), 1e-3, None)
    noise = (noise / noise.mean())[:, :, None]
    rng = np.random.default_rng(seeds[1])
    period = rng.uniform(3.0, 30.0) * c
    theta = rng.uniform(0, np.pi)
    amp = rng.uniform(0.3, 0.9)
    ax = np.arange(w, dtype=np.float32) * np.float32(np.cos(theta) * 2 * np.pi / period)
    ay = np.arange(h, dtype=np.float32) * np.float32(np.sin(theta) * 2 * np.pi / period)
    grating = 1.0 + amp * (np.outer(np.sin(ay), np.cos(ax)) + np.outer(np.cos(ay), np.sin(ax)))
    rng = np.random.default_rng(seeds[2])
    photo = photo_crop(str(rng.choice(PHOTO_NAMES)), out_shape, canvas_shape, rng)
    photo = np.clip(photo / max(float(photo.mean()), 1e-4), 0, 8)
    return [noise.astype(np.float32), grating[:, :, None].astype(np.float32), photo.astype(np.float32)]


# ---------------------------------------------------------------------- dead leaves

@dataclass(frozen=True)
class Leaves:
    """Discs in paint order (later ones on top), in canvas pixels."""

    cy: np.ndarray
    cx: np.ndarray
    r: np.ndarray
    kind: np.ndarray  # 0 flat, 1 gradient, 2 textured
    colour: np.ndarray  # [n, 3]
    grad: np.ndarray  # [n, 2] gradient (dy, dx) per radius
    tex: np.ndarray  # texture index
    tex_off: np.ndarray  # [n, 2] int texture offset (pixels)


def draw_leaves(n: int, r_min: float, r_max: float, canvas_shape: tuple[int, int], c: float,
                num_textures: int, rng: np.random.Generator) -> Leaves:
    """``n`` leaves with radius density ∝ r⁻³ on [r_min, r_max] output px (scaled by ``c``)."""
    h, w = canvas_shape
    u = rng.random(n)
    radii = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5 * c  # inverse CDF
    return Leaves(
        cy=rng.uniform(-0.05, 1.05, n) * h,
        cx=rng.uniform(-0.05, 1.05, n) * w,
        r=radii,
        kind=rng.choice(3, size=n, p=[0.35, 0.30, 0.35]),
        colour=_random_colour(rng, np.exp(rng.uniform(np.log(0.02), np.log(0.9), n)), rng.uniform(0.0, 0.8, n), n),
        grad=rng.normal(0.0, 0.6, (n, 2)),
        tex=rng.integers(0, max(1, num_textures), n),
        tex_off=(rng.random((n, 2)) * np.array([h, w])).astype(np.int64),
    )


def leaf_labels(leaves: Leaves, canvas_shape: tuple[int, int]) -> np.ndarray:
    """Index of the top-most leaf covering each canvas pixel (-1: none), [H, W] int32.

    Vectorised by radius class (classes √2 apart): each class stamps a square stencil around
    all its centres at once and keeps, per pixel, the highest paint index (``np.maximum.at``)."""
    h, w = canvas_shape
    label = np.full(h * w, -1, dtype=np.int32)
    r = leaves.r
    if len(r) == 0:
        return label.reshape(h, w)
    bounds = [0.0]
    b = 2.0
    while b < r.max():
        bounds.append(b)
        b *= np.sqrt(2.0)
    bounds.append(np.inf)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = np.nonzero((r > lo) & (r <= hi))[0]
        if len(sel) == 0:
            continue
        k = int(np.ceil(min(hi, r[sel].max()))) + 1
        off = np.arange(-k, k + 1, dtype=np.int32)
        per = max(1, 3_000_000 // (len(off) ** 2))  # bound memory: ~3M stencil points a chunk
        for s0 in range(0, len(sel), per):
            idx = sel[s0:s0 + per]
            cy, cx, rr = leaves.cy[idx], leaves.cx[idx], leaves.r[idx]
            py = np.floor(cy).astype(np.int32)[:, None] + off[None, :]
            px = np.floor(cx).astype(np.int32)[:, None] + off[None, :]
            dy2 = ((py - cy[:, None]) ** 2).astype(np.float32)
            dx2 = ((px - cx[:, None]) ** 2).astype(np.float32)
            dy2[(py < 0) | (py >= h)] = np.inf
            dx2[(px < 0) | (px >= w)] = np.inf
            inside = dy2[:, :, None] + dx2[:, None, :] <= (rr * rr).astype(np.float32)[:, None, None]
            lin = (py * w)[:, :, None] + px[:, None, :]
            who = np.broadcast_to(idx.astype(np.int32)[:, None, None], inside.shape)
            np.maximum.at(label, lin[inside], who[inside])
    return label.reshape(h, w)


def shade_leaves(canvas: np.ndarray, label: np.ndarray, leaves: Leaves, textures: list[np.ndarray]) -> None:
    """Fill every labelled pixel of ``canvas`` ([H, W, 3], in place) with its leaf's
    flat colour, gradient or texture."""
    h, w = label.shape
    n = len(leaves.r)
    lab = label.ravel()
    # per-leaf fill code: 0 flat, 1 gradient, 2 + t texture t; background (index n) -1
    code = np.concatenate([np.where(leaves.kind == 2, 2 + leaves.tex, leaves.kind), [-1]]).astype(np.int8)
    colour = np.concatenate([leaves.colour, np.zeros((1, 3), np.float32)])
    labc = np.where(lab >= 0, lab, n)
    pix_code = np.take(code, labc)
    covered = pix_code >= 0
    if not covered.any():
        return
    val = np.take(colour, labc, axis=0)
    mult = np.ones(h * w, dtype=np.float32)
    g = np.flatnonzero(pix_code == 1)
    if len(g):
        lg = labc[g]
        ys, xs = np.divmod(g, w)
        ramp = 1.0 + ((ys - leaves.cy[lg]) * leaves.grad[lg, 0] + (xs - leaves.cx[lg]) * leaves.grad[lg, 1]) / leaves.r[lg]
        mult[g] = np.clip(ramp, 0.05, 3.0)
    rgb_tex = []
    for t, tex in enumerate(textures):
        sel = np.flatnonzero(pix_code == 2 + t)
        if len(sel) == 0:
            continue
        lt = labc[sel]
        ys, xs = np.divmod(sel, w)
        pos = ((ys + leaves.tex_off[lt, 0]) % h) * w + (xs + leaves.tex_off[lt, 1]) % w
        if tex.shape[2] == 1:
            mult[sel] = np.take(tex.reshape(-1), pos)
        else:
            rgb_tex.append((sel, np.take(tex.reshape(h * w, -1), pos, axis=0)))
    val *= mult[:, None]
    for sel, tv in rgb_tex:
        val[sel] *= tv
    flat = canvas.reshape(-1, 3)
    if covered.all():
        flat[:] = val
    else:
        np.copyto(flat, val, where=covered[:, None])


def _n_leaves(out_shape: tuple[int, int], r_min: float, r_max: float, coverage: float) -> int:
    """Leaves needed so each point is covered ``coverage`` times on average (disc centres
    spread over 110 % of each side)."""
    mean_r2 = 2.0 * r_min * r_min * np.log(r_max / r_min) / (1.0 - (r_min / r_max) ** 2)
    area = out_shape[0] * out_shape[1] * 1.21
    return int(coverage * area / (np.pi * mean_r2))


def render_scene(index: int, seed: int, out_shape: tuple[int, int], canvas_factor: float = 2.0,
                 namespace: int = 0) -> Scene:
    """Scene ``index`` of ``seed`` for frames of ``out_shape`` (H, W) output pixels, rendered on
    a canvas ``canvas_factor`` times finer (supersampled). ``namespace`` separates scene streams
    (0 = catalogue, others e.g. for splices). Each part draws from its own seed stream, so the
    layout does not depend on the canvas factor."""
    if canvas_factor < 1.0:
        raise ValueError(f"canvas_factor: must be >= 1, got {canvas_factor}")
    seeds = np.random.SeedSequence([seed, TAG_SCENE, namespace, index]).spawn(6)
    rng = np.random.default_rng(seeds[0])
    c = float(canvas_factor)
    canvas_shape = (int(round(out_shape[0] * c)), int(round(out_shape[1] * c)))
    kind = str(rng.choice(SCENE_KINDS, p=[0.65, 0.35]))
    darkness = float(rng.beta(1.2, 3.0))
    textures = _textures(out_shape, canvas_shape, c, seeds[1:4])
    r_max = R_MAX_FRAC * min(out_shape)
    rng = np.random.default_rng(seeds[4])
    if kind == "photo":
        canvas = photo_crop(str(rng.choice(PHOTO_NAMES)), out_shape, canvas_shape, rng)
        leaves = draw_leaves(int(rng.integers(0, 41)), 8.0, r_max, canvas_shape, c, len(textures), rng)
    else:
        bg = textures[int(rng.choice([0, 2]))]
        colour = _random_colour(rng, float(rng.uniform(0.05, 0.5)), 0.5)
        canvas = np.array(np.broadcast_to(bg * colour, (*canvas_shape, 3)), dtype=np.float32)
        leaves = draw_leaves(_n_leaves(out_shape, R_MIN_PX, r_max, COVERAGE), R_MIN_PX, r_max,
                             canvas_shape, c, len(textures), rng)
    shade_leaves(canvas, leaf_labels(leaves, canvas_shape), leaves, textures)
    # smooth illumination (shading, light fall-off): about ±0.5 EV over the frame
    rng = np.random.default_rng(seeds[5])
    small = (max(4, out_shape[0] // 8), max(4, out_shape[1] // 8))
    light = pil_resize(np.exp(0.3 * powerlaw_noise(small, 4.0, rng)), canvas_shape, Image.Resampling.BILINEAR)
    canvas *= light[:, :, None]
    radiance = np.ascontiguousarray(canvas.transpose(2, 0, 1))
    return Scene(index=index, kind=kind, radiance=radiance, darkness=darkness)
