"""Pictures and files of one localisation, and the localisation / detection metrics.

``write_outputs`` writes into ``out_dir``:

* ``overlay.png`` — the image (RGB if given, else the green channel as grey) with the
  suspected pixels tinted red (faintly when the verdict is "not spliced"), undecided
  pixels (flat patches, the < 8 px uncovered margin) greyed, the reference patch (if any)
  outlined in green, and a caption band below: verdict, score, threshold, mode, legend.
  A preview: at most ``overlay_max_side`` pixels per side (default
  :data:`OVERLAY_MAX_SIDE`; ``None`` / 0: the image's full resolution) — a full-resolution
  12-MP PNG took longer to write than the analysis of the quick model;
* ``heatmap.png`` — the pixel heatmap (suspicion in [0, 1], grey = undecidable) with a
  colour bar, verdict and threshold in the title, the reference patch outlined;
* ``scores.npy`` (only with ``save_scores=True``) — per-patch suspicion on the patch grid,
  float16 ``[rows, cols]`` (NaN = undecidable; patch ``(i, j)`` starts at
  ``patches.npz["positions"][i * cols + j]``): a few kB instead of a float32 per pixel;
* ``patches.npz`` — per-patch ``positions``, ``entropy``, ``decidable``, ``scores``,
  ``suspicion``, ``suspect``, ``grid_shape``, ``patch``;
* ``mask.png`` — the suspected pixels at full resolution, 8-bit, 255 = suspected, 0 = not.

PNGs are written with zlib level 1 (fast; the pictures are few MB at most); the overlay in a
second thread while the heatmap and the rest are written (~0.2 s less per 12-MP photo, same bytes).

Metrics follow the splicing literature: pixel F1, MCC and IoU of a binary mask against
the ground truth, and the image-level detection AUC. Because published numbers differ
mostly by protocol, :func:`pixel_metrics` takes an explicit protocol
(:func:`metric_protocol`: fixed vs best threshold per image, with / without the better of
map and inverted map, mask-border band excluded or not, per-image mean vs pooled) and
returns it with the figures; :data:`PROTOCOL_FIXED` is what an analyst gets,
:data:`PROTOCOL_BEST` what papers usually print.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import scipy.ndimage
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

from camsim.artefacts import atomic_write_bytes
from camsim.localize.engine import LocalizationResult, rank_auc
from camsim.localize.grid import CellMap

TINT = np.array([255.0, 0.0, 0.0])       # suspected region
TINT_ALPHA = 0.45                         # verdict "spliced"
TINT_ALPHA_WEAK = 0.15                    # verdict "not spliced": where, if it were
UNDECIDED = np.array([128.0, 128.0, 128.0])
UNDECIDED_ALPHA = 0.55
OUTLINE = (0, 255, 0)                     # reference patch
HEATMAP_MAX_SIDE = 1600                   # heatmap.png is drawn from at most this many pixels per side
OVERLAY_MAX_SIDE = 2048                   # overlay.png: a preview of at most this many pixels per side


def _png_bytes(img: Image.Image, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _outline_width(shape: tuple[int, int]) -> int:
    return max(2, min(shape) // 200)


def _blend(base: np.ndarray, where: np.ndarray, colour: np.ndarray, alpha: float) -> None:
    """Blend ``colour`` into the uint8 RGB ``base`` at ``where``, in place: ``round((1 − alpha)·v +
    alpha·colour)`` in float32, tabulated for the 256 values of each channel (no float copy of
    the picture)."""
    v = np.arange(256, dtype=np.float32)[:, None]
    lut = np.clip(((1.0 - alpha) * v + alpha * colour.astype(np.float32)).round(), 0, 255).astype(np.uint8)
    for c in range(base.shape[2]):
        channel = base[..., c]
        np.copyto(channel, lut[:, c][channel], where=where)


def preview_shape(shape: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``(h, w)`` of a picture of an image of ``shape`` with at most ``max_side`` pixels per side
    (the aspect kept; ``None`` / 0: ``shape`` itself)."""
    h, w = int(shape[0]), int(shape[1])
    if not max_side or max(h, w) <= int(max_side):
        return h, w
    scale = int(max_side) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def overlay_image(result: LocalizationResult, rgb: np.ndarray | None = None,
                  max_side: int | None = None) -> np.ndarray:
    """uint8 ``[h, w, 3]``: the image with the suspect mask tinted (faintly when the
    verdict is "not spliced"), undecided pixels greyed and the reference outlined; at
    :func:`preview_shape` (full resolution unless ``max_side`` is smaller than the image:
    then the image is resized bilinearly and the maps read at the preview pixels' centres)."""
    H, W = result.shape
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (H, W, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 with shape {(H, W, 3)} like the analysed image; "
                             f"got {rgb.dtype} {rgb.shape}")
    h, w = preview_shape((H, W), max_side)
    src = Image.fromarray(np.asarray(result.green, dtype=np.uint8) if rgb is None else rgb)
    if (h, w) != (H, W):
        src = src.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    base = np.array(src.convert("RGB"))
    rows = np.minimum(((np.arange(h) + 0.5) * (H / h)).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (W / w)).astype(np.int64), W - 1)
    _blend(base, np.isnan(result.heatmap_cells.sample(rows, cols)), UNDECIDED, UNDECIDED_ALPHA)
    _blend(base, result.mask_cells.sample(rows, cols) >= 0.5, TINT,
           TINT_ALPHA if result.decision else TINT_ALPHA_WEAK)
    img = Image.fromarray(base)
    if result.reference is not None:
        y, x = result.reference
        sy, sx = h / H, w / W
        p = result.patch
        ImageDraw.Draw(img).rectangle([int(x * sx), int(y * sy), int((x + p) * sx) - 1, int((y + p) * sy) - 1],
                                      outline=OUTLINE, width=_outline_width((h, w)))
    return np.asarray(img)


