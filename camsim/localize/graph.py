"""Forensic similarity graphs (Mayer & Stamm 2020; method.md, "Later work"): patches are
nodes, the similarity S of two patches is the weight of their edge, and a spliced image
shows up as two communities (host and spliced region) joined by weak edges.

Pure numpy / scipy. The bipartition is the normalised-cut relaxation (Shi & Malik 2000):
the Fiedler vector of the normalised graph Laplacian
``L = I − D^{-1/2} W D^{-1/2}`` (Ng, Jordan & Weiss 2001), mapped back to the random-walk
form ``y = D^{-1/2} u₂`` and cut at the threshold with the smallest normalised cut.

Splice statistic: ``image_score = clip(1 − λ₂, 0, 1)`` with λ₂ the second-smallest
eigenvalue of L. One tight community (an unspliced image: S uniformly high) has
λ₂ ≈ N/(N−1) ≥ 1 → score 0; two communities with no edges between them have λ₂ = 0 →
score 1; for two equal blocks with within-similarity a and between-similarity b the score
is (a − b)/(a + b). Small communities with strong edges to the rest score lower (they are
harder to detect, as in the paper). The modularity of the bipartition and the eigengap
λ₃ − λ₂ are reported beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

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
    W = np.clip((S + S.T) / 2.0, 0.0, 1.0)
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


def _best_ncut_split(W: np.ndarray, deg: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Sweep the threshold along sorted ``y``; return the side mask with the smallest Ncut."""
    n = W.shape[0]
    order = np.argsort(y, kind="stable")
    Ws = W[np.ix_(order, order)]
    np.cumsum(Ws, axis=1, out=Ws)                      # Ws[k, k-1] = Σ_{j<k} W[o_k, o_j]
    inc = np.zeros(n)
    inc[1:] = 2.0 * Ws[np.arange(1, n), np.arange(0, n - 1)]
    assoc = np.cumsum(inc)[:-1]                        # internal weight of the first k+1 nodes
    vol_a = np.cumsum(deg[order])[:-1]
    vol_b = deg.sum() - vol_a
    cut = np.maximum(vol_a - assoc, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncut = np.where(vol_a > 0, cut / vol_a, np.inf) + np.where(vol_b > 0, cut / vol_b, np.inf)
    k = int(np.argmin(ncut))                           # first k+1 sorted nodes form one side
    side = np.zeros(n, dtype=bool)
    side[order[:k + 1]] = True
    return side, float(ncut[k])


def spectral_bipartition(S: np.ndarray, weights: str = "similarity", eta: float = 0.5,
                         host: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Split the similarity graph of ``S`` ([N, N], N ≥ 3) into two communities.

    Returns ``labels`` (int64 ``[N]`` in {0, 1}) and ``info``. Label 1 is the suspected
    spliced region: the community not containing node ``host`` when ``host`` is given,
    otherwise the smaller community by node count (ties: the smaller volume, then the one
    without node 0). ``info`` holds ``lambda2``, ``lambda3``, ``eigengap`` (λ₃ − λ₂),
    ``ncut``, ``modularity`` of the bipartition, ``sizes`` (n₀, n₁), ``fiedler``
    (the random-walk Fiedler vector, ``[N]``) and ``score`` (:func:`image_score`).
    """
    W = affinity(S, weights=weights, eta=eta)
    n = W.shape[0]
    if n < 3:
        raise LocalizationError(f"spectral bipartition needs at least 3 nodes; got {n}")
    deg = W.sum(axis=1)
    dis = np.zeros(n)
    np.divide(1.0, np.sqrt(deg), out=dis, where=deg > 0)  # isolated nodes: D^{-1/2} := 0
    M = dis[:, None] * W * dis[None, :]
    mu, vec = scipy.linalg.eigh(M, subset_by_index=[n - 3, n - 1])  # ascending
    lam = 1.0 - mu[::-1]                               # λ₁ ≤ λ₂ ≤ λ₃ of L = I − M
    fiedler = dis * vec[:, 1]
    if not np.any(np.abs(fiedler) > 0):
        fiedler = vec[:, 1]
    side, ncut = _best_ncut_split(W, deg, fiedler)
    labels = side.astype(np.int64)
    if host is not None:
        if labels[host] == 1:
            labels = 1 - labels
    else:
        n1, n0 = int(labels.sum()), int(n - labels.sum())
        v1, v0 = deg[labels == 1].sum(), deg[labels == 0].sum()
        flip = n1 > n0 or (n1 == n0 and (v1 > v0 or (v1 == v0 and labels[0] == 1)))
        if flip:
            labels = 1 - labels
    # Orient the Fiedler vector so that positive = suspected side.
    if labels.any() and np.mean(fiedler[labels == 1]) < np.mean(fiedler[labels == 0]):
        fiedler = -fiedler
    lambda2, lambda3 = float(lam[1]), float(lam[2])
    info: dict[str, Any] = {
        "lambda2": lambda2,
        "lambda3": lambda3,
        "eigengap": lambda3 - lambda2,
        "ncut": ncut,
        "modularity": modularity(W, labels),
        "sizes": (int((labels == 0).sum()), int((labels == 1).sum())),
        "fiedler": fiedler,
        "score": image_score(lambda2),
    }
    return labels, info


__all__ = ["affinity", "modularity", "image_score", "spectral_bipartition"]
