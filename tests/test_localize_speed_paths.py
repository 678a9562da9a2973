"""The per-photo speed paths of camsim-localize give the very results of the plain ones (issue 21):
float32 pair scores widened only where the graph computes, one OpenBLAS thread for the graph's
matrix-vector products, the overlay's tabulated blend."""

from __future__ import annotations

import numpy as np
import pytest

from camsim.localize.engine import LocalizationError, _graph, _scores, localize
from camsim.localize.graph import extend_partition, spectral_bipartition
from camsim.localize.outputs import _blend
from camsim.machine import _openblas_thread_setters, single_blas_thread


def _features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, 6)).astype(np.float32)
    F[: n // 4] += 1.5                                              # a planted "splice"
    return F


def score32(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    """An asymmetric float32 similarity in (0, 1), as a network's head gives."""
    return (1.0 / (1.0 + np.exp(-(F @ (0.7 * G.T)) - 0.1 * F[:, :1]))).astype(np.float32)


def score64(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    """The same scores handed over as float64 (what the engine widened every block to before)."""
    return score32(F, G).astype(np.float64)


@pytest.mark.parametrize("n,max_nodes", [(300, 2048), (1500, 256)])    # exact graph; landmarks + Nyström
def test_graph_on_float32_scores_is_bitwise_the_float64_graph(n, max_nodes):
    F = _features(n)
    ring = np.zeros(n)
    ring[::17] = 1.0
    a = _graph(F, score32, 64, None, ring, "similarity", 0.5, max_nodes, "spectral")
    b = _graph(F, score64, 64, None, ring, "similarity", 0.5, max_nodes, "spectral")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2]["lambda2"] == b[2]["lambda2"] and a[2]["score"] == b[2]["score"]
    assert 0 < a[0].sum() < n                                      # a real cut, not a trivial one


def test_reference_mode_on_float32_scores_is_bitwise_the_float64_one():
    rng = np.random.default_rng(3)
    green = rng.integers(0, 256, (160, 224), dtype=np.uint8)

    def extract(patches: np.ndarray) -> np.ndarray:
        return patches.reshape(len(patches), -1)[:, ::97].astype(np.float32) / 255.0

    for reference in ("auto", (40, 60)):
        a = localize(green, extract, score32, patch=32, mode="reference", reference=reference, min_entropy=0.0)
        b = localize(green, extract, score64, patch=32, mode="reference", reference=reference, min_entropy=0.0)
        assert a.reference == b.reference and a.score == b.score
        assert np.array_equal(a.scores, b.scores, equal_nan=True) and np.array_equal(a.suspect, b.suspect)
        assert a.scores.dtype == np.float64


def test_scores_keep_the_scorers_float_dtype_widen_the_rest_and_reject_nan():
    F = _features(10)
    assert _scores(score32, F, F[:4], 3).dtype == np.float32
    assert _scores(lambda A, B: np.ones((len(A), len(B)), np.int64), F, F[:4], 3).dtype == np.float64
    with pytest.raises(LocalizationError, match="NaN or inf"):
        _scores(lambda A, B: np.full((len(A), len(B)), np.nan, np.float32), F, F[:4], 3)


def test_single_blas_thread_gives_bitwise_results_and_restores_the_thread_count():
    rng = np.random.default_rng(5)
    for n in (400, 1500):                                          # LAPACK eigh; ARPACK above 1024 nodes
        truth = np.arange(n) < n // 3
        S = np.where(truth[:, None] == truth[None, :], 0.8, 0.3) + rng.normal(0, 0.1, (n, n))
        plain = spectral_bipartition(S)
        with single_blas_thread():
            single = spectral_bipartition(S)
        # same cut; LAPACK / ARPACK may round the last bit differently with another thread count
        assert np.array_equal(plain[0], single[0])
        np.testing.assert_allclose(single[1]["fiedler"], plain[1]["fiedler"], rtol=0, atol=1e-12)
        assert abs(plain[1]["lambda2"] - single[1]["lambda2"]) < 1e-12
    W = rng.random((2048, 1500))                                   # 2048 nodes against the 1500 above
    args = (plain[1]["fiedler"], plain[1]["lambda2"], plain[1]["cut_value"], plain[0])
    with single_blas_thread():
        inside = extend_partition(W, *args)
    assert all(np.array_equal(x, y) for x, y in zip(inside, extend_partition(W, *args)))   # matvecs: bitwise
    setters = _openblas_thread_setters()
    if not setters:
        pytest.skip("numpy/scipy without a bundled OpenBLAS: single_blas_thread changes nothing")
    before = [fn(3) for fn in setters]                             # set 3, remember what was there
    with single_blas_thread():
        assert [fn(1) for fn in setters] == [1] * len(setters)     # one thread inside
    assert [fn(b) for fn, b in zip(setters, before)] == [3] * len(setters)   # restored on exit


@pytest.mark.parametrize("alpha", [0.45, 0.15, 0.55])
def test_tabulated_blend_equals_the_float_formula(alpha):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    base[0, :, :] = np.arange(80)[:, None] * 3                      # every value 0..237 in a row
    base[1, :16, :] = np.arange(240, 256)[:, None]
    where = rng.random((64, 80)) < 0.6
    colour = np.array([255.0, 0.0, 0.0])
    expect = base.copy()
    px = expect[where].astype(np.float32)
    expect[where] = np.clip(((1.0 - alpha) * px + alpha * colour.astype(np.float32)).round(), 0, 255).astype(np.uint8)
    got = base.copy()
    _blend(got, where, colour, alpha)
    assert np.array_equal(got, expect) and not np.array_equal(got, base)
