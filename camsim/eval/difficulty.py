"""How hard is a catalogue? Camera-model classifiers on hand-made patch statistics.

The task must be about camera traces, not scene statistics (issue 3). Three feature sets of uint8 patches:

* :func:`global_stats_features` — mean, standard deviation and a histogram of the patch's values:
  what a classifier sees ignoring traces (near chance when every model shows every scene).
* :func:`residual_features` — simple trace statistics (Laplacian-residual energy by 2×2
  CFA phase and by 8×8 JPEG-grid phase, residual histogram and autocorrelation). A weak
  stand-in for the Phase A network, well above chance when the simulator leaves traces.
* :func:`jpeg_features` — the JPEG branch's 8×8 block-DCT histograms (``camsim.models.jpeg``):
  how far JPEG and frequency statistics alone tell the models apart.

Classifiers (numpy/scipy/torch, no scikit-learn): multinomial logistic regression by L-BFGS on
standardised features, or nearest centroid. :func:`difficulty_report`: accuracy, per-model
accuracy, confusion matrix, pairwise separability (a binary classifier per pair of models)
within and across families; :func:`pairwise_from_confusion`: the same from any classifier's
confusion matrix (e.g. Phase A's). :func:`source_difficulty` runs the three on any source's
photos (``camsim-data difficulty``: simulated and real side by side), with
:func:`trace_statistics`. Every function is pure: arrays in, arrays/dataclasses out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from camsim.data.patches import green_of
from camsim.data.splits import photo_units
from camsim.data.store import PatchRequest, PatchSettings, PatchStore
from camsim.eval.report import md_table
from camsim.machine import single_blas_thread
from camsim.models.jpeg import DCTHistogram

CLASSIFIERS: tuple[str, ...] = ("logistic", "centroid")
FEATURE_SETS: tuple[str, ...] = ("global", "residual", "jpeg")


# ---------------------------------------------------------------------- features

def _check_patches(patches: np.ndarray) -> np.ndarray:
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] < 8 or patches.shape[2] < 8:
        raise ValueError(f"patches: must be [N, P, P] with P >= 8, got shape {patches.shape}")
    if patches.dtype != np.uint8:
        raise ValueError(f"patches: must be uint8 green patches, got dtype {patches.dtype}")
    return patches


def global_stats_features(patches: np.ndarray, bins: int = 16) -> np.ndarray:
    """[N, 2 + bins]: mean/255, std/255 and the normalised histogram (``bins`` equal bins of
    0–255) of each patch's values."""
    p = _check_patches(patches)
    n = p.shape[0]
    flat = p.reshape(n, -1)
    x = flat.astype(np.float32) / 255.0
    codes = (flat.astype(np.int32) * bins) // 256 + (np.arange(n, dtype=np.int32) * bins)[:, None]
    hist = np.bincount(codes.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float32)
    hist /= flat.shape[1]
    return np.concatenate([x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True), hist], axis=1)


RESIDUAL_COLUMNS: tuple[str, ...] = (
    ("log_sigma",) + tuple(f"cfa{y}{x}" for y in range(2) for x in range(2))
    + tuple(f"row{k}" for k in range(8)) + tuple(f"col{k}" for k in range(8))
    + tuple(f"abs_bin{k}" for k in range(6)) + ("ac1_h", "ac1_v", "ac2_h", "ac2_v", "kurtosis"))
"""The columns of :func:`residual_features`, in order."""


def _columns(f: np.ndarray, *names: str) -> np.ndarray:
    return f[:, [RESIDUAL_COLUMNS.index(n) for n in names]]


