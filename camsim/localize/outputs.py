"""Pictures and files of one localisation, and the localisation / detection metrics.

``write_outputs`` writes into ``out_dir``:

* ``overlay.png`` — the image (RGB if given, else the green channel as grey) with the
  suspected pixels tinted red and the reference patch (if any) outlined in green;
* ``heatmap.png`` — the pixel heatmap (suspicion in [0, 1], grey = undecidable) with a
  colour bar, the reference patch outlined;
* ``scores.npy`` — the pixel heatmap, float32 ``[H, W]`` (NaN = only undecidable patches);
* ``patches.npz`` — per-patch ``positions``, ``entropy``, ``decidable``, ``scores``,
  ``suspicion``, ``suspect``, ``grid_shape``;
* ``mask.png`` — the suspected pixels, 8-bit, 255 = suspected, 0 = not.

Metrics follow the splicing literature: pixel F1 and MCC of a binary mask against the
ground truth, the best of a mask and its inversion (the graph split does not know which
side is the splice), and the image-level detection AUC.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw

from camsim.artefacts import atomic_write_bytes
from camsim.localize.engine import LocalizationResult

TINT = np.array([255.0, 0.0, 0.0])       # suspected region
TINT_ALPHA = 0.45
OUTLINE = (0, 255, 0)                     # reference patch


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _outline_width(shape: tuple[int, int]) -> int:
    return max(2, min(shape) // 200)


def overlay_image(result: LocalizationResult, rgb: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the image with the suspect mask tinted and the reference outlined."""
    if rgb is None:
        base = np.repeat(np.asarray(result.green, dtype=np.uint8)[..., None], 3, axis=2)
    else:
        rgb = np.asarray(rgb)
        if rgb.shape != (*result.shape, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 with shape {(*result.shape, 3)} like the analysed image; "
                             f"got {rgb.dtype} {rgb.shape}")
        base = rgb.copy()
    m = result.mask
    tinted = (1.0 - TINT_ALPHA) * base[m].astype(np.float32) + TINT_ALPHA * TINT.astype(np.float32)
    base[m] = np.clip(tinted.round(), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    if result.reference is not None:
        y, x = result.reference
        p = result.patch
        ImageDraw.Draw(img).rectangle([x, y, x + p - 1, y + p - 1], outline=OUTLINE,
                                      width=_outline_width(result.shape))
    return np.asarray(img)


def heatmap_png(result: LocalizationResult) -> bytes:
    """PNG bytes of the heatmap with a colour bar (grey = undecidable)."""
    h, w = result.shape
    fig_w = 7.0
    fig = Figure(figsize=(fig_w, float(np.clip(fig_w * 0.85 * h / w, 2.5, 12.0))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    im = ax.imshow(np.ma.masked_invalid(result.heatmap), cmap=cmap, vmin=0.0, vmax=1.0,
                   interpolation="nearest")
    if result.reference is not None:
        y, x = result.reference
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), result.patch, result.patch,
                                                  fill=False, edgecolor="lime", linewidth=1.5))
    label = "1 − S(reference, patch)" if result.mode == "reference" else "1 − mean S to host community"
    fig.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    verdict = "spliced" if result.decision else "not spliced"
    ax.set_title(f"{result.mode} mode: {verdict} (score {result.score:.3f})", fontsize=10)
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


def write_outputs(result: LocalizationResult, out_dir: str | Path, rgb: np.ndarray | None = None) -> str:
    """Write overlay.png, heatmap.png, scores.npy, patches.npz and mask.png into ``out_dir``
    (created if missing; each file written atomically) and return :func:`summary_line`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "overlay.png", _png_bytes(Image.fromarray(overlay_image(result, rgb))))
    atomic_write_bytes(out / "heatmap.png", heatmap_png(result))
    buf = io.BytesIO()
    np.save(buf, result.heatmap.astype(np.float32))
    atomic_write_bytes(out / "scores.npy", buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, positions=result.positions, entropy=result.entropy, decidable=result.decidable,
             scores=result.scores, suspicion=result.suspicion, suspect=result.suspect,
             grid_shape=np.asarray(result.grid_shape))
    atomic_write_bytes(out / "patches.npz", buf.getvalue())
    mask = np.where(result.mask, 255, 0).astype(np.uint8)
    atomic_write_bytes(out / "mask.png", _png_bytes(Image.fromarray(mask)))
    return summary_line(result)


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


def pixel_f1(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """F1 = 2TP / (2TP + FP + FN) of the positive (spliced) pixels; 0.0 when both masks
    are empty (no positives to find; scikit-learn's zero-division convention)."""
    tp, fp, fn, _ = _confusion(pred_mask, gt_mask)
    den = 2 * tp + fp + fn
    return 0.0 if den == 0 else 2 * tp / den


def pixel_mcc(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Matthews correlation (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)) in [−1, 1];
    0.0 when a factor of the denominator is zero."""
    tp, fp, fn, tn = _confusion(pred_mask, gt_mask)
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if den == 0 else (tp * tn - fp * fn) / float(np.sqrt(den))


def best_of_inverted(metric: Callable[[np.ndarray, np.ndarray], float], pred: np.ndarray,
                     gt: np.ndarray) -> float:
    """max(metric(pred, gt), metric(¬pred, gt)) — the field's custom for maps whose
    polarity is unknown (e.g. which graph community is the splice)."""
    pred = np.asarray(pred).astype(bool)
    return max(metric(pred, gt), metric(~pred, gt))


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
    ranks = scipy.stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


__all__ = ["write_outputs", "overlay_image", "heatmap_png", "summary_line", "pixel_f1", "pixel_mcc",
           "best_of_inverted", "detection_auc"]
