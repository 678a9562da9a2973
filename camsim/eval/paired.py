"""Paired comparison of two transfer evaluations on one photo set: did network B move a figure
beyond what the luck of the photos explains?

Each run's ``scores.npz`` (``camsim-eval ckpt=… data=<folder>``) holds every scored pair. The
two runs need not share their pairs (their networks may cut patches differently, e.g. 64 and
128 px), only their photos: every bootstrap replicate draws camera models and photos once
(:func:`camsim.eval.bootstrap.resample_counts`) and weighs *both* runs' pairs by that one draw,
so the difference B − A of a figure is taken under the same sampling luck. What stays is the
difference of the two networks on these photos; a different training seed is *another* source
of spread, which this comparison does not see (compare two seeds of one recipe to see it).

Figures are threshold-free (ROC AUC, EER) per contrast: a same-model category (patch level:
two patches of one photo, of two photos; image level: the two halves of one photo, two
photos — mean of 64 patch-pair scores) against the different-model pairs of the same level.
``RUN:baseline`` stands for the run's Bray–Curtis baseline on the same pairs. Several such
comparisons (one per training seed, say) are summarised by :func:`across_pairs`: the spread
between seeds, which no single comparison's interval holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camsim.config.schema import TransferConfig
from camsim.eval.bootstrap import Contrast, check_reps_level, over_resamples, pair_weights, percentile_interval
from camsim.eval.transfer import LevelScores, contrasts_of, make_relation

FIGURES = ("auc", "eer")
SCORES = "scores.npz"
_NEEDED = ("models", "makes", "photo_path", "photo_model", "level", "category", "image_1", "image_2", "score",
           "baseline", "image_category", "image_photo_1", "image_photo_2", "image_score", "image_baseline")


@dataclass
class TransferScores:
    """One side of a comparison: a transfer run's contrasts, photos named by path."""

    label: str
    photo_path: np.ndarray  # [photos] str
    photo_model: np.ndarray  # [photos] camera-model name
    contrasts: dict[str, Contrast]
    fine_jpeg_quality: int | None = None  # the JPEG-quality rows' band limit (None: no JPEG-quality rows)
    far_jpeg_gap: int | None = None  # the far-apart row's quality gap (None: no such row)
    aggregate: str = "mean"  # the image level's rule over a photo pair's patch-pair scores


def read_scores(spec: str | Path) -> TransferScores:
    """``RUN_DIR`` (a transfer evaluation's run directory, or its ``scores.npz``) or ``RUN_DIR:baseline``."""
    text = str(spec)
    use_baseline = text.endswith(":baseline")
    path = Path(text[: -len(":baseline")] if use_baseline else text)
    f = path / SCORES if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no {SCORES} — give the run directory of a transfer evaluation "
                                "(camsim-eval ckpt=… data=…)")
    try:
        z = np.load(f, allow_pickle=False)
        d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - a broken file is reported with its name
        raise ValueError(f"{f}: cannot read ({type(e).__name__}: {e})") from e
    missing = [k for k in _NEEDED if k not in d]
    if missing:
        raise ValueError(f"{f}: not a transfer evaluation's scores (missing {', '.join(missing)})")
    if use_baseline and not (len(d["baseline"]) and len(d["image_baseline"])):
        raise ValueError(f"{f}: the run has no Bray–Curtis baseline scores (its checkpoint had no classifier)")
    models, pm = d["models"], d["photo_model"]
    makes = [m or None for m in d["makes"].tolist()]
    patch = d["level"] == "patch"
    m1, m2 = pm[d["image_1"][patch]], pm[d["image_2"][patch]]
    levels = [
        LevelScores("patch", d["category"][patch], d["image_1"][patch], d["image_2"][patch],
                    make_relation(makes, m1, m2), (d["baseline"] if use_baseline else d["score"])[patch], None),
        LevelScores("image", d["image_category"], d["image_photo_1"], d["image_photo_2"],
                    make_relation(makes, pm[d["image_photo_1"]], pm[d["image_photo_2"]]),
                    d["image_baseline"] if use_baseline else d["image_score"], None),
    ]
    # JPEG-quality band rows where the run recorded its photos' qualities (runs since 2026-12-04)
    fine_q = int(d["fine_jpeg_quality"]) if "fine_jpeg_quality" in d and int(d["fine_jpeg_quality"]) > 0 else None
    # the far-apart row: runs before it existed get today's default gap (their photos' qualities are there)
    far = int(d["far_jpeg_gap"]) if "far_jpeg_gap" in d else TransferConfig.far_jpeg_gap
    far = far if far is not None and far > 0 else None
    contrasts: dict[str, Contrast] = {}
    for ls in levels:
        contrasts.update(contrasts_of(ls, d.get("photo_jpeg_quality"), fine_q, far, d.get("photo_jpeg_table"))[0])
    label = f"{path.name if path.is_dir() else path.parent.name}{' (baseline)' if use_baseline else ''}"
    # one photo, one name: a root given as "../x" in one run and "/abs/x" (or through a link) in the other
    photos = np.array([os.path.realpath(p) for p in d["photo_path"].astype(str).tolist()], dtype=str)
    how = str(d["aggregate"]) if "aggregate" in d else "mean"  # runs before the option: the mean
    return TransferScores(label, photos, models[pm].astype(str), contrasts, fine_q, far, how)