def residual_features(patches: np.ndarray) -> np.ndarray:
    """[N, 32] trace statistics of each patch, columns :data:`RESIDUAL_COLUMNS` (grid-aligned
    patches assumed: position (0, 0) of the patch on the 8-px JPEG grid and the 2-px CFA lattice):

    log residual σ; residual σ in each of the 4 CFA phases and each of the 8 row and 8 column
    JPEG phases (relative to the overall σ); the share of |residual| in 6 bins; residual
    autocorrelation at lags 1 and 2, horizontally and vertically; residual kurtosis. The
    residual is the 4-neighbour Laplacian prediction error r = x − mean(up, down, left, right).
    """
    p = _check_patches(patches).astype(np.float32)
    r = p[:, 1:-1, 1:-1] - 0.25 * (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:])
    n, h, w = r.shape
    sd = np.sqrt((r * r).mean(axis=(1, 2))) + 1e-3
    feats = [np.log(sd)[:, None]]
    # interior pixel (i, j) of r is patch pixel (i + 1, j + 1)
    rows = (np.arange(h) + 1)
    cols = (np.arange(w) + 1)
    for py in range(2):
        for px in range(2):
            sub = r[:, (rows % 2 == py)][:, :, (cols % 2 == px)]
            feats.append((np.sqrt((sub * sub).mean(axis=(1, 2))) / sd)[:, None])
    for ph in range(8):
        feats.append((np.sqrt((r[:, rows % 8 == ph] ** 2).mean(axis=(1, 2))) / sd)[:, None])
    for ph in range(8):
        feats.append((np.sqrt((r[:, :, cols % 8 == ph] ** 2).mean(axis=(1, 2))) / sd)[:, None])
    a = np.abs(r).reshape(n, -1)
    edges = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        feats.append(((a >= lo) & (a < hi)).mean(axis=1, keepdims=True))
    var = (r * r).mean(axis=(1, 2)) + 1e-6
    for lag in (1, 2):
        feats.append(((r[:, :, lag:] * r[:, :, :-lag]).mean(axis=(1, 2)) / var)[:, None])
        feats.append(((r[:, lag:, :] * r[:, :-lag, :]).mean(axis=(1, 2)) / var)[:, None])
    feats.append((((r ** 4).mean(axis=(1, 2)) / (var * var)))[:, None])
    return np.concatenate(feats, axis=1).astype(np.float32)


TRACE_STATISTICS: dict[str, str] = {
    "residual_sigma": "residual σ (DN)",
    "lattice_ratio": "green-lattice residual ratio",
    "residual_ac1": "residual lag-1 autocorrelation",
    "jpeg_grid_ratio": "JPEG-grid residual ratio",
}
"""What :func:`trace_statistics` reports, with the label each gets in a table."""


def trace_statistics(patches: np.ndarray) -> dict[str, float]:
    """What a source's pixels look like to a residual filter — the medians over patches of
    (:func:`residual_features`' 4-neighbour Laplacian residual r, grid-aligned patches):

    * ``residual_sigma``: r's standard deviation in DN (how much pixel-scale detail and noise);
    * ``lattice_ratio``: residual σ on one quincunx lattice of the 2×2 CFA tile (sites (0, 0) and
      (1, 1)) against the other, the larger over the smaller — the trace of green interpolated on
      one lattice and sampled on the other; 1 = no such trace;
    * ``residual_ac1``: lag-1 autocorrelation of r (horizontal and vertical averaged): negative for
      white noise, positive for spatially correlated residuals;
    * ``jpeg_grid_ratio``: residual σ in the rows / columns next to an 8×8 block boundary against
      the others (JPEG blockiness); 1 = none.

    Computed the same way on simulated and real photos, so a simulator's pixels can be compared
    with real cameras' (``camsim-data difficulty``); resemblance is the aim, not a value.
    """
    f = residual_features(patches).astype(np.float64)
    sd = np.exp(_columns(f, "log_sigma")[:, 0])
    lat = _columns(f, "cfa00", "cfa11").sum(axis=1) / np.maximum(_columns(f, "cfa01", "cfa10").sum(axis=1), 1e-9)
    edge = _columns(f, "row0", "row7", "col0", "col7").mean(axis=1)
    inner = _columns(f, *(f"{d}{k}" for d in ("row", "col") for k in range(1, 7))).mean(axis=1)
    return {"residual_sigma": float(np.median(sd)),
            "lattice_ratio": float(np.median(np.maximum(lat, 1.0 / np.maximum(lat, 1e-9)))),
            "residual_ac1": float(np.median(_columns(f, "ac1_h", "ac1_v").mean(axis=1))),
            "jpeg_grid_ratio": float(np.median(edge / np.maximum(inner, 1e-9)))}


def jpeg_features(patches: np.ndarray, batch: int = 1024) -> np.ndarray:
    """[N, 27 · 31] block-DCT coefficient histograms of each patch: exactly the features of the
    backbone's JPEG branch (:class:`camsim.models.jpeg.DCTHistogram`, default settings;
    patches on the 8-px JPEG grid assumed)."""
    import torch

    p = _check_patches(patches)
    branch = DCTHistogram()
    with torch.no_grad():
        return np.concatenate([branch(torch.from_numpy(p[i:i + batch]).float().unsqueeze(1) / 255).numpy()
                               for i in range(0, len(p), batch)])


