"""All-pairs scoring of the similarity head (camsim.models.similarity: row_terms, score_rows and
its paths — eager blocks, concat_mul's GEMM, the compiled fused kernel) against the pairwise
forward, and the Localizer's callables built on them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import camsim.models.similarity as similarity
from camsim.models.similarity import SimilarityNet


def _pairwise(net: SimilarityNet, F: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """sigmoid(forward(F[i], G[j])) for every pair, the definition."""
    n, m = len(F), len(G)
    return torch.sigmoid(net(F.repeat_interleave(m, 0), G.repeat(n, 1))).reshape(n, m)


@pytest.mark.parametrize("combine", ["concat", "concat_mul", "absdiff"])
def test_row_terms_width_and_score_rows_equal_pairwise(combine):
    torch.manual_seed(0)
    net = SimilarityNet(12, branch=[16], combine=combine, hidden=[8]).eval()
    F, G = torch.randn(9, 12), torch.randn(6, 12)
    with torch.no_grad():
        RF, RG = net.row_terms(F), net.row_terms(G)
        assert RF.shape == (9, net.row_width()) and net.row_width() == {"concat": 16, "concat_mul": 32,
                                                                         "absdiff": 16}[combine]
        torch.testing.assert_close(net.score_rows(RF, RG, batch=4), _pairwise(net, F, G), rtol=0, atol=1e-6)
        torch.testing.assert_close(net.score_rows(RF, RG, logits=True),
                                   net(F.repeat_interleave(6, 0), G.repeat(9, 1)).reshape(9, 6), rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match=r"R2: expected row terms \[N, "):
            net.score_rows(RF, G)


@pytest.mark.parametrize("hidden", [[8], [8, 5], []])
def test_concat_mul_gemm_path_in_several_row_blocks(monkeypatch, hidden):
    torch.manual_seed(1)
    net = SimilarityNet(10, branch=[12], combine="concat_mul", hidden=hidden, activation="tanh").eval()
    F, G = torch.randn(11, 10), torch.randn(7, 10)
    monkeypatch.setattr(similarity, "MUL_BLOCK", 3 * net.head_in.out_features * 7)   # 3 rows a block: 4 blocks
    with torch.no_grad():
        S = net.score_matrix(F, G)
    torch.testing.assert_close(S, _pairwise(net, F, G), rtol=0, atol=1e-6)


def test_compiled_fused_kernel_equals_pairwise_on_padded_blocks(monkeypatch):
    """The compiled kernel on random features: blocks smaller than the matrix, the last ones
    zero-padded (13 x 10 pairs in blocks of 4 x 8), S and logits; ~5 s (one compile)."""
    torch.manual_seed(2)
    net = SimilarityNet(12, branch=[16], combine="concat", hidden=[8]).eval()
    with torch.no_grad():                                   # a PReLU slope that matters
        for m in net.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.fill_(0.3)
    assert net.fusable()
    monkeypatch.setattr(similarity, "FUSED_BLOCK", (4, 8))
    F, G = torch.randn(13, 12), torch.randn(10, 12)
    with torch.no_grad():
        RF, RG = net.row_terms(F), net.row_terms(G)
        fused = net.score_rows(RF, RG, compile=True)
        logits = net.score_rows(RF, RG, compile=True, logits=True)
        eager = net.score_rows(RF, RG)
    if similarity._FUSED.get("fn") is None:
        pytest.skip("torch.compile unavailable here (no C++ compiler?): the eager fallback ran")
    assert fused.shape == (13, 10) and fused.is_contiguous()
    torch.testing.assert_close(fused, _pairwise(net, F, G), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, net(F.repeat_interleave(10, 0), G.repeat(13, 1)).reshape(13, 10),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-6)                # a reordered sum


def test_fused_kernel_falls_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setitem(similarity._FUSED, "fn", broken)
    torch.manual_seed(3)
    net = SimilarityNet(6, branch=[8], combine="concat", hidden=[4]).eval()
    F = torch.randn(5, 6)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="camsim.models.similarity"):
        S = net.score_matrix(F, compile=True)
        assert similarity._FUSED["fn"] is None and "compiled pair scoring unavailable" in caplog.text
        torch.testing.assert_close(S, net.score_matrix(F), rtol=0, atol=0)   # the eager blocks
        torch.testing.assert_close(net.score_matrix(F, compile=True), S, rtol=0, atol=0)


def test_heads_without_a_fused_kernel_score_eagerly_with_compile():
    torch.manual_seed(4)
    for net in (SimilarityNet(6, branch=[8], combine="concat", hidden=[4, 3]),
                SimilarityNet(6, branch=[8], combine="absdiff", hidden=[4]),
                SimilarityNet(6, branch=[8], combine="concat", hidden=[])):
        net.eval()
        assert not net.fusable()
        F, G = torch.randn(4, 6), torch.randn(3, 6)
        with torch.no_grad():
            torch.testing.assert_close(net.score_matrix(F, G, compile=True), net.score_matrix(F, G), rtol=0, atol=0)


def test_localizer_extracts_row_terms_and_scores_them():
    """Localizer.extract = the head's row terms of the feature pass; its score_matrix on them =
    the pairwise forward on the features (compiled or not)."""
    from camsim.lit.phase_b import ForensicSimilarity
    from camsim.localize.run import Localizer
    from camsim.bench.plan import recipe

    torch.manual_seed(5)
    head = {**recipe(head="small")["similarity"], "branch": [32], "hidden": [8]}
    phase_a = {"backbone": recipe(model="mislnet_small")["model"], "class_names": ["a", "b"], "patch_size": 32}
    sim = ForensicSimilarity(phase_a, head, "fc_a2.pre").eval()
    patches = np.random.default_rng(0).integers(0, 256, (7, 32, 32), dtype=np.uint8)
    loc = Localizer(sim, batch=4)
    R = loc.extract(patches)
    f = torch.from_numpy(loc.feature_pass.extract(patches)[sim.feature_layer])
    with torch.no_grad():
        np.testing.assert_array_equal(R, sim.head.row_terms(f).numpy())
        ref, ref_self = _pairwise(sim.head, f[:3], f).numpy(), _pairwise(sim.head, f, f).numpy()
    np.testing.assert_allclose(loc.score_matrix(R[:3], R), ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(loc.score_matrix(R, None), ref_self, rtol=0, atol=1e-6)
    loc.compile_scoring = True
    np.testing.assert_allclose(loc.score_matrix(R[:3], R), ref, rtol=0, atol=1e-6)