def photo_overlap(a: TransferScores, b: TransferScores) -> tuple[int, int, int]:
    """Photos scored in both runs, only in A, only in B (by their real path). None in common is an
    error: the two runs were not on the same photos, so nothing is paired."""
    pa, pb = set(a.photo_path.tolist()), set(b.photo_path.tolist())
    both = len(pa & pb)
    if not both:
        raise ValueError(f"{a.label} and {b.label} share no photo (e.g. {min(pa)} and {min(pb)}): a paired comparison "
                         "needs two transfer evaluations on the same photos (photos are matched by their real path)")
    return both, len(pa - pb), len(pb - pa)


def _common_photos(a: TransferScores, b: TransferScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One photo index for both runs: ``(model_of_photo, a's photo → common, b's photo → common)``."""
    names = sorted(set(a.photo_path.tolist()) | set(b.photo_path.tolist()))
    index = {p: k for k, p in enumerate(names)}
    model_of = {}
    for side in (a, b):
        for p, m in zip(side.photo_path.tolist(), side.photo_model.tolist()):
            if model_of.setdefault(p, m) != m:
                raise ValueError(f"{p}: camera model {model_of[p]!r} in one run and {m!r} in the other")
    models = sorted(set(model_of.values()))
    mop = np.array([models.index(model_of[p]) for p in names], np.int64)
    return (mop, np.array([index[p] for p in a.photo_path.tolist()], np.int64),
            np.array([index[p] for p in b.photo_path.tolist()], np.int64))


def _remap(c: Contrast, to_common: np.ndarray) -> Contrast:
    return Contrast(c.score, c.positive, to_common[c.photo_1], to_common[c.photo_2], c.link)


def unshared(a: TransferScores, b: TransferScores) -> list[tuple[str, str]]:
    """The contrasts not compared, each with why: drawn in one run only, or a JPEG-quality row
    drawn with another limit in each run (another ``fine_jpeg_quality`` / ``far_jpeg_gap``)."""
    la, lb = _limits(a), _limits(b)
    out = []
    for k in list(a.contrasts) + [k for k in b.contrasts if k not in a.contrasts]:
        band = k.partition("@")[2]
        if k not in b.contrasts or k not in a.contrasts:
            out.append((k, f"only in {'A' if k in a.contrasts else 'B'}"))
        elif la.get(band) != lb.get(band):
            out.append((k, f"drawn at another limit in each run ({la.get(band)} / {lb.get(band)})"))
    return out


def _limits(s: TransferScores) -> dict[str, int | None]:
    """The limit each JPEG-quality row of a run was drawn with, by row tag (other rows have none)."""
    return {"fine": s.fine_jpeg_quality, "coarse": s.fine_jpeg_quality, "far_q": s.far_jpeg_gap}


def comparable(a: TransferScores, b: TransferScores) -> list[str]:
    """The contrasts ``a`` and ``b`` can be compared on (:func:`unshared` left out); ValueError where
    there is none, or where the two runs share no photo (:func:`photo_overlap`)."""
    left = dict(unshared(a, b))
    shared = [k for k in a.contrasts if k in b.contrasts and k not in left]
    if not shared:
        raise ValueError(f"{a.label} and {b.label} have no contrast in common")
    photo_overlap(a, b)
    return shared


def paired_bootstrap(a: TransferScores, b: TransferScores, reps: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """For every contrast both runs have: ``{contrast: {figure: {a, b, delta, lo, hi, p_b_better, n}}}``.

    ``a`` / ``b`` / ``delta`` are the point estimates (all pairs once); ``lo``/``hi`` the
    percentile interval of B − A over replicates that give the figure in both runs (``n``);
    ``p_b_better`` the share of them in which B is better (higher AUC, lower EER), ties counted ½."""
    check_reps_level(reps, level)
    shared = comparable(a, b)
    mop, to_a, to_b = _common_photos(a, b)
    ca = {k: _remap(a.contrasts[k], to_a) for k in shared}
    cb = {k: _remap(b.contrasts[k], to_b) for k in shared}
    point = {k: (ca[k].roc.figures(0.5), cb[k].roc.figures(0.5)) for k in shared}

    def replicate(total: np.ndarray, per_copy: np.ndarray) -> dict[str, tuple[dict, dict]]:
        return {k: tuple(c[k].roc.figures(0.5, pair_weights(c[k].link, c[k].photo_1, c[k].photo_2, total, per_copy))
                         for c in (ca, cb)) for k in shared}

    deltas: dict[str, dict[str, list[float]]] = {k: {f: [] for f in FIGURES} for k in shared}
    n_pairs = sum(len(c[k].score) for c in (ca, cb) for k in shared)
    for figs in over_resamples(mop, reps, seed, replicate, n_pairs, f"paired bootstrap: {len(shared)} contrasts"):
        for k, (fa, fb) in figs.items():
            for f in FIGURES:
                deltas[k][f].append(_diff(fb[f], fa[f]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k in shared:
        out[k] = {}
        for f in FIGURES:
            va, vb = point[k][0][f], point[k][1][f]
            row = {"a": va, "b": vb, "delta": _diff(vb, va), **percentile_interval(deltas[k][f], reps, level)}
            v = np.asarray(deltas[k][f], np.float64)
            v = v[~np.isnan(v)]
            better = v > 0 if f == "auc" else v < 0
            # a tie (both runs at AUC 1.0 in a replicate, say) counts half: neither is better
            row["p_b_better"] = np.nan if np.isnan(row["lo"]) else float(better.mean() + 0.5 * (v == 0).mean())
            out[k][f] = row
    return out


def _diff(b: float, a: float) -> float:
    """``b - a``, 0 where the two differ only by floating-point rounding (one AUC summed in two
    orders): a tie, not a 1e-16 "better"."""
    d = b - a
    return 0.0 if abs(d) < 1e-12 else d


def across_pairs(results: Sequence[dict],
                 pairs: Sequence[tuple[TransferScores, TransferScores]] | None = None) -> dict[str, dict[str, dict]]:
    """Several :func:`paired_bootstrap` results (e.g. recipe A against B with each training seed)
    per contrast all of them have: ``{contrast: {figure: {a, b, delta, deltas, n, better, worse,
    with_interval, beyond_better, beyond_worse}}}`` — the means of the pairs' point estimates
    (over the ``n`` pairs where both runs have the figure), each pair's Δ, in how many pairs B is
    better / worse (AUC higher / lower, EER lower / higher; a tie neither), and of the
    ``with_interval`` pairs that have a paired interval, in how many it excludes 0 either way. No
    interval across pairs: with a handful of seeds the list of Δ is the honest summary. With
    ``pairs`` (the runs behind ``results``), a JPEG-quality row drawn at another limit in some
    run is left out (:func:`left_out` names every row left out and why)."""
    if not results:
        raise ValueError("across_pairs: no comparison given")
    skip = {k for k, _ in left_out(results, pairs)}
    out: dict[str, dict[str, dict]] = {}
    for k in [k for k in results[0] if k not in skip]:
        out[k] = {}
        for f in FIGURES:
            rows = [r[k][f] for r in results]
            a, b = (np.array([x[side] for x in rows], np.float64) for side in ("a", "b"))
            d = np.array([_diff(y, x) for x, y in zip(a, b)], np.float64)
            lo, hi = (np.array([x[end] for x in rows], np.float64) for end in ("lo", "hi"))
            both = ~np.isnan(d)
            sign = 1.0 if f == "auc" else -1.0  # + where B is better
            with np.errstate(invalid="ignore"):
                better, worse = sign * d > 0, sign * d < 0
                beyond_better = (lo > 0) if f == "auc" else (hi < 0)
                beyond_worse = (hi < 0) if f == "auc" else (lo > 0)
            out[k][f] = {"a": _mean(a[both]), "b": _mean(b[both]), "delta": _mean(d[both]), "deltas": d.tolist(),
                         "n": int(both.sum()),
                         "better": int(better.sum()), "worse": int(worse.sum()),
                         "with_interval": int((~np.isnan(lo) & ~np.isnan(hi)).sum()),
                         "beyond_better": int(beyond_better.sum()), "beyond_worse": int(beyond_worse.sum())}
    return out


def left_out(results: Sequence[dict], pairs: Sequence[tuple[TransferScores, TransferScores]] | None = None
             ) -> list[tuple[str, str]]:
    """The contrasts :func:`across_pairs` leaves out, each with why: compared in some pairs only, or
    (given ``pairs``) a JPEG-quality row drawn at another limit (``fine_jpeg_quality``,
    ``far_jpeg_gap``) in some run that has it — one name, several meanings."""
    keys = sorted({k for r in results for k in r})
    out = []
    for k in keys:
        if not all(k in r for r in results):
            out.append((k, f"compared in {sum(k in r for r in results)} of the {len(results)} pairs only"))
        elif pairs is not None and "@" in k:
            band = k.partition("@")[2]
            limits = {_limits(s).get(band) for pair in pairs for s in pair if k in s.contrasts}
            if len(limits) > 1:
                out.append((k, "drawn at another JPEG-quality limit in some run (" +
                            " / ".join(str(x) for x in sorted(limits, key=str)) + ")"))
    return out


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if len(v) else float("nan")


def markdown_across(pairs: Sequence[tuple[TransferScores, TransferScores]], summary: dict, reps: int, level: float,
                    left: Sequence[tuple[str, str]] = ()) -> str:
    """:func:`across_pairs`'s summary as a markdown table with its protocol; ``left``:
    :func:`left_out`'s rows, named above the table."""
    first = pairs[0][0]
    sets = {frozenset(a.photo_path.tolist()) | frozenset(b.photo_path.tolist()) for a, b in pairs}
    lines = [
        f"Across {len(pairs)} paired comparisons ({'; '.join(f'{a.label} → {b.label}' for a, b in pairs)}).",
        "Protocol: the mean over the pairs of each pair's point estimate (ROC AUC of the row's same-model pairs "
        "against the different-model pairs of its level, pairs pooled), each pair's Δ B − A in order, in how many "
        "pairs B is better (higher AUC; a tie counts neither way), and in how many the pair's paired "
        f"{100 * level:g} % interval ({reps} replicates over camera models and photos) excludes 0 — above / below "
        "('of k' where only k pairs have an interval: a row of one model pair has none; n/a: no pair has one). "
        "The pairs' spread (training seeds, say) is what a single pair's interval does not see; no interval is "
        "given across pairs.",
    ]
    if len(sets) > 1:
        lines.append("Photos: the pairs were not all scored on the same photos — the means mix photo sets.")
    if left:
        lines.append(f"Not summarised ({len(left)}): " + "; ".join(
            f"{_name(k, first.fine_jpeg_quality, first.far_jpeg_gap)} — {why}" for k, why in left) + ".")
    lines += ["", "| contrast | mean AUC A | mean AUC B | mean Δ AUC | Δ AUC per pair | B better | interval above / below 0 |",
              "|---|---:|---:|---:|---|---:|---:|"]
    for k, figs in summary.items():
        au = figs["auc"]
        # a Δ that rounds to ±0.000 but counts as better or worse is shown to its first digit
        per = ", ".join(f"{x:+.1g}" if not np.isnan(x) and 0 < abs(x) < 5e-4 else _num(x, "+") for x in au["deltas"])
        beyond = (f"{au['beyond_better']} / {au['beyond_worse']}" + ("" if au["with_interval"] == len(au["deltas"])
                  else f" of {au['with_interval']}")) if au["with_interval"] else "n/a"
        lines.append(f"| {_name(k, first.fine_jpeg_quality, first.far_jpeg_gap)} | {_num(au['a'])} | {_num(au['b'])} | "
                     f"{_num(au['delta'], '+')} | {per} | {au['better']} of {len(au['deltas'])} | {beyond} |")
    return "\n".join(lines)


_NAMES = {"patch/same_photo": "patch, two patches of one photo", "patch/other_photo": "patch, two photos of one model",
          "image/halves": "image, two halves of one photo", "image/other_photo": "image, two photos of one model"}


def _aggregates(a: TransferScores, b: TransferScores) -> str:
    if a.aggregate == b.aggregate:
        return f"{a.aggregate} of the photo pair's patch-pair scores"
    return (f"A takes the {a.aggregate}, B the {b.aggregate} of the photo pair's patch-pair scores — the image "
            "rows' Δ is partly the rule's, not only the networks'")


def markdown(a: TransferScores, b: TransferScores, result: dict, reps: int, level: float) -> str:
    """The comparison as a markdown table with its protocol."""
    lines = [
        f"Paired comparison: A = {a.label}, B = {b.label}.",
        f"Protocol: each row is a same-model category against the different-model pairs of its level "
        f"(image level: {_aggregates(a, b)}); threshold-free (ROC AUC; EER, lower is "
        f"better); pairs pooled; {100 * level:g} % interval of B − A from {reps} paired bootstrap replicates over "
        f"camera models and photos (both runs weighted by the same draw; a training seed's spread is not in it); "
        f"P(B better): the share of replicates in which B is better, ties counted ½.",
    ]
    both, only_a, only_b = photo_overlap(a, b)
    if only_a or only_b:
        lines.append(f"Photos: {both} scored in both runs, {only_a} only in A, {only_b} only in B (photos of which one "
                     "network cut no patch, e.g. at another patch size, or runs on different folders); the replicates "
                     f"draw from all {both + only_a + only_b}, and each run's figures are on its own photos.")
    left = unshared(a, b)
    if left:
        named = []
        for k, why in left:
            side = b if why == "only in B" else a
            named.append(f"{_name(k, side.fine_jpeg_quality, side.far_jpeg_gap)} — {why}")
        lines.append(f"Not compared ({len(left)}): " + "; ".join(named) + ".")
    lines += [
        "", "| contrast | AUC A | AUC B | Δ AUC [interval] | P(B better) | EER A | EER B | Δ EER [interval] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, figs in result.items():
        au, ee = figs["auc"], figs["eer"]
        lines.append(f"| {_name(k, a.fine_jpeg_quality, a.far_jpeg_gap)} | {_num(au['a'])} | {_num(au['b'])} | {_delta(au)} | "
                     f"{_pct(au['p_b_better'])} | {_num(ee['a'])} | {_num(ee['b'])} | {_delta(ee)} |")
    return "\n".join(lines)


def _name(contrast: str, fine_quality: int | None = None, far_gap: int | None = None) -> str:
    contrast, _, band = contrast.partition("@")
    base, _, negatives = contrast.partition("~")
    return _NAMES.get(base, base) + {"": "", "same_make": " (negatives: other models of the same make)",
                                     "other_make": " (negatives: models of other makes)"}.get(negatives, f" ~{negatives}") \
        + {"": "", "fine": f" — both photos at JPEG q ≥ {fine_quality}",
           "coarse": f" — both photos at JPEG q < {fine_quality}", "same_q": " — the two photos at equal JPEG quality",
           "diff_q": " — the two photos at unequal JPEG quality",
           "far_q": f" — the two photos ≥ {far_gap} JPEG quality steps apart",
           "same_table": " — the two photos with identical JPEG tables",
           "diff_table": " — the two photos with different JPEG tables"}.get(band, f" @{band}")


def _num(v: float, sign: str = "") -> str:
    """``v`` to three decimals ("–" where a run has no such figure; never "-0.000")."""
    if np.isnan(v):
        return "–"
    return f"{0.0 if round(v, 3) == 0 else v:{sign}.3f}"


def _delta(r: dict) -> str:
    if np.isnan(r["delta"]):
        return "–"
    if np.isnan(r["lo"]):
        return f"{_num(r['delta'], '+')} [n/a]"
    return f"{_num(r['delta'], '+')} [{_num(r['lo'], '+')}, {_num(r['hi'], '+')}]"


def _pct(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{100 * v:.0f} %"


__all__ = ["TransferScores", "read_scores", "comparable", "paired_bootstrap", "markdown", "unshared", "across_pairs",
           "markdown_across", "left_out", "FIGURES"]