def caption_lines(result: LocalizationResult) -> list[str]:
    """The overlay's caption: verdict with score and threshold; mode and patch counts."""
    verdict = "SPLICED" if result.decision else "NOT SPLICED"
    rel = ">=" if result.decision else "<"
    how = result.mode + " mode"
    if result.mode == "graph":
        how += f" ({result.stats.get('method', 'spectral')} score"
        if result.stats.get("approximation", "exact") != "exact":
            how += f", {result.stats.get('landmarks')} landmark patches"
        how += ")"
    return [f"{verdict}: score {result.score:.3f} {rel} threshold {result.threshold:.3f}",
            f"{how}; {result.n_decidable}/{len(result.positions)} patches decidable, "
            f"{int(result.suspect.sum())} suspect, {result.patch} px patches, stride {result.stride}"]


def legend_entries(result: LocalizationResult) -> list[tuple[tuple[int, ...], str]]:
    """The overlay legend's (colour, label) pairs; the faint tint of a "not spliced" verdict named by mode."""
    weak = "graph's weaker side" if result.mode == "graph" else "patches unlike the reference"
    legend = [(tuple(int(c) for c in TINT), "suspected region" if result.decision
               else f"{weak} (below threshold: not flagged)"),
              (tuple(int(c) for c in UNDECIDED), "undecided (flat patch or uncovered < 8 px margin)")]
    return legend + ([(OUTLINE, "reference patch")] if result.reference is not None else [])