def features(patches: np.ndarray, kind: str) -> np.ndarray:
    if kind == "global":
        return global_stats_features(patches)
    if kind == "residual":
        return residual_features(patches)
    if kind == "jpeg":
        return jpeg_features(patches)
    raise ValueError(f"features: unknown kind {kind!r}; choose one of {list(FEATURE_SETS)}")


# ---------------------------------------------------------------------- classifiers

def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every column to zero mean, unit variance using the training set's statistics."""
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd[sd < 1e-8] = 1.0
    return [(a - mu) / sd for a in (train, *others)]


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-3,
                 max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (softmax, mean cross-entropy + l2·|W|²/2) by L-BFGS.
    Returns weights [D, K] and biases [K]. The loss and its gradient are torch's float64 products,
    L-BFGS's own BLAS calls run on one OpenBLAS thread (:func:`camsim.machine.single_blas_thread`):
    numpy's second thread and torch's threads, alternating, competed for the same cores (the
    main job's JPEG-statistics fit, 4,000 × 837: 5.6 s with numpy; 1.0 s so, timed alone)."""
    import torch

    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    xt = x.T.contiguous()  # the gradient's product reads it every call
    y = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    onehot = torch.zeros(n, num_classes, dtype=torch.float64)
    onehot[torch.arange(n), torch.from_numpy(y)] = 1.0

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(theta)
        w, b = t[: d * num_classes].view(d, num_classes), t[d * num_classes:]
        logp = torch.log_softmax(torch.addmm(b, x, w), dim=1)
        loss = -(onehot * logp).sum() / n + 0.5 * l2 * (w * w).sum()
        g = (logp.exp() - onehot) / n
        return float(loss), torch.cat([torch.addmm(w, xt, g, alpha=1.0, beta=l2).reshape(-1), g.sum(0)]).numpy()

    theta0 = np.zeros(d * num_classes + num_classes)
    with single_blas_thread():
        res = optimize.minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x[: d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]


def predict_logistic(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.argmax(np.asarray(x, dtype=np.float64) @ w + b, axis=1)


def fit_centroids(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Class means [K, D] (a class without samples gets +inf, so it is never predicted)."""
    c = np.full((num_classes, x.shape[1]), np.inf)
    for k in range(num_classes):
        if np.any(y == k):
            c[k] = x[y == k].mean(axis=0)
    return c


def predict_centroids(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    d = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=1)


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                classifier: str = "logistic") -> np.ndarray:
    """Standardise, fit ``classifier`` on the training features, predict the test ones."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier: unknown {classifier!r}; choose one of {list(CLASSIFIERS)}")
    tr, te = standardise(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    if classifier == "logistic":
        w, b = fit_logistic(tr, train_y, num_classes)
        return predict_logistic(w, b, te)
    return predict_centroids(fit_centroids(tr, train_y, num_classes), te)


# ---------------------------------------------------------------------- reports

@dataclass
class DifficultyReport:
    """Accuracy of one feature set + classifier over the models, and its pairwise summary."""

    features: str
    classifier: str
    models: list[str]
    accuracy: float
    chance: float
    per_model: dict[str, float]
    confusion: np.ndarray  # [K, K] counts, rows = true model, columns = predicted
    pairwise: dict[tuple[str, str], float] = field(default_factory=dict)
    within_family: float | None = None
    cross_family: float | None = None

    def to_dict(self) -> dict:
        return {"features": self.features, "classifier": self.classifier, "models": self.models,
                "accuracy": self.accuracy, "chance": self.chance, "per_model": self.per_model,
                "confusion": np.asarray(self.confusion).tolist(),
                "pairwise": {f"{a}|{b}": v for (a, b), v in self.pairwise.items()},
                "within_family": self.within_family, "cross_family": self.cross_family}


def _encode(names: Sequence[str], models: list[str], what: str) -> np.ndarray:
    index = {m: i for i, m in enumerate(models)}
    try:
        return np.array([index[n] for n in names], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"{what}: model {exc.args[0]!r} has no training patches") from None


def pairwise_separability(train_x: np.ndarray, train_models: Sequence[str], test_x: np.ndarray,
                          test_models: Sequence[str], classifier: str = "logistic",
                          pairs: Sequence[tuple[str, str]] | None = None) -> dict[tuple[str, str], float]:
    """Balanced accuracy of a binary classifier trained for each pair of models (0.5 =
    inseparable, 1 = perfectly separable)."""
    train_models = np.asarray(train_models)
    test_models = np.asarray(test_models)
    models = sorted(set(train_models.tolist()))
    if pairs is None:
        pairs = list(itertools.combinations(models, 2))
    out: dict[tuple[str, str], float] = {}
    for a, b in pairs:
        tr = (train_models == a) | (train_models == b)
        te = (test_models == a) | (test_models == b)
        if not te.any():
            continue
        ytr = (train_models[tr] == b).astype(np.int64)
        yte = (test_models[te] == b).astype(np.int64)
        pred = fit_predict(train_x[tr], ytr, test_x[te], 2, classifier)
        accs = [float((pred[yte == k] == k).mean()) for k in (0, 1) if np.any(yte == k)]
        out[(a, b)] = float(np.mean(accs))
    return out


def family_summary(pairwise: Mapping[tuple[str, str], float], families: Mapping[str, str]) -> tuple[float | None, float | None]:
    """Mean pairwise separability over same-family pairs and over cross-family pairs
    (``families``: model name → family name)."""
    within = [v for (a, b), v in pairwise.items() if families.get(a) is not None and families.get(a) == families.get(b)]
    cross = [v for (a, b), v in pairwise.items() if families.get(a) != families.get(b)]
    return (float(np.mean(within)) if within else None, float(np.mean(cross)) if cross else None)


def pairwise_from_confusion(confusion: np.ndarray, models: Sequence[str]) -> dict[tuple[str, str], float]:
    """Pairwise separability read off a multi-class confusion matrix (rows true, columns
    predicted): for models a, b, 1 − ½·(share of a's patches called b + share of b's called a),
    i.e. 1 when the classifier never mixes them up."""
    c = np.asarray(confusion, dtype=np.float64)
    if c.shape != (len(models), len(models)):
        raise ValueError(f"confusion: shape {c.shape} does not match {len(models)} models")
    rows = c.sum(axis=1)
    rows[rows == 0] = 1.0
    rate = c / rows[:, None]
    return {(a, b): float(1.0 - 0.5 * (rate[i, j] + rate[j, i]))
            for (i, a), (j, b) in itertools.combinations(list(enumerate(models)), 2)}


def difficulty_report(train_patches: np.ndarray, train_models: Sequence[str], test_patches: np.ndarray,
                      test_models: Sequence[str], families: Mapping[str, str] | None = None,
                      features_kind: str = "global", classifier: str = "logistic",
                      pairwise: bool = True) -> DifficultyReport:
    """Classify green patches into camera models with ``features_kind`` features
    ("global" = the global-statistics baseline, "residual" = hand-made trace statistics,
    "jpeg" = the JPEG branch's block-DCT histograms).

    ``families`` (model → family) adds the within-family / cross-family pairwise summary.
    """
    if len(train_patches) != len(train_models):
        raise ValueError(f"train_models: {len(train_models)} labels for {len(train_patches)} patches")
    if len(test_patches) != len(test_models):
        raise ValueError(f"test_models: {len(test_models)} labels for {len(test_patches)} patches")
    models = sorted(set(train_models))
    ytr = _encode(train_models, models, "train_models")
    yte = _encode(test_models, models, "test_models")
    ftr = features(train_patches, features_kind)
    fte = features(test_patches, features_kind)
    pred = fit_predict(ftr, ytr, fte, len(models), classifier)
    k = len(models)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (yte, pred), 1)
    per_model = {m: float(conf[i, i] / conf[i].sum()) for i, m in enumerate(models) if conf[i].sum()}
    report = DifficultyReport(features=features_kind, classifier=classifier, models=models,
                              accuracy=float((pred == yte).mean()), chance=1.0 / k, per_model=per_model,
                              confusion=conf)
    if pairwise and k >= 2:
        report.pairwise = pairwise_separability(ftr, train_models, fte, test_models, classifier)
        if families is not None:
            report.within_family, report.cross_family = family_summary(report.pairwise, families)
    return report


# --------------------------------------------------------------------------- on a run's own data


def difficulty_check(data: Any, phase_a_metrics: dict, flat: dict, models: Sequence[str],
                     max_per_model: int = 400) -> tuple[dict, str]:
    """Is the task about camera traces? (issue 3's check, on every run's own data)

    Logistic classifiers on *global* patch statistics (mean, std, histogram) and on the JPEG
    branch's block-DCT histograms of set A's patches, next to the Phase A network's test
    accuracy on the same models; and, where the
    source knows camera families (the simulator), the evaluation's
    "different" rates for same-family pairs vs cross-family pairs.
    """
    ps = data.patch_sets("phase_a")
    rng = np.random.default_rng(0)

    def take(subset: str) -> tuple[np.ndarray, list[str]]:
        xs, ys = [], []
        for m in data.split.a:
            p = ps[(m, subset)]
            idx = np.sort(rng.permutation(len(p))[:max_per_model])
            xs.append(np.asarray(green_of(p.patches[idx])))  # the statistics read green, as on green runs
            ys += [m] * len(idx)
        return np.concatenate(xs), ys

    (xtr, ytr), (xte, yte) = take("train"), take("test")
    glob = difficulty_report(xtr, ytr, xte, yte, features_kind="global", pairwise=False)
    jpeg = difficulty_report(xtr, ytr, xte, yte, features_kind="jpeg", pairwise=False)
    out = {"difficulty/global_stats_acc": glob.accuracy, "difficulty/jpeg_stats_acc": jpeg.accuracy,
           "difficulty/chance": glob.chance, "difficulty/phase_a_test_acc": phase_a_metrics.get("phase_a/test/acc")}
    rows = [["global patch statistics (mean, std, histogram), logistic", f"{glob.accuracy:.1%}"],
            ["JPEG block-DCT histograms (the JPEG branch's features), logistic", f"{jpeg.accuracy:.1%}"],
            ["Phase A network (test images)", "n/a" if out["difficulty/phase_a_test_acc"] is None
             else f"{out['difficulty/phase_a_test_acc']:.1%}"],
            ["chance", f"{glob.chance:.1%}"]]
    text = (f"Classifying the {len(data.split.a)} camera models of set A from patches of their test images:\n\n"
            + md_table(["classifier", "accuracy"], rows))
    families = data.families
    if families:
        within, cross = [], []
        for key, rate in flat.items():
            if key.startswith("eval/pairs/") and rate is not None:
                a, b = key[len("eval/pairs/"):].split("|")
                if a != b and a in families and b in families:
                    (within if families[a] == families[b] else cross).append(rate)
        if within and cross:
            out["difficulty/within_family_diff_rate"] = float(np.mean(within))
            out["difficulty/cross_family_diff_rate"] = float(np.mean(cross))
            text += ("\n\nRate of correctly saying \"different\" (evaluation pairs, proposed system): "
                     f"same-family pairs {np.mean(within):.1%} ({len(within)} model pairs), "
                     f"cross-family pairs {np.mean(cross):.1%} ({len(cross)} model pairs).")
    return out, text


# --------------------------------------------------------------------------- on any source


def source_difficulty(index: Any, settings: PatchSettings, artefact_dir: Any, max_models: int | None = None,
                      photos_per_model: int | None = None, patches_per_photo: int = 20, seed: int = 0,
                      workers: int | None = None, families: Mapping[str, str] | None = None,
                      render: Callable[[list], None] | None = None) -> tuple[dict, str]:
    """How far hand-made statistics alone tell a source's camera models apart (``camsim-data
    difficulty``): the global, residual and JPEG feature sets, each with a logistic classifier.

    Protocol: ``max_models`` models (a draw with ``seed``; all when None) of those with 2 or more
    photos (single-photo models left out, and counted), up to ``photos_per_model`` photos each,
    sorted, alternately to training and test (a photo and its re-shared copies on one side:
    ``splits.photo_units``; ``drawn`` lists them); up to ``patches_per_photo`` patches per photo,
    cut with ``settings``. Per feature set: accuracy (chance 1/K, majority-class rate beside it)
    and mean pairwise separability (balanced accuracy of a binary classifier per pair of models;
    0.5 = inseparable: comparable across sources with different numbers of models). ``families``
    (model → family) adds within- / cross-family means. ``render(paths)``: renders the photos drawn.
    """
    if max_models is not None and int(max_models) < 2:
        raise ValueError(f"difficulty.max_models={max_models}: at least 2 camera models are needed")
    if photos_per_model is not None and int(photos_per_model) < 2:
        raise ValueError(f"difficulty.photos_per_model={photos_per_model}: at least 2 (one to train on, one to test)")
    if int(patches_per_photo) < 1:
        raise ValueError(f"difficulty.patches_per_photo={patches_per_photo}: must be at least 1")
    # a model needs a photo to train on and another to test on; the others are left out, and said so
    names = sorted(m for m in index.models if len(index.models[m]) >= 2)
    single = len(index.models) - len(names)
    if len(names) < 2:
        raise ValueError(f"{len(names)} camera model(s) with 2 or more photos (of {len(index.models)}); the "
                         "difficulty check needs at least 2 such models")
    if max_models is not None:
        rng = np.random.default_rng(seed)
        names = sorted(rng.permutation(names)[:int(max_models)].tolist())
    reqs = []
    for m in names:
        photos = photo_units(list(index.models[m]))[:photos_per_model]  # a re-shared copy with its original
        for subset, part in (("difficulty-train", photos[0::2]), ("difficulty-test", photos[1::2])):
            files = tuple(f for g in part for f in g)
            reqs.append(PatchRequest(m, subset, files, int(patches_per_photo) * len(files)))
    if render is not None:
        render([p for r in reqs for p in r.images])
    sets = PatchStore(artefact_dir, settings, workers=workers).get(reqs)

    def take(subset: str) -> tuple[np.ndarray, list[str]]:
        xs, ys = [], []
        for m in names:
            ps = sets[(m, subset)]
            if len(ps):
                xs.append(np.asarray(ps.patches))
                ys += [m] * len(ps)
        return (np.concatenate(xs) if xs else np.zeros((0, settings.size, settings.size), np.uint8)), ys

    (xtr, ytr), (xte, yte) = take("difficulty-train"), take("difficulty-test")
    empty = sorted({m for m in names if m not in ytr or m not in yte})
    if empty:
        raise ValueError(f"no usable patch (entropy > {settings.min_entropy} nats) in the training or test photos "
                         f"of {empty}; lower patches.min_entropy or add photos")
    majority = max(yte.count(m) for m in names) / len(yte)
    out: dict[str, Any] = {"difficulty/models": len(names), "difficulty/single_photo_models_left_out": single,
                           "difficulty/chance": 1.0 / len(names), "difficulty/majority": majority,
                           "difficulty/train_patches": len(ytr), "difficulty/test_patches": len(yte),
                           "drawn": {f"{r.model}/{r.subset}": [str(f) for f in r.images] for r in reqs}}
    rows = []
    for kind, label in (("global", "global patch statistics (mean, std, histogram)"),
                        ("residual", "residual trace statistics (CFA / JPEG-grid phases)"),
                        ("jpeg", "JPEG block-DCT histograms (the JPEG branch's features)")):
        rep = difficulty_report(xtr, ytr, xte, yte, families=families, features_kind=kind)
        pair = float(np.mean(list(rep.pairwise.values())))
        out.update({f"difficulty/{kind}/acc": rep.accuracy, f"difficulty/{kind}/pairwise": pair})
        split = rep.within_family is not None and rep.cross_family is not None
        if split:
            out.update({f"difficulty/{kind}/pairwise_within_family": rep.within_family,
                        f"difficulty/{kind}/pairwise_cross_family": rep.cross_family})
        rows.append([label, f"{rep.accuracy:.1%}", f"{pair:.3f}",
                     f"{rep.within_family:.3f} / {rep.cross_family:.3f}" if split else "n/a"])
    trace = trace_statistics(np.concatenate([xtr, xte]))
    out.update({f"difficulty/trace/{k}": v for k, v in trace.items()})
    left_out = f" ({single} model(s) with a single photo left out)" if single else ""
    text = (f"{len(names)} camera models{left_out}, photos alternately train / test, {len(ytr)} / {len(yte)} patches of "
            f"{settings.size} px (entropy > {settings.min_entropy} nats), logistic classifiers; chance "
            f"{1 / len(names):.1%} (always naming the model with most test patches: {majority:.1%}), pairwise 0.5 = "
            "inseparable. Real photos' file order can put consecutive shots of one scene (repeated flat fields, "
            "bursts) on both sides — which flatters global statistics there — while the simulator's scenes never "
            "do:\n\n"
            + md_table(["features", "accuracy", "mean pairwise separability", "within / cross family"], rows)
            + f"\n\nWhat the pixels look like (medians over all {len(ytr) + len(yte)} patches; 4-neighbour "
              "Laplacian residual of green; compare sources, not values):\n\n"
            + md_table(["trace statistic", "median"], [[TRACE_STATISTICS[k], f"{v:.3f}"] for k, v in trace.items()]))
    return out, text
