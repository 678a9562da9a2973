"""Forensic similarity graphs (Mayer & Stamm 2020; docs/method.md, "Later work"): patches are
nodes, the similarity S of two patches is the weight of their edge, and a spliced image
shows up as two communities (host and spliced region) joined by weak edges.

Pure numpy / scipy. The bipartition is the normalised-cut relaxation (Shi & Malik 2000):
the Fiedler vector of the normalised graph Laplacian
``L = I − D^{-1/2} W D^{-1/2}`` (Ng, Jordan & Weiss 2001), mapped back to the random-walk
form ``y = D^{-1/2} u₂`` and cut along its ordering. Eigenpairs: exact (LAPACK) up to
:data:`EXACT_EIGH_NODES` nodes, Lanczos (ARPACK, fixed start vector) above.

Two detectors (``method``), as in Mayer & Stamm 2020:

* ``"spectral"`` — cut at the smallest normalised cut; ``score = clip(1 − λ₂, 0, 1)`` with
  λ₂ the second-smallest eigenvalue of L. One tight community (an unspliced image: S
  uniformly high) has λ₂ ≈ N/(N−1) ≥ 1 → score 0; two communities with no edges between
  them have λ₂ = 0 → score 1; for two equal blocks with within-similarity a and
  between-similarity b the score is (a − b)/(a + b).
* ``"modularity"`` — cut where Newman's modularity Q is largest among the cuts along the
  Fiedler ordering; ``score = clip(2Q, 0, 1)`` (the same (a − b)/(a + b) for two equal
  blocks, so both detectors live on one scale).

Either way the image-level threshold is meant to be **calibrated on authentic images**
(:func:`camsim.localize.engine.calibrate_threshold`); λ₂, λ₃, the eigengap and both
scores are reported.

Which side is the splice (:func:`splice_side`) is decided by evidence, not size alone:
each community's share of the graph's nodes (area) and its share of the ``host_prior``
mass (the engine passes "patch on the image's outer ring": a pasted object rarely owns
the frame) are averaged; the community with more evidence is the host. A reference
node (``host``) overrides the evidence.

Large graphs (:func:`extend_partition`): the engine solves the graph of ``m`` evenly
spread landmark patches exactly and extends the cut to every other patch by the Nyström
extension of the Fiedler vector (Fowlkes et al. 2004), ``y_i = Σ_l W_il y_l / (d_i (1 −
λ₂))``, from the patch's similarities to the landmarks only: memory O(m² + batch·m), time
O(N·m) pair scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from camsim.localize.grid import LocalizationError


def affinity(S: np.ndarray, weights: str = "similarity", eta: float = 0.5) -> np.ndarray:
    """Edge weights W from a similarity matrix: symmetrised ``(S + Sᵀ)/2``, clipped to
    [0, 1], no self-loops. ``weights="similarity"`` keeps the soft scores;
    ``"threshold"`` keeps only the edges the paper's rule calls "same" (S > eta) with
    weight 1.
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise LocalizationError(f"similarity matrix S must be square [N, N]; got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise LocalizationError("similarity matrix S contains NaN or inf")
    W = S + S.T                                        # (S + Sᵀ)/2 clipped, in place: one N×N temporary
    W *= 0.5
    np.clip(W, 0.0, 1.0, out=W)
    if weights == "threshold":
        W = (W > eta).astype(np.float64)
    elif weights != "similarity":
        raise LocalizationError(f"weights must be 'similarity' or 'threshold'; got {weights!r}")
    np.fill_diagonal(W, 0.0)
    return W


def modularity(W: np.ndarray, labels: np.ndarray) -> float:
    """Newman's weighted modularity Q = Σ_c [ W_cc / 2m − (vol_c / 2m)² ] of a partition.

    ``W`` is used as given (symmetric, non-negative); 2m = ΣW. Returns 0.0 for an empty graph.
    """
    W = np.asarray(W, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    total = W.sum()
    if total <= 0:
        return 0.0
    deg = W.sum(axis=1)
    q = 0.0
    for c in np.unique(labels):
        m = labels == c
        q += W[np.ix_(m, m)].sum() / total - (deg[m].sum() / total) ** 2
    return float(q)


def image_score(lambda2: float) -> float:
    """Splice score in [0, 1] from the Fiedler eigenvalue λ₂ of the normalised Laplacian:
    ``clip(1 − λ₂, 0, 1)``; higher = more likely spliced (see module docstring)."""
    return float(np.clip(1.0 - lambda2, 0.0, 1.0))


EXACT_EIGH_NODES = 1024
METHODS = ("spectral", "modularity")


def _sweep(W: np.ndarray, deg: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Cuts along sorted ``y``: for each k, side A = the first k+1 sorted nodes.

    Returns ``order`` and per-cut ``ncut`` and ``modularity`` arrays (length N − 1).
    """
    n = W.shape[0]
    order = np.argsort(y, kind="stable")
    Ws = W[np.ix_(order, order)]
    np.cumsum(Ws, axis=1, out=Ws)                      # Ws[k, k-1] = Σ_{j<k} W[o_k, o_j]
    inc = np.zeros(n)
    inc[1:] = 2.0 * Ws[np.arange(1, n), np.arange(0, n - 1)]
    del Ws
    assoc = np.cumsum(inc)[:-1]                        # W_AA: internal weight of the first k+1 nodes
    total = deg.sum()
    vol_a = np.cumsum(deg[order])[:-1]
    vol_b = total - vol_a
    cut = np.maximum(vol_a - assoc, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncut = np.where(vol_a > 0, cut / vol_a, np.inf) + np.where(vol_b > 0, cut / vol_b, np.inf)
        if total > 0:
            q = (assoc + (vol_b - cut)) / total - (vol_a / total) ** 2 - (vol_b / total) ** 2
        else:
            q = np.zeros(n - 1)
    return {"order": order, "ncut": ncut, "modularity": q}


def _top_eigs(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The three largest eigenpairs of the symmetric ``M`` (ascending): exact up to
    :data:`EXACT_EIGH_NODES` nodes, ARPACK Lanczos with a fixed start vector above."""
    n = M.shape[0]
    if n <= EXACT_EIGH_NODES:
        return scipy.linalg.eigh(M, subset_by_index=[n - 3, n - 1])
    v0 = np.random.default_rng(0).uniform(0.5, 1.5, n)
    try:
        mu, vec = scipy.sparse.linalg.eigsh(M, k=3, which="LA", v0=v0, tol=1e-8)
    except scipy.sparse.linalg.ArpackNoConvergence:
        return scipy.linalg.eigh(M, subset_by_index=[n - 3, n - 1])
    idx = np.argsort(mu)
    return mu[idx], vec[:, idx]


def splice_side(labels: np.ndarray, host_prior: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Orient a two-community partition: label 1 = the suspected splice, 0 = the host.

    Evidence that community c is the host: ``e_c = ½·(n_c / N) + ½·(prior_c / prior_total)``
    (its share of the nodes, and of ``host_prior`` mass, e.g. 1 for patches on the
    image's outer ring), or the node share alone when no prior is given or its total is 0.
    The community with the larger evidence is the host (ties: the larger volume is not
    known here, so the community holding node 0 is the host). Returns the relabelled
    ``labels`` and ``{"host": e_host, "splice": e_splice, "rule": ...}``.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    n = len(labels)
    share = np.array([np.mean(labels == 0), np.mean(labels == 1)]) if n else np.zeros(2)
    rule = "area"
    ev = share
    if host_prior is not None:
        prior = np.asarray(host_prior, dtype=np.float64).ravel()
        if prior.shape != labels.shape:
            raise LocalizationError(f"host_prior must have one value per node ({n}); got shape {prior.shape}")
        if np.any(prior < 0) or not np.all(np.isfinite(prior)):
            raise LocalizationError("host_prior must be finite and non-negative")
        tot = prior.sum()
        if tot > 0:
            ev = 0.5 * share + 0.5 * np.array([prior[labels == 0].sum(), prior[labels == 1].sum()]) / tot
            rule = "area+border"
    if ev[1] > ev[0] or (ev[1] == ev[0] and n and labels[0] == 1):
        labels, ev = 1 - labels, ev[::-1]
    return labels, {"host": float(ev[0]), "splice": float(ev[1]), "rule": rule}


def spectral_bipartition(S: np.ndarray, weights: str = "similarity", eta: float = 0.5,
                         host: int | None = None, host_prior: np.ndarray | None = None,
                         method: str = "spectral") -> tuple[np.ndarray, dict[str, Any]]:
    """Split the similarity graph of ``S`` ([N, N], N ≥ 3) into two communities.

    ``method``: ``"spectral"`` (smallest normalised cut) or ``"modularity"`` (largest
    modularity) among the cuts along the Fiedler ordering; see the module docstring for
    the image scores. Returns ``labels`` (int64 ``[N]`` in {0, 1}) and ``info``. Label 1
    is the suspected spliced region: the community not containing node ``host`` when
    ``host`` is given, otherwise the side with less host evidence (:func:`splice_side`
    with ``host_prior``; without a prior: the smaller community). ``info`` holds
    ``lambda2``, ``lambda3``, ``eigengap`` (λ₃ − λ₂), ``ncut`` and ``modularity`` of the
    chosen bipartition, ``score_spectral``, ``score_modularity``, ``score`` (that of
    ``method``), ``method``, ``sizes`` (n₀, n₁), ``side_evidence``, ``fiedler`` (the
    random-walk Fiedler vector ``[N]``, positive = suspected side) and ``cut_value`` (the
    Fiedler value between the two sides, in that orientation; for :func:`extend_partition`).
    """
    if method not in METHODS:
        raise LocalizationError(f"graph method must be one of {METHODS}; got {method!r}")
    W = affinity(S, weights=weights, eta=eta)
    n = W.shape[0]
    if n < 3:
        raise LocalizationError(f"spectral bipartition needs at least 3 nodes; got {n}")
    deg = W.sum(axis=1)
    dis = np.zeros(n)
    np.divide(1.0, np.sqrt(deg), out=dis, where=deg > 0)  # isolated nodes: D^{-1/2} := 0
    M = dis[:, None] * W                               # D^{-1/2} W D^{-1/2}: one N×N temporary
    M *= dis[None, :]
    mu, vec = _top_eigs(M)
    del M
    lam = 1.0 - mu[::-1]                               # λ₁ ≤ λ₂ ≤ λ₃ of L = I − M
    fiedler = dis * vec[:, 1]
    if not np.any(np.abs(fiedler) > 0):
        fiedler = vec[:, 1]
    sw = _sweep(W, deg, fiedler)
    k_ncut = int(np.argmin(sw["ncut"]))
    k_mod = int(np.argmax(sw["modularity"]))
    k = k_ncut if method == "spectral" else k_mod
    order = sw["order"]
    labels = np.zeros(n, dtype=np.int64)
    labels[order[:k + 1]] = 1
    cut_value = 0.5 * (fiedler[order[k]] + fiedler[order[k + 1]])
    if host is not None:
        if labels[host] == 1:
            labels = 1 - labels
        side_ev: dict[str, Any] = {"rule": "reference"}
    else:
        labels, side_ev = splice_side(labels, host_prior)
    # Orient the Fiedler vector so that positive side = suspected side (label 1 above the cut).
    if labels[order[0]] == 1:
        fiedler, cut_value = -fiedler, -cut_value
    lambda2, lambda3 = float(lam[1]), float(lam[2])
    q_best = float(sw["modularity"][k_mod])
    scores = {"spectral": image_score(lambda2), "modularity": float(np.clip(2.0 * q_best, 0.0, 1.0))}
    info: dict[str, Any] = {
        "lambda2": lambda2,
        "lambda3": lambda3,
        "eigengap": lambda3 - lambda2,
        "ncut": float(sw["ncut"][k]),
        "modularity": float(sw["modularity"][k]),
        "score_spectral": scores["spectral"],
        "score_modularity": scores["modularity"],
        "method": method,
        "sizes": (int((labels == 0).sum()), int((labels == 1).sum())),
        "side_evidence": side_ev,
        "fiedler": fiedler,
        "cut_value": float(cut_value),
        "score": scores[method],
    }
    return labels, info


def extend_partition(W_block: np.ndarray, fiedler: np.ndarray, lambda2: float, cut_value: float,
                     landmark_labels: np.ndarray, self_index: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nyström extension of a landmark bipartition to new nodes.

    ``W_block`` [b, m]: affinities of b nodes to the m landmarks (symmetrised, clipped,
    e.g. from :func:`affinity_block`); ``fiedler`` [m], ``lambda2``, ``cut_value`` and
    ``landmark_labels`` [m] from :func:`spectral_bipartition` on the landmark graph.
    ``self_index`` [b]: for a node that is itself landmark l, l (its own edge is dropped
    and its label is the landmark's); −1 otherwise. Returns ``labels`` [b] (1 = suspected:
    extended Fiedler value above ``cut_value``), the extended Fiedler values [b] and the
    mean affinity to the host landmarks [b] (0 for a node without host landmarks).
    """
    W = np.asarray(W_block, dtype=np.float64)
    b, m = W.shape
    own = np.full(b, -1, dtype=np.int64) if self_index is None else np.asarray(self_index, dtype=np.int64)
    is_lm = own >= 0
    rows, cols = np.flatnonzero(is_lm), own[is_lm]
    w_self = np.zeros(b)
    w_self[rows] = W[rows, cols]                       # a landmark's edge to itself is dropped (no copy of W)
    fiedler = np.asarray(fiedler, dtype=np.float64)
    host = np.asarray(landmark_labels) == 0
    deg = W.sum(axis=1) - w_self
    wy = W @ fiedler
    wy[rows] -= w_self[rows] * fiedler[cols]
    scale = 1.0 - float(lambda2)
    scale = scale if abs(scale) > 1e-12 else 1.0
    y = np.zeros(b)
    np.divide(wy, deg * scale, out=y, where=deg > 0)
    labels = (y > cut_value).astype(np.int64)
    labels[is_lm] = np.asarray(landmark_labels)[cols]
    self_host = np.zeros(b, dtype=bool)
    self_host[rows] = host[cols]
    to_host = W @ host.astype(np.float64) - np.where(self_host, w_self, 0.0)
    n_host = host.sum() - self_host.astype(np.int64)
    mean_host = np.zeros(b)
    np.divide(to_host, n_host, out=mean_host, where=n_host > 0)
    return labels, y, mean_host


def affinity_block(S_xl: np.ndarray, S_lx_t: np.ndarray, weights: str = "similarity",
                   eta: float = 0.5) -> np.ndarray:
    """Edge weights between b nodes and m landmarks: ``clip((S(x, l) + S(l, x)ᵀ)/2, 0, 1)``
    from the two scoring directions ([b, m] each), as :func:`affinity` does for a square S."""
    a, c = np.asarray(S_xl), np.asarray(S_lx_t)
    if a.shape != c.shape or a.ndim != 2:
        raise LocalizationError(f"similarity blocks must both be [b, m]; got {a.shape} and {c.shape}")
    W = np.add(a, c, dtype=np.float64)                 # widened exactly inside the add: no float64 copies
    W *= 0.5
    np.clip(W, 0.0, 1.0, out=W)
    if weights == "threshold":
        return (W > eta).astype(np.float64)
    if weights != "similarity":
        raise LocalizationError(f"weights must be 'similarity' or 'threshold'; got {weights!r}")
    return W


__all__ = ["affinity", "affinity_block", "modularity", "image_score", "splice_side",
           "spectral_bipartition", "extend_partition", "EXACT_EIGH_NODES", "METHODS"]
