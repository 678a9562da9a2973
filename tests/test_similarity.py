"""All-pairs scoring of the similarity head (camsim.models.similarity: row_terms, score_rows and
its paths — eager blocks, concat_mul's GEMM, the compiled fused kernel) against the pairwise
forward, the Localizer's callables built on them, and the head's dropout."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import camsim.models.similarity as similarity
from camsim.models.fusion import FittedFusion, check_fusion, fit_fusion, fuse_scores
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


def test_fused_localizer_scores_pairs_with_both_networks_on_one_patch_grid():
    """FusedLocalizer (camsim-localize ckpt=[a, b]): a green and an RGB network side by side; its
    pair scores are the fusion of each network's own Localizer's logits (a green network reading the
    green plane of the RGB patches); it runs the engine on a photo; other patch sizes or alignments are
    refused, other entropy filters need one threshold given for all."""
    from types import SimpleNamespace

    from camsim.bench.plan import recipe
    from camsim.lit.phase_b import ForensicSimilarity
    from camsim.localize.run import FusedLocalizer, Localizer

    head = {**recipe(head="small")["similarity"], "branch": [32], "hidden": [8]}
    backbone = recipe(model="mislnet_small")["model"]

    def network(seed: int, channels: int, min_entropy: float = 4.0, align: int = 8):
        torch.manual_seed(seed)
        phase_a = {"backbone": {**backbone, "in_channels": channels}, "class_names": ["a", "b"], "patch_size": 32}
        training = {"sets": {"a": ["a", "b"], "b": ["c"]}, "patches": {"size": 32, "align": align, "min_entropy": min_entropy}}
        return ForensicSimilarity(phase_a, head, "fc_a2.pre", training=training).eval()

    green, rgb = network(1, 1), network(2, 3)
    fused = FusedLocalizer([green, rgb], batch=4)
    assert fused.channels == 3 and fused.patch == 32
    patches = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    R = fused.extract(patches)
    one, three = Localizer(green, batch=4), Localizer(rgb, batch=4)
    Rg, Rc = one.extract(patches[:, 1]), three.extract(patches)
    np.testing.assert_array_equal(R, np.concatenate([Rg, Rc], axis=1))
    with torch.no_grad():
        zg = green.head.score_rows(torch.from_numpy(Rg[:2]), torch.from_numpy(Rg), logits=True).numpy()
        zc = rgb.head.score_rows(torch.from_numpy(Rc[:2]), torch.from_numpy(Rc), logits=True).numpy()
    np.testing.assert_allclose(fused.score_matrix(R[:2], R), fuse_scores([zg, zc]), rtol=0, atol=1e-6)
    fused.fusion = "mean"
    np.testing.assert_allclose(fused.score_matrix(R[:2], R), fuse_scores([zg, zc], "mean"), rtol=0, atol=1e-6)
    photo = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    opts = SimpleNamespace(reference=None, stride=None, mode="graph", eta=0.5)
    result = fused.run(np.ascontiguousarray(photo[..., 1]), opts, colour=photo)
    assert result.n_decidable > 0 and 0.0 <= result.score <= 1.0
    # recipes with other entropy filters: one threshold for both must be given
    coarse = FusedLocalizer([green, network(3, 3, min_entropy=2.0)], batch=4)
    with pytest.raises(ValueError, match=r"different entropies \(\[4\.0, 2\.0\] nats\).*min_entropy=4"):
        coarse.run(np.ascontiguousarray(photo[..., 1]), opts, colour=photo)
    given = coarse.run(np.ascontiguousarray(photo[..., 1]), SimpleNamespace(**vars(opts), min_entropy=1.5),
                       colour=photo)
    assert given.stats["min_entropy"] == 1.5 and given.stats["min_entropy_source"] == "option min_entropy"
    with pytest.raises(ValueError, match="cut different patches"):
        FusedLocalizer([green, network(4, 1, align=16)])
    with pytest.raises(ValueError, match="fusion: 'max'"):
        FusedLocalizer([green, rgb], fusion="max")
    # a fitted fusion: one photo, one table — its identical-table weights
    fitted = FittedFusion(np.array([[9.0, -3.0, 5.0], [0.5, 2.0, -1.0]]), [{"file": "g"}, {"file": "c"}])
    fused.fusion = fitted
    np.testing.assert_allclose(fused.score_matrix(R[:2], R), 1 / (1 + np.exp(-(0.5 + 2.0 * zg - zc))), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="fusion=fit: fitting needs labelled pairs"):
        FusedLocalizer([green, rgb], fusion="fit")
    # one network with a fitted fusion: its logit reweighted (identical-table row); a fixed rule leaves it alone
    from camsim.localize.run import localizer_for
    alone = localizer_for([rgb], fusion=FittedFusion(np.array([[9.0, -3.0], [0.5, 2.0]]), [{"file": "c"}]), batch=4)
    assert isinstance(alone, FusedLocalizer)
    np.testing.assert_allclose(alone.score_matrix(Rc[:2], Rc), 1 / (1 + np.exp(-(0.5 + 2.0 * zc))), rtol=0, atol=1e-6)
    assert type(localizer_for([rgb], fusion="logit", batch=4)) is Localizer


def test_fuse_scores_hand_cases():
    """Two networks' logits of three pairs: σ(mean logit) lets a sure network outvote an unsure one,
    the mean score bounds each network's say; one network is its own σ; extreme logits stay finite."""
    sure, unsure = np.array([-8.0, 0.0, 2.0]), np.array([1.0, 0.0, -2.0])
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(fuse_scores([sure, unsure]), sig((sure + unsure) / 2))
    np.testing.assert_allclose(fuse_scores([sure, unsure], "mean"), (sig(sure) + sig(unsure)) / 2)
    assert fuse_scores([sure, unsure])[0] < 0.05 < fuse_scores([sure, unsure], "mean")[0]
    np.testing.assert_allclose(fuse_scores([sure, unsure])[1:], [0.5, 0.5])
    np.testing.assert_allclose(fuse_scores([sure]), sig(sure))
    assert np.isfinite(fuse_scores([np.array([-1e4, 1e4])] * 2)).all()
    with pytest.raises(ValueError, match="fusion: 'max'"):
        fuse_scores([sure], "max")