def annotated_overlay(result: LocalizationResult, rgb: np.ndarray | None = None,
                      max_side: int | None = None) -> np.ndarray:
    """:func:`overlay_image` with a caption band below it: verdict, score, threshold,
    mode and a legend (red = suspected / faint red = below threshold, grey = undecided,
    green = reference patch). uint8 ``[h + band, w, 3]``."""
    ov = overlay_image(result, rgb, max_side)
    h, w = ov.shape[:2]
    fs = int(np.clip(w // 60, 11, 64))
    font = ImageFont.load_default(size=fs)
    lines = caption_lines(result)
    legend = legend_entries(result)
    pad = fs // 2
    band_h = pad + (len(lines) + 1) * int(fs * 1.35) + pad
    band = Image.new("RGB", (w, band_h), (255, 255, 255))
    d = ImageDraw.Draw(band)
    y = pad
    for i, line in enumerate(lines):
        d.text((pad, y), line, fill=(160, 0, 0) if (i == 0 and result.decision) else (0, 0, 0), font=font)
        y += int(fs * 1.35)
    x = pad
    for colour, label in legend:
        d.rectangle([x, y + 2, x + fs, y + fs], fill=colour, outline=(0, 0, 0))
        d.text((x + fs + pad // 2, y), label, fill=(0, 0, 0), font=font)
        x += fs + pad + int(d.textlength(label, font=font)) + 2 * pad
    return np.concatenate([ov, np.asarray(band)], axis=0)


def heatmap_png(result: LocalizationResult) -> bytes:
    """PNG bytes of the heatmap with a colour bar (grey = undecidable), drawn from at most
    :data:`HEATMAP_MAX_SIDE` pixels per side (every k-th pixel of a larger image)."""
    h, w = result.shape
    k = max(1, int(np.ceil(max(h, w) / HEATMAP_MAX_SIDE)))
    fig_w = 7.0
    fig = Figure(figsize=(fig_w, float(np.clip(fig_w * 0.85 * h / w, 2.5, 12.0))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    shown = result.heatmap_cells.sample(np.arange(0, h, k), np.arange(0, w, k)).astype(np.float32)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0.0, vmax=1.0,
                   interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    if result.reference is not None:
        y, x = result.reference
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), result.patch, result.patch,
                               fill=False, edgecolor="lime", linewidth=1.5))
    label = "suspicion: 1 − S(reference, patch)" if result.mode == "reference" \
        else "suspicion: 1 − mean S to host community"
    fig.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    lines = caption_lines(result)
    ax.set_title(f"{lines[0]}\n{result.mode} mode; grey = undecided", fontsize=9)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def summary_line(result: LocalizationResult) -> str:
    """One line: image-level decision and score, mode, reference, patch counts."""
    verdict = "spliced" if result.decision else "not spliced"
    rel = ">=" if result.decision else "<"
    ref = "" if result.reference is None else f", reference patch at (y={result.reference[0]}, x={result.reference[1]})"
    return (f"{verdict}: score {result.score:.4f} {rel} threshold {result.threshold:.4f} "
            f"({result.mode} mode, {result.n_decidable}/{len(result.positions)} patches decidable, "
            f"{int(result.suspect.sum())} suspect{ref})")


def scores_grid(result: LocalizationResult) -> np.ndarray:
    """Per-patch suspicion laid out as the patch grid: float16 ``[rows, cols]``, NaN = undecidable."""
    return np.asarray(result.suspicion, dtype=np.float16).reshape(result.grid_shape)


def write_outputs(result: LocalizationResult, out_dir: str | Path, rgb: np.ndarray | None = None,
                  save_scores: bool = True, overlay_max_side: int | None = OVERLAY_MAX_SIDE) -> str:
    """Write overlay.png (at most ``overlay_max_side`` pixels per side; ``None`` / 0: full
    resolution), heatmap.png, patches.npz, mask.png and (``save_scores``) scores.npy into
    ``out_dir`` (created if missing; each file written atomically) and return
    :func:`summary_line`. See the module docstring for the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the overlay is drawn and encoded (resize, blend, zlib: mostly without the GIL) beside the rest
    with ThreadPoolExecutor(1) as pool:
        overlay = pool.submit(_write_overlay, result, rgb, overlay_max_side, out / "overlay.png")
        _write_rest(result, out, save_scores)
        overlay.result()
    return summary_line(result)


def _write_overlay(result: LocalizationResult, rgb: np.ndarray | None, max_side: int | None, path: Path) -> None:
    overlay = annotated_overlay(result, rgb, max_side)
    atomic_write_bytes(path, _png_bytes(Image.fromarray(overlay), compress_level=1))


def _write_rest(result: LocalizationResult, out: Path, save_scores: bool) -> None:
    """heatmap.png, scores.npy (``save_scores``), patches.npz and mask.png into ``out``."""
    atomic_write_bytes(out / "heatmap.png", heatmap_png(result))
    if save_scores:
        buf = io.BytesIO()
        np.save(buf, scores_grid(result))
        atomic_write_bytes(out / "scores.npy", buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, positions=result.positions, entropy=result.entropy, decidable=result.decidable,
             scores=result.scores, suspicion=result.suspicion, suspect=result.suspect,
             grid_shape=np.asarray(result.grid_shape), patch=np.asarray(result.patch))
    atomic_write_bytes(out / "patches.npz", buf.getvalue())
    cells = result.mask_cells                          # 0 / 255 per cell, then pixels: no float 12-MP map
    mask = CellMap(np.where(cells.values >= 0.5, 255, 0).astype(np.uint8), cells.ys, cells.xs).pixels()
    atomic_write_bytes(out / "mask.png", _png_bytes(Image.fromarray(mask), compress_level=1))


# --------------------------------------------------------------------------- metrics

def _confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float, float]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt masks must have the same shape; got {pred.shape} and {gt.shape}")
    p, g = pred.astype(bool), gt.astype(bool)
    tp = float(np.count_nonzero(p & g))
    fp = float(np.count_nonzero(p & ~g))
    fn = float(np.count_nonzero(~p & g))
    tn = float(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def f1_from_counts(tp: Any, fp: Any, fn: Any, tn: Any = 0.0) -> Any:
    """F1 = 2TP / (2TP + FP + FN); 0 where the denominator is 0. Scalars or arrays."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    out = np.divide(2 * tp, den, out=np.zeros(np.broadcast(tp, den).shape), where=den > 0)
    return float(out) if out.ndim == 0 else out


def mcc_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> Any:
    """MCC = (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 where a factor is 0."""
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    num = tp * tn - fp * fn
    out = np.divide(num, np.sqrt(np.maximum(den, 0.0)), out=np.zeros(np.broadcast(num, den).shape),
                    where=den > 0)
    return float(out) if out.ndim == 0 else out


def iou_from_counts(tp: Any, fp: Any, fn: Any, tn: Any = 0.0) -> Any:
    """IoU (Jaccard) = TP / (TP + FP + FN); 0 where the denominator is 0."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = tp + fp + fn
    out = np.divide(tp, den, out=np.zeros(np.broadcast(tp, den).shape), where=den > 0)
    return float(out) if out.ndim == 0 else out


METRICS: dict[str, Callable[..., Any]] = {"f1": f1_from_counts, "mcc": mcc_from_counts, "iou": iou_from_counts}


def pixel_f1(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """F1 = 2TP / (2TP + FP + FN) of the positive (spliced) pixels; 0.0 when both masks
    are empty (no positives to find; scikit-learn's zero-division convention)."""
    return f1_from_counts(*_confusion(pred_mask, gt_mask))


def pixel_mcc(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Matthews correlation (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) in [−1, 1];
    0.0 when a factor of the denominator is zero."""
    return mcc_from_counts(*_confusion(pred_mask, gt_mask))


def pixel_iou(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Intersection over union TP / (TP + FP + FN); 0.0 when both masks are empty."""
    return iou_from_counts(*_confusion(pred_mask, gt_mask))


def best_of_inverted(metric: Callable[[np.ndarray, np.ndarray], float], pred: np.ndarray,
                     gt: np.ndarray) -> float:
    """max(metric(pred, gt), metric(¬pred, gt)) — the field's custom for maps whose
    polarity is unknown (e.g. which graph community is the splice). Inverts every pixel,
    undecided ones included; :func:`pixel_metrics` with ``decided`` does not."""
    pred = np.asarray(pred).astype(bool)
    return max(metric(pred, gt), metric(~pred, gt))


# ----------------------------------------------------------------- metric protocol (issue 17)

#: What an analyst gets: the binary map as decided, no inversion, all pixels, mean over images.
PROTOCOL_FIXED = {"threshold": "fixed", "inversion": False, "border_px": 0, "averaging": "per_image"}
#: What papers usually print: best threshold per image, better of map / inverted map.
PROTOCOL_BEST = {"threshold": "best", "inversion": True, "border_px": 0, "averaging": "per_image"}


def metric_protocol(threshold: str = "fixed", inversion: bool = False, border_px: int = 0,
                    averaging: str = "per_image") -> dict[str, Any]:
    """The dict that names a pixel-metric protocol; callers put it into JSON and reports.

    ``threshold``: ``"fixed"`` (the binary map as decided) or ``"best"`` (per image, the
    threshold on the continuous map that maximises each metric); ``inversion``: also try
    the inverted map and keep the better (per image and metric); ``border_px``: exclude
    pixels within ``w`` px of the ground-truth mask's boundary (0 = none); ``averaging``:
    ``"per_image"`` (mean of per-image metrics) or ``"pooled"`` (metric of the confusion
    counts summed over all images, each image at its own chosen threshold / polarity).
    Raises ``ValueError`` naming the key.
    """
    if threshold not in ("fixed", "best"):
        raise ValueError(f"protocol threshold must be 'fixed' or 'best'; got {threshold!r}")
    if not isinstance(inversion, (bool, np.bool_)):
        raise ValueError(f"protocol inversion must be a bool; got {inversion!r}")
    if isinstance(border_px, bool) or not isinstance(border_px, (int, np.integer)) or border_px < 0:
        raise ValueError(f"protocol border_px must be an integer >= 0; got {border_px!r}")
    if averaging not in ("per_image", "pooled"):
        raise ValueError(f"protocol averaging must be 'per_image' or 'pooled'; got {averaging!r}")
    return {"threshold": threshold, "inversion": bool(inversion), "border_px": int(border_px),
            "averaging": averaging}


def protocol_name(protocol: dict[str, Any]) -> str:
    """A readable name, e.g. ``"fixed threshold, no inversion, all pixels (undecided ones count as not
    spliced), per-image mean"`` — pixels no decidable patch covers (flat areas, the margin under the
    8-px grid) are scored as predicted negative."""
    p = metric_protocol(**protocol)
    inv = "best of map/inverse" if p["inversion"] else "no inversion"
    border = (f"mask border ±{p['border_px']} px excluded" if p["border_px"] else "all pixels") + \
        " (undecided ones count as not spliced)"
    avg = "per-image mean" if p["averaging"] == "per_image" else "pooled over pixels"
    return f"{p['threshold']} threshold, {inv}, {border}, {avg}"


def border_band(gt: np.ndarray, width: int) -> np.ndarray:
    """bool ``[H, W]``: pixels within ``width`` px (Chebyshev) of the mask boundary — whose
    (2w+1)×(2w+1) neighbourhood, clipped to the image, holds both classes. ``width=0``:
    none. The image edge is not a boundary."""
    g = np.asarray(gt).astype(bool)
    if width <= 0:
        return np.zeros(g.shape, dtype=bool)
    st = np.ones((2 * width + 1,) * 2, dtype=bool)
    grown = scipy.ndimage.binary_dilation(g, structure=st, border_value=0)
    shrunk = scipy.ndimage.binary_erosion(g, structure=st, border_value=1)
    return grown & ~shrunk


def _candidate_counts(values: np.ndarray, gt: np.ndarray, n_pos: float, n_all: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Confusion counts of "value ≥ t" for t = +inf and every distinct value (descending)."""
    order = np.argsort(-values, kind="stable")
    v, g = values[order], gt[order]
    tp = np.cumsum(g, dtype=np.float64)
    fp = np.cumsum(~g, dtype=np.float64)
    last = np.r_[v[1:] != v[:-1], True] if len(v) else np.zeros(0, bool)   # end of each tie group
    tp, fp = np.r_[0.0, tp[last]], np.r_[0.0, fp[last]]
    fn = n_pos - tp
    tn = n_all - tp - fp - fn
    return tp, fp, fn, tn


def image_confusions(pred: np.ndarray, gt: np.ndarray, protocol: dict[str, Any],
                     decided: np.ndarray | None = None) -> dict[str, tuple[float, float, float, float]]:
    """Per metric (``f1``, ``mcc``, ``iou``), the confusion counts (TP, FP, FN, TN) of one
    image under ``protocol`` (:func:`metric_protocol`).

    ``pred``: the binary map (``threshold="fixed"``) or the continuous map, higher = more
    suspect (``"best"``; NaN = undecided). ``decided``: pixels with a decision (default:
    all for a binary map, the finite ones for a continuous map); undecided pixels are
    predicted negative under both polarities. Pixels in :func:`border_band` are dropped.
    """
    p = metric_protocol(**protocol)
    pred, g = np.asarray(pred), np.asarray(gt).astype(bool)
    if pred.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape; got {pred.shape} and {g.shape}")
    if p["threshold"] == "best":
        values = pred.astype(np.float64)
        ok = np.isfinite(values) if decided is None else np.asarray(decided, bool) & np.isfinite(values)
    else:
        values = pred.astype(bool).astype(np.float64)
        ok = np.ones(g.shape, bool) if decided is None else np.asarray(decided, bool)
    keep = ~border_band(g, p["border_px"])
    g, ok, values = g[keep], ok[keep], values[keep]
    n_pos, n_all = float(g.sum()), float(g.size)
    polarities = [1.0, -1.0] if p["inversion"] else [1.0]
    out: dict[str, tuple[float, float, float, float]] = {}
    best = {k: -np.inf for k in METRICS}
    for sign in polarities:
        if p["threshold"] == "fixed":
            flag = ok & ((values > 0.5) if sign > 0 else (values < 0.5))
            cands = [np.array([c]) for c in _confusion(flag, g)]
        else:
            gd = g[ok]
            # undecided positives are false negatives, undecided negatives true negatives, at any t
            cands = list(_candidate_counts(sign * values[ok], gd, n_pos, n_all))
        for name, fn in METRICS.items():
            vals = np.atleast_1d(fn(*cands))
            k = int(np.argmax(vals))
            if vals[k] > best[name]:
                best[name] = float(vals[k])
                out[name] = tuple(float(c[k]) for c in cands)
    return out


def pixel_metrics(preds: Any, gts: Any, protocol: dict[str, Any],
                  decided: Any = None) -> dict[str, Any]:
    """Pixel F1 / MCC / IoU of a set of images under ``protocol`` (:func:`metric_protocol`).

    ``preds`` / ``gts`` (/ ``decided``): one array each per image (or a single array).
    Returns ``{"f1", "mcc", "iou", "n_images", "protocol", "protocol_name"}``; per-image
    averaging takes the mean of each image's metric, pooled averaging the metric of the
    summed confusion counts. Images are the spliced ones: an empty ground truth scores 0.
    """
    p = metric_protocol(**protocol)
    if isinstance(preds, np.ndarray) and isinstance(gts, np.ndarray) and preds.ndim == 2:
        preds, gts, decided = [preds], [gts], None if decided is None else [decided]
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"preds and gts must have one map per image; got {len(preds)} and {len(gts)}")
    if not preds:
        raise ValueError("preds is empty: no images to score")
    dec = [None] * len(preds) if decided is None else list(decided)
    conf = [image_confusions(pr, g, p, d) for pr, g, d in zip(preds, gts, dec)]
    out: dict[str, Any] = {}
    for name, fn in METRICS.items():
        if p["averaging"] == "per_image":
            out[name] = float(np.mean([fn(*c[name]) for c in conf]))
        else:
            out[name] = float(fn(*np.sum([c[name] for c in conf], axis=0)))
    out.update(n_images=len(preds), protocol=p, protocol_name=protocol_name(p))
    return out


def detection_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of image-level ``scores`` for ``labels`` (1 = spliced):
    the Mann–Whitney probability that a spliced image outscores an unspliced one, ties
    counted ½."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length; got {s.size} and {y.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 (unspliced) or 1 (spliced)")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels need both classes for an AUC; got {n_pos} spliced and {n_neg} unspliced")
    return rank_auc(s, y)


__all__ = ["write_outputs", "preview_shape", "OVERLAY_MAX_SIDE", "overlay_image", "annotated_overlay", "heatmap_png", "summary_line", "pixel_f1",
           "pixel_mcc", "pixel_iou", "best_of_inverted", "detection_auc", "metric_protocol", "protocol_name",
           "border_band", "image_confusions", "pixel_metrics", "f1_from_counts", "mcc_from_counts",
           "iou_from_counts", "PROTOCOL_FIXED", "PROTOCOL_BEST"]