# ---------------------------------------------------------------------- the head's dropout

@pytest.mark.parametrize("p", [0.5, 0.25, 0.125, 3 / 256])
def test_dropout_mask_keeps_one_minus_p_scaled_and_draws_anew(p):
    torch.manual_seed(0)
    n = 1 << 18
    mask = similarity.dropout_mask((n // 64, 64), p)
    assert mask.dtype == torch.float32 and mask.shape == (n // 64, 64)
    assert mask.unique().tolist() == [0.0, torch.tensor(1 / (1 - p)).item()]  # dropped, or kept and scaled
    keep = mask > 0
    share, sd = keep.float().mean().item(), (p * (1 - p) / n) ** 0.5
    assert abs(share - (1 - p)) < 5 * sd  # binomial: a biased bit field fails this
    assert (keep[:, :32] != keep[:, 32:]).float().mean().item() > 0.5 * 2 * p * (1 - p)  # no repeated fields
    assert not torch.equal(mask, similarity.dropout_mask((n // 64, 64), p))  # a fresh draw per call
    torch.manual_seed(0)
    assert torch.equal(mask, similarity.dropout_mask((n // 64, 64), p))  # torch's seed decides it


def test_dropout_mask_reads_each_random_bit_field_in_order():
    """Element k of a byte is its k-th b-bit field from the least significant bit: what the
    words torch draws decide, one field per element, none skipped or reused."""
    for p, bits in ((0.5, 1), (0.25, 2), (3 / 16, 4), (3 / 256, 8)):
        torch.manual_seed(3)
        mask = similarity.dropout_mask((1000,), p, torch.float64)
        torch.manual_seed(3)
        words = torch.empty(-(-1000 * bits // 32), dtype=torch.int32).random_(-2**31, 2**31)
        raw = words.view(torch.uint8).long()
        fields = ((raw[:, None] >> torch.arange(0, 8, bits)) & (2**bits - 1)).reshape(-1)[:1000]
        expected = (fields >= round(p * 2**bits)).double() / (1 - p)
        assert torch.equal(mask, expected), p


def test_dropout_mask_odd_sizes_and_probabilities_torch_cannot_split():
    torch.manual_seed(1)
    assert similarity.dropout_mask((3, 7), 0.5).shape == (3, 7)  # not a whole number of bytes
    assert similarity.dropout_mask((5,), 0.3) is None  # no whole bit field: torch's dropout takes it
    assert similarity.dropout_mask((4,), 0.5, torch.float64).dtype == torch.float64


def test_prelu_gives_torchs_values_and_gradients():
    """The head's PReLU (one slope; a backward without per-element branches on CPU) against
    torch's nn.PReLU: outputs, input and slope gradients equal, zeros and a zero row included."""
    torch.manual_seed(4)
    x = torch.randn(64, 96)
    x[3] = 0.0
    x[5, ::7] = 0.0
    g = torch.randn(64, 96)
    ours, ref = similarity.PReLU(), torch.nn.PReLU()
    with torch.no_grad():
        ours.weight.fill_(0.3)
        ref.weight.fill_(0.3)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad) and torch.equal(ours.weight.grad, ref.weight.grad)
    assert ours.state_dict().keys() == ref.state_dict().keys()  # checkpoints unchanged
    with torch.no_grad():  # inference: torch's own
        assert torch.equal(ours(x), ref(x))
    per_channel, ref_c = similarity.PReLU(96), torch.nn.PReLU(96)  # several slopes: torch's own
    assert torch.equal(per_channel(xa), ref_c(xb))


def test_bit_dropout_is_dropout_in_training_and_identity_in_eval():
    torch.manual_seed(2)
    x = torch.randn(256, 1024, requires_grad=True)
    d = similarity.BitDropout(0.5)
    assert d.state_dict() == {} and isinstance(d, torch.nn.Dropout)  # checkpoints unchanged
    y = d(x)
    kept = y != 0
    assert torch.allclose(y[kept], 2 * x[kept]) and abs(kept.float().mean().item() - 0.5) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 2)  # the gradient flows through the kept units, scaled
    d.eval()
    assert torch.equal(d(x), x)
    d.train()
    odd = similarity.BitDropout(0.3)(x)  # torch's own dropout: scale 1/0.7
    assert torch.allclose(odd[odd != 0], x[odd != 0] / 0.7)


def test_similarity_head_uses_the_bit_dropout():
    net = SimilarityNet(8, branch=[16], dropout=0.5)
    assert [type(m) for m in net.branch] == [torch.nn.Linear, similarity.PReLU, similarity.BitDropout]
    assert type(net.head_rest[0]) is similarity.PReLU


def test_a_fusion_fitted_per_table_relation_recovers_its_weights(tmp_path):
    """fit_fusion: pairs drawn from a known logistic model with other weights where the two photos'
    tables are identical give those weights back (classes balanced, so the bias shifts by the log
    class ratio only); the fitted fusion scores each pair with its relation's weights, survives
    a save and load, and a file that is not one is refused by name."""
    rng = np.random.default_rng(0)
    n = 60_000
    z = rng.normal(0, 2, (2, n))
    t = rng.random(n) < 0.4
    true = np.array([[0.0, 1.0, 0.2], [0.0, 0.1, 1.5]])  # tables differ: the first network; identical: the second
    p = 1 / (1 + np.exp(-np.where(t, true[1] @ np.r_[[np.ones(n)], z], true[0] @ np.r_[[np.ones(n)], z])))
    same = rng.random(n) < p
    w = fit_fusion(list(z), same, t)
    assert w.shape == (2, 3)
    np.testing.assert_allclose(w[:, 1:], true[:, 1:], atol=0.06)
    f = FittedFusion(w, [{"file": "a/model.ckpt", "sha256": "1"}, {"file": "b/model.ckpt", "sha256": "2"}], {"pairs": n})
    s = fuse_scores(list(z), f, t)
    np.testing.assert_allclose(s[t], 1 / (1 + np.exp(-(w[1, 0] + w[1, 1] * z[0][t] + w[1, 2] * z[1][t]))), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s[~t], 1 / (1 + np.exp(-(w[0, 0] + w[0, 1] * z[0][~t] + w[0, 2] * z[1][~t]))), rtol=1e-9, atol=1e-12)
    back = check_fusion(str(f.save(tmp_path / "fusion.json")))
    np.testing.assert_array_equal(back.weights, w)
    assert back.networks == f.networks and back.fitted_on == {"pairs": n}
    with pytest.raises(ValueError, match="same_table"):
        fuse_scores(list(z), back)
    with pytest.raises(ValueError, match="fuses 2 networks, given 1"):
        back.scores([z[0]], t)
    with pytest.raises(ValueError, match="needs same-model and different-model pairs"):
        fit_fusion(list(z), np.ones(n, bool), t)
    with pytest.raises(ValueError, match=r"nowhere\.json not found"):
        check_fusion(str(tmp_path / "nowhere.json"))
    (tmp_path / "other.json").write_text('{"kind": "something else", "weights": [[1, 2]], "networks": []}')
    with pytest.raises(ValueError, match=r"other\.json is not a fitted fusion"):
        check_fusion(str(tmp_path / "other.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json is not a fitted fusion"):
        check_fusion(str(tmp_path / "broken.json"))
    assert check_fusion("fit", allow_fit=True) == "fit"
