"""Tests of the network parts: constrained conv, backbone, similarity head (method.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from camsim.bench.ceiling import count_flops
import camsim.models.backbone as backbone_module
from camsim.models.backbone import Backbone
from camsim.models.batch_norm_pool import batch_norm_max_pool, fusable
from camsim.models.constrained import (
    ConstrainedConv2d,
    constrained_then_conv,
    constraint_violation,
    project_constrained,
    project_constrained_layers_,
)
from camsim.models.jpeg import DCTHistogram, dct_basis, soft_histogram, zigzag
from camsim.models.similarity import COMBINE_MODES, SimilarityNet

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_FILES = sorted((CONF / "model").glob("*.yaml"))
SIM_FILES = sorted((CONF / "similarity").glob("*.yaml"))


def load_model(name: str, patch_size: int, num_classes: int = 5, **overrides) -> Backbone:
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    return instantiate(cfg, num_classes=num_classes, patch_size=patch_size, **overrides)


def small_backbone(patch_size: int = 32, **kw) -> Backbone:
    args = dict(
        num_classes=4,
        patch_size=patch_size,
        constrained={"kernels": 3, "kernel_size": 5},
        blocks=[
            {"out_channels": 6, "kernel_size": 5, "stride": 2, "padding": "same",
             "pool": {"type": "max", "kernel": 3, "stride": 2}},
            {"out_channels": 8, "kernel_size": 1, "pool": {"type": "avg", "kernel": 3, "stride": 2}},
        ],
        fc=[16, 12],
    )
    args.update(kw)
    return Backbone(**args)


def patches(n: int, p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, p, p), dtype=torch.uint8, generator=g)


# ---------------------------------------------------------------- constrained conv
def test_projection_hand_computed():
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0] = torch.tensor([[1.0, 2.0, 0.0], [1.0, 5.0, 0.0], [0.0, 0.0, 4.0]])
    p = project_constrained(w)
    expected = torch.tensor([[0.125, 0.25, 0.0], [0.125, -1.0, 0.0], [0.0, 0.0, 0.5]])
    assert torch.equal(p[0, 0], expected)
    assert torch.equal(w[0, 0, 1, 1], torch.tensor(5.0))  # pure: input untouched


def test_projection_divides_by_sum_not_mean_shift():
    # negative sum: divided out (signs flip); a mean shift would not give these values
    w = torch.tensor([[[[-1.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, -3.0]]]])
    p = project_constrained(w)
    assert torch.allclose(p[0, 0, 0, 0], torch.tensor(0.25))
    assert torch.allclose(p[0, 0, 2, 2], torch.tensor(0.75))
    assert p[0, 0, 0, 1] == 0 and p[0, 0, 1, 1] == -1


def test_projection_degenerate_sum_gives_uniform_predictor():
    w = torch.zeros(2, 1, 3, 3)
    w[0, 0, 0, 0], w[0, 0, 2, 2] = 1.0, -1.0  # off-centre sum exactly 0
    # w[1] all zero: sum 0 as well
    p = project_constrained(w)
    for o in range(2):
        off = p[o, 0].flatten()[[0, 1, 2, 3, 5, 6, 7, 8]]
        assert torch.allclose(off, torch.full((8,), 1 / 8))
        assert p[o, 0, 1, 1] == -1
    assert torch.isfinite(p).all()


def test_projection_idempotent_and_keeps_dtype():
    w = torch.randn(4, 2, 7, 7, dtype=torch.float64)
    p = project_constrained(w)
    assert p.dtype == torch.float64 and p.shape == w.shape
    assert torch.allclose(project_constrained(p), p, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (3, 1, 5, 5), (6, 3, 5, 5), (2, 4, 7, 7)])
def test_projection_satisfies_constraint_for_shapes(shape):
    c, s = constraint_violation(project_constrained(torch.randn(*shape)))
    assert c < 1e-6 and s < 1e-6


def test_projection_sum_exact_in_float32_when_weights_get_large():
    # small off-centre sums make the projected weights large; the residual of rounding
    # them to float32 must not break the constraint
    w = torch.randn(500, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    p = project_constrained(w)
    assert p.dtype == torch.float32 and p.abs().max() > 100
    c, s = constraint_violation(p)
    assert c == 0 and s < 1e-9


@pytest.mark.parametrize("bad", [(1, 1, 4, 4), (1, 1, 1, 1), (1, 1, 3, 5), (3, 5, 5)])
def test_projection_bad_shapes_raise(bad):
    with pytest.raises(ValueError, match="weight"):
        project_constrained(torch.randn(*bad))


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("out_ch,in_ch,k", [(3, 1, 5), (6, 1, 5), (4, 3, 3), (2, 2, 7)])
def test_constraint_holds_after_optimiser_steps(opt_name, out_ch, in_ch, k):
    torch.manual_seed(0)
    layer = ConstrainedConv2d(in_ch, out_ch, k)
    model = nn.Sequential(layer, nn.Tanh(), nn.Conv2d(out_ch, 2, 3), nn.Flatten(), nn.LazyLinear(1))
    x = torch.randn(4, in_ch, 16, 16)
    model(x)  # materialise the lazy layer
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)  # paper-like
        if opt_name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    before = layer.weight.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        assert project_constrained_layers_(model) == 1
        c, s = constraint_violation(layer.weight)
        assert c < 1e-6 and s < 1e-6
    assert not torch.allclose(before, layer.weight)  # it did train


def test_constrained_eval_mode_uses_constrained_weights():
    torch.manual_seed(1)
    layer = ConstrainedConv2d(1, 3, 5)
    c, s = constraint_violation(layer.weight)  # projected at init
    assert c < 1e-6 and s < 1e-6
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    x = torch.randn(2, 1, 12, 12)
    layer(x).sum().backward()
    opt.step()
    layer.project_()
    w = layer.weight.detach().clone()
    layer.eval()
    with torch.no_grad():
        y = layer(x)
    assert torch.equal(layer.weight, w)
    assert torch.allclose(y, torch.nn.functional.conv2d(x, project_constrained(w)), atol=1e-6)


def test_backbone_constraint_holds_after_training_step():
    model = load_model("mislnet", 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = patches(4, 64), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        project_constrained_layers_(model)
    c, s = constraint_violation(model.constrained.weight)
    assert c < 1e-6 and s < 1e-6


# ---------------------------------------------------------------- backbone geometry
def _yaml_table(path: Path) -> tuple[list[str], list[list[int]]]:
    header, rows = None, []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or "|" not in line:
            continue
        cells = [c.strip() for c in line.lstrip("#").split("|")]
        if cells[0] == "patch":
            header = cells
        elif cells[0].isdigit():
            rows.append([int(c) for c in cells])
    assert header is not None and rows, f"{path.name}: no spatial-size table"
    return header, rows


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_yaml_spatial_table_matches_model(path):
    header, rows = _yaml_table(path)
    assert sorted(r[0] for r in rows) == [64, 128, 256]
    for row in rows:
        p = row[0]
        model = instantiate(OmegaConf.load(path), num_classes=3, patch_size=p)
        # sizes actually produced by a forward pass, via hooks
        seen: dict[str, int] = {}
        hooks = []
        if model.constrained is not None:
            hooks.append(model.constrained.register_forward_hook(
                lambda m, i, o: seen.__setitem__("constrained", o.shape[-1])))
        for name, block in model.blocks.items():
            hooks.append(block.conv.register_forward_hook(
                lambda m, i, o, n=name: seen.__setitem__(n, o.shape[-1])))
            hooks.append(block.pool.register_forward_hook(
                lambda m, i, o, n=name: seen.__setitem__(f"{n}.pool", o.shape[-1])))
        first_fc = next(iter(model.fcs.values()))
        hooks.append(first_fc.register_forward_hook(
            lambda m, i, o: seen.__setitem__("flatten", i[0].shape[-1])))
        model.eval()
        with torch.no_grad():
            model(patches(1, p))
        for h in hooks:
            h.remove()
        for col, value in zip(header[1:], row[1:]):
            assert seen[col] == value, f"{path.name} @ {p}px: {col} is {seen[col]}, table says {value}"
            computed = model.flat_features if col == "flatten" else model.shapes[col][1]
            assert computed == value


def test_mislnet_256_flattens_to_6x6x128():
    model = load_model("mislnet", 256)
    assert model.shapes["conv4.pool"] == (128, 6, 6)
    assert model.fcs["fc_a1"].in_features == 4608


@pytest.mark.parametrize("name", ["mislnet", "mislnet_small"])
@pytest.mark.parametrize("p", [64, 128, 256])
def test_output_shapes(name, p):
    model = load_model(name, p, num_classes=7).eval()
    with torch.no_grad():
        assert model(patches(2, p)).shape == (2, 7)
        assert model(patches(2, p).unsqueeze(1)).shape == (2, 7)  # [N, 1, P, P] too
        assert model.features(patches(2, p)).shape == (2, model.feature_dim())


def test_every_named_layer_has_its_width():
    model = load_model("mislnet_small", 64, num_classes=6).eval()
    names = model.layer_names()
    assert names[0] == "constrained" and names[-1] == "logits"
    assert {"conv1.pre", "conv4.pool", "fc_a1.post", "fc_a2.pre"} <= set(names)
    x = patches(3, 64)
    with torch.no_grad():
        all_feats = model.forward_features(x, names)
        for name in names:
            f = model.features(x, name)
            assert f.shape == (3, model.feature_dim(name)), name
            assert torch.allclose(f, all_feats[name], atol=1e-6), name
        assert torch.allclose(all_feats["logits"], model(x), atol=1e-6)
    assert model.feature_layer == "fc_a2.pre" and model.feature_dim() == 128


def test_feature_layer_is_pre_activation():
    model = load_model("mislnet_small", 64).eval()
    with torch.no_grad():
        f = model.forward_features(patches(2, 64), ["fc_a2.pre", "fc_a2.post"])
    assert torch.allclose(torch.tanh(f["fc_a2.pre"]), f["fc_a2.post"], atol=1e-6)


def test_unknown_layer_raises_naming_it():
    model = small_backbone()
    with pytest.raises(ValueError, match="fc_a9.pre") as err:
        model.features(patches(1, 32), "fc_a9.pre")
    assert "fc_a1.pre" in str(err.value)  # lists the valid names
    with pytest.raises(ValueError, match="conv7.post"):
        model.feature_dim("conv7.post")
    with pytest.raises(ValueError, match="nope"):
        small_backbone(feature_layer="nope")


def test_uint8_and_float_inputs_agree():
    model = small_backbone().eval()
    x = patches(2, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.float()), atol=1e-6)


def test_bad_configs_raise_naming_the_field():
    with pytest.raises(ValueError, match="kernal"):
        small_backbone(blocks=[{"out_channels": 4, "kernal_size": 3}])
    with pytest.raises(ValueError, match="activation"):
        small_backbone(activation="swishy")
    with pytest.raises(ValueError, match="conv2.pool"):
        small_backbone(patch_size=16, fit_pools=False)
    with pytest.raises(ValueError, match="x"):
        small_backbone()(torch.zeros(2, 2, 1, 32, 32))


def test_fit_pools_shrinks_only_windows_that_do_not_fit():
    cfg = OmegaConf.load(CONF / "model" / "mislnet.yaml")
    cfg.fit_pools = False
    with pytest.raises(Exception, match="conv4.pool"):  # hydra wraps the ValueError
        instantiate(cfg, num_classes=3, patch_size=64)
    strict = instantiate(cfg, num_classes=3, patch_size=128)
    fitted = load_model("mislnet", 128, num_classes=3)
    assert str(strict) == str(fitted)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_other_activations_and_no_batch_norm(activation):
    model = small_backbone(activation=activation, batch_norm=False, constrained=None).eval()
    assert model.constrained is None and "constrained" not in model.layer_names()
    with torch.no_grad():
        assert model(patches(2, 32)).shape == (2, 4)


def test_channels_last_matches_default_layout():
    model = load_model("mislnet_small", 64).eval()
    x = patches(3, 64).unsqueeze(1)
    with torch.no_grad():
        ref = model.forward_features(x, ["conv2.post", "fc_a2.pre", "logits"])
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl.forward_features(x.contiguous(memory_format=torch.channels_last),
                                        ["conv2.post", "fc_a2.pre", "logits"])
    for k in ref:
        assert torch.allclose(ref[k], out[k], atol=1e-5), k


# ---------------------------------------------------------------- constrained layer and conv1 as one
@pytest.mark.parametrize("cin,size,k0,k1,stride,pad", [
    (1, 64, 5, 7, 2, 3),   # the quick recipe's first layers
    (3, 41, 5, 7, 2, 3),   # colour, odd size
    (1, 33, 3, 5, 1, 2),   # stride 1
    (2, 10, 5, 7, 2, 3),   # so small that every output reads padding
    (1, 24, 5, 3, 3, 0),   # no padding: no border outputs
])
def test_constrained_then_conv_is_the_two_layers(cin, size, k0, k1, stride, pad):
    """Values and both weights' gradients of the composed form equal the two convolutions
    (float64, constrained kernels as the layer keeps them), in both memory layouts."""
    g = torch.Generator().manual_seed(cin * size)
    constrained = project_constrained(torch.randn(3, cin, k0, k0, generator=g, dtype=torch.float64))
    conv = torch.randn(6, 3, k1, k1, generator=g, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.rand(4, cin, size, size, generator=g, dtype=torch.float64).contiguous(memory_format=layout)
        w0, w1 = constrained.clone().requires_grad_(), conv.clone().requires_grad_()
        v0, v1 = constrained.clone().requires_grad_(), conv.clone().requires_grad_()
        ref = F.conv2d(F.conv2d(x, w0), w1, stride=stride, padding=pad)
        out = constrained_then_conv(x, v0, v1, stride, pad)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
        up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        (ref * up).sum().backward()
        (out * up).sum().backward()
        assert torch.allclose(v0.grad, w0.grad, atol=1e-10) and torch.allclose(v1.grad, w1.grad, atol=1e-10)
    xg = x.clone().requires_grad_()  # a gradient for the image too (saliency, attacks): the two layers
    constrained_then_conv(xg, constrained, conv, stride, pad).sum().backward()
    xr = x.clone().requires_grad_()
    F.conv2d(F.conv2d(xr, constrained), conv, stride=stride, padding=pad).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-12)


@pytest.mark.parametrize("name,size,cin", [("mislnet_small_jpeg", 64, 1), ("mislnet_small", 48, 3)])
def test_composed_first_layers_train_as_the_model(name, size, cin):
    """compose_first_layers: the same logits and gradients in training (float64); evaluation and a
    read of layer ``constrained`` run the two layers themselves."""
    plain = load_model(name, size, in_channels=cin).double().train()
    composed = copy.deepcopy(plain)
    composed.compose_first_layers = True
    x = torch.randint(0, 256, (5, cin, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a, b = plain(x), composed(x)
    assert torch.allclose(a, b, atol=1e-10)
    a.square().sum().backward()
    b.square().sum().backward()
    for (n, p), q in zip(plain.named_parameters(), composed.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-12), n
    composed.load_state_dict(plain.state_dict())  # the same running statistics, not just equal up to rounding
    for model in (plain, composed):
        model.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), composed(x))
    composed.train()
    feats = composed.forward_features(x, ["constrained", "logits"])
    assert torch.equal(feats["constrained"], plain.train().forward_features(x, ["constrained"])["constrained"])
    with torch.autocast("cpu", torch.bfloat16):  # mixed precision (trainer.precision=bf16-mixed): the two layers
        half = copy.deepcopy(composed).float()(x)
    half.float().sum().backward()


@pytest.mark.parametrize("pool,momentum,layout", [
    (nn.MaxPool2d(3, 2), 0.1, torch.channels_last),       # the recipe's blocks
    (nn.MaxPool2d(3, 2), None, torch.contiguous_format),  # cumulative running average
    (nn.MaxPool2d(2, 2, padding=1, ceil_mode=True), 0.3, torch.channels_last),
])
def test_batch_norm_max_pool_is_the_pair(pool, momentum, layout):
    """Training-mode batch norm then max pooling as one step: the pair's values and running
    statistics bit for bit, the input's and both affine parameters' gradients up to rounding
    (float64), negative scales among the channels."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 5, 13, 11, generator=g, dtype=torch.float64) * 2 + 1).contiguous(memory_format=layout)
    ref_bn = nn.BatchNorm2d(5, momentum=momentum).double()
    with torch.no_grad():
        ref_bn.weight.copy_(torch.tensor([1.5, -0.7, 0.2, -2.0, 1.0]))
        ref_bn.bias.copy_(torch.randn(5, generator=g))
    bn = copy.deepcopy(ref_bn)
    assert fusable(bn, pool)
    for _ in range(2):  # the running statistics over two batches
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref, out = pool(ref_bn(xa)), batch_norm_max_pool(xb, bn, pool)
        assert torch.equal(out, ref)
        up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        (ref * up).sum().backward()
        (out * up).sum().backward()
        assert torch.allclose(xb.grad, xa.grad, atol=1e-12)
        x = x * 0.5 + 0.3
    for a, b in ((bn.weight.grad, ref_bn.weight.grad), (bn.bias.grad, ref_bn.bias.grad)):
        assert torch.allclose(a, b, atol=1e-11)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(bn, name), getattr(ref_bn, name)), name
    assert not fusable(nn.BatchNorm2d(5, affine=False), pool) and not fusable(bn, nn.AvgPool2d(3, 2))


def test_fused_batch_norm_pool_trains_as_the_model(monkeypatch):
    """fuse_batch_norm_pool (with the composed first layers, as Phase A trains): the model's
    logits, every parameter's gradient and the running statistics of the plain model (float64),
    through the fused step in each of conv1-3; a read of ``convK.pre`` takes the pair itself."""
    calls = []

    def counted(x, bn, pool):
        calls.append(bn)
        return batch_norm_max_pool(x, bn, pool)

    monkeypatch.setattr(backbone_module, "batch_norm_max_pool", counted)
    plain = load_model("mislnet_small_jpeg", 64).double().train()
    fused = copy.deepcopy(plain)
    fused.compose_first_layers = fused.fuse_batch_norm_pool = True
    x = torch.randint(0, 256, (6, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a, b = plain(x), fused(x)
    assert len(calls) == 3 and torch.allclose(a, b, atol=1e-10)
    a.square().sum().backward()
    b.square().sum().backward()
    for (n, p), q in zip(plain.named_parameters(), fused.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-8, atol=1e-12), n
    for (n, s), t in zip(plain.named_buffers(), fused.buffers()):
        assert torch.allclose(s.double(), t.double(), rtol=1e-12, atol=1e-14), n
    calls.clear()
    fused.forward_features(x, ["conv1.pre", "logits"])
    assert len(calls) == 2  # conv2, conv3
    fused.eval()
    with torch.no_grad():
        fused(x)
    assert len(calls) == 2  # evaluation runs the pair
    # a batch norm frozen in training (set to eval) normalises by its running statistics: not fused
    fused = copy.deepcopy(plain).train()   # the same running statistics as plain's
    fused.compose_first_layers = fused.fuse_batch_norm_pool = True
    for m in (fused, plain):
        m.blocks["conv2"].bn.eval()
    calls.clear()
    with torch.no_grad():
        assert torch.allclose(fused(x), plain(x), atol=1e-10)
    assert len(calls) == 2  # conv1, conv3


def test_composed_first_layers_need_the_pair():
    model = load_model("plain_cnn", 64)
    with pytest.raises(ValueError, match="constrained layer followed by a conv block"):
        model.compose_first_layers = True
    dilated = small_backbone()
    dilated.blocks["conv1"].conv.dilation = (2, 2)
    with pytest.raises(ValueError, match="no groups or dilation"):
        dilated.compose_first_layers = True
    assert not model.compose_first_layers and not dilated.compose_first_layers
    biased = small_backbone()
    biased.constrained.bias = torch.nn.Parameter(torch.full((biased.constrained.out_channels,), 0.7))
    with pytest.raises(ValueError, match="without a bias"):
        biased.compose_first_layers = True


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_pooling_before_a_monotone_activation_changes_nothing(activation):
    """Max pooling commutes with tanh / ReLU: pooling first (the fast order) gives the values and
    gradients of conv → bn → act → pool, in training mode (batch statistics) and in eval mode."""
    import copy

    model = instantiate(OmegaConf.load(CONF / "model" / "mislnet_small.yaml"), num_classes=5, patch_size=64,
                        activation=activation)
    assert [b.pool_first for b in model.blocks.values()] == [True, True, True, False]  # conv4: avg pool
    slow = copy.deepcopy(model)
    for b in slow.blocks.values():
        b.pool_first = False
    x, y = patches(8, 64).unsqueeze(1), torch.arange(8) % 5
    for m in (model, slow):
        m.train()
        nn.functional.cross_entropy(m(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), slow.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    model.eval()
    slow.eval()
    with torch.no_grad():
        for layer in ("conv1.pool", "conv3.pool", "fc_a2.pre", "logits"):
            assert torch.allclose(model.features(x, layer), slow.features(x, layer), atol=1e-5), layer
        # reading the un-pooled activation takes the original order
        assert torch.allclose(model.features(x, "conv1.post"), slow.features(x, "conv1.post"), atol=1e-6)


def test_gelu_is_not_pooled_first():
    model = small_backbone(activation="gelu")
    assert not any(b.pool_first for b in model.blocks.values())


@pytest.mark.parametrize("jpeg", [None, {"coefficients": 9}])
def test_forward_traces_without_graph_breaks(jpeg):
    torch._dynamo.reset()
    model = small_backbone(jpeg=jpeg).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = patches(2, 32)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


def test_count_flops_mislnet():
    model = load_model("mislnet", 64)
    model.train()
    before = model.blocks["conv1"].bn.running_mean.clone()
    flops = count_flops(model, 64)
    assert model.training  # mode restored, BN stats untouched
    assert torch.equal(before, model.blocks["conv1"].bn.running_mean)
    # hand count at 64 px: 2 * MACs of the convs and linears
    macs = (60 * 60 * 3 * 25 + 30 * 30 * 96 * 3 * 49 + 14 * 14 * 64 * 96 * 25 + 6 * 6 * 64 * 64 * 25
            + 2 * 2 * 128 * 64 + 128 * 200 + 200 * 200 + 200 * 5)
    assert flops == 2 * macs


# ---------------------------------------------------------------- similarity head
@pytest.mark.parametrize("path", SIM_FILES, ids=lambda p: p.stem)
def test_similarity_yaml_instantiates(path):
    net = instantiate(OmegaConf.load(path), in_features=20).eval()
    f1, f2 = torch.randn(5, 20), torch.randn(5, 20)
    assert net(f1, f2).shape == (5,)


def test_paper_similarity_yaml_is_the_paper_head():
    net = instantiate(OmegaConf.load(CONF / "similarity" / "paper.yaml"), in_features=200)
    assert net.branch[0].in_features == 200 and net.branch[0].out_features == 1024
    assert isinstance(net.branch[1], nn.PReLU) and net.branch[2].p == 0.5
    assert net.head_in.in_features == 2048 and net.head_in.out_features == 64
    assert net.combine == "concat"


@pytest.mark.parametrize("combine", COMBINE_MODES)
@pytest.mark.parametrize("hidden", [[8], [8, 6], []])
def test_score_matrix_agrees_with_pairwise_forward(combine, hidden):
    torch.manual_seed(0)
    net = SimilarityNet(12, branch=[16], combine=combine, hidden=hidden).eval()
    F, G = torch.randn(7, 12), torch.randn(5, 12)
    with torch.no_grad():
        S = net.score_matrix(F, G, batch=3)
        ii, jj = torch.meshgrid(torch.arange(7), torch.arange(5), indexing="ij")
        ref = torch.sigmoid(net(F[ii.flatten()], G[jj.flatten()])).reshape(7, 5)
        assert S.shape == (7, 5)
        assert torch.allclose(S, ref, atol=1e-5)
        S_self = net.score_matrix(F, batch=4, logits=True)
        ref_self = net(F.repeat_interleave(7, 0), F.repeat(7, 1)).reshape(7, 7)
        assert torch.allclose(S_self, ref_self, atol=1e-5)


def test_combine_modes_symmetry():
    torch.manual_seed(0)
    f1, f2 = torch.randn(4, 10), torch.randn(4, 10)
    sym = SimilarityNet(10, branch=[8], combine="absdiff").eval()
    asym = SimilarityNet(10, branch=[8], combine="concat").eval()
    with torch.no_grad():
        assert torch.allclose(sym(f1, f2), sym(f2, f1))
        assert not torch.allclose(asym(f1, f2), asym(f2, f1))


def test_similarity_dropout_only_in_training():
    torch.manual_seed(0)
    net = SimilarityNet(10, branch=[64], dropout=0.5)
    f1, f2 = torch.randn(8, 10), torch.randn(8, 10)
    assert not torch.allclose(net(f1, f2), net(f1, f2))
    net.eval()
    assert torch.equal(net(f1, f2), net(f1, f2))


def test_similarity_learns_and_bad_input_raises():
    torch.manual_seed(0)
    net = SimilarityNet(4, branch=[16], hidden=[8], dropout=0.0)
    with pytest.raises(ValueError, match="f2"):
        net(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="combine"):
        SimilarityNet(4, combine="sum")
    # toy: same iff the two features share their sign pattern in dim 0
    f1, f2 = torch.randn(256, 4), torch.randn(256, 4)
    y = ((f1[:, 0] > 0) == (f2[:, 0] > 0)).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(net(f1, f2), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.3


@pytest.mark.parametrize("combine", ["concat", "concat_mul", "absdiff"])
def test_score_pairs_equals_pairwise_forward(combine):
    torch.manual_seed(0)
    net = SimilarityNet(in_features=12, branch=[16], combine=combine, hidden=[8]).eval()
    F = torch.randn(30, 12)
    i = torch.randint(0, 30, (200,))
    j = torch.randint(0, 30, (200,))
    with torch.no_grad():
        fast = net.score_pairs(F, i, j, batch=64)
        ref = torch.sigmoid(net(F[i], F[j]))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="index vectors"):
        net.score_pairs(F, i, j[:10])


# --------------------------------------------------------------------------- JPEG branch


def test_dct_basis_is_orthonormal_and_zigzag_is_jpegs():
    basis = dct_basis().reshape(64, 64).double()
    assert torch.allclose(basis @ basis.T, torch.eye(64, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(basis[0], torch.full((64,), 1 / 8, dtype=torch.float64), atol=1e-7)  # DC
    # ITU T.81 figure 5, as row-major indices u*8 + v
    assert zigzag()[:15] == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4]
    assert sorted(zigzag()) == list(range(64)) and zigzag()[-1] == 63


def test_soft_histogram_hand_computed():
    # bins -2..2; 0.25 splits 0.75 / 0.25 between bins 0 and 1; 5 is clipped into bin 2
    h = soft_histogram(torch.tensor([[[0.0, 0.25, -2.0, 5.0]]]), half_range=2)
    assert torch.allclose(h, torch.tensor([[[0.25, 0.0, 0.4375, 0.0625, 0.25]]]))


def _jpeg_patch(quality: int, seed: int = 0) -> torch.Tensor:
    """A 64-px grayscale patch of mild noise around mid-grey, JPEG-compressed and decoded."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.clip(128 + rng.normal(0, 6, (64, 64)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")).copy())


def test_jpeg_branch_sees_the_quantisation_lattice():
    """At quality 50 the first AC coefficient (table step 11) sits on multiples of 11; at
    quality 95 (step 1) it does not: the histograms a camera's JPEG settings leave."""
    branch = DCTHistogram(coefficients=1, half_range=15)
    on_lattice = [i + 15 for i in (-12, -11, -10, -1, 0, 1, 10, 11, 12)]
    for quality, expect_lattice in ((50, True), (95, False)):
        hist = branch(_jpeg_patch(quality).float().reshape(1, 1, 64, 64) / 255)
        assert hist.shape == (1, 31) and torch.isclose(hist.sum(), torch.tensor(1.0))
        share = float(hist[0, on_lattice].sum())
        assert (share > 0.95) == expect_lattice, (quality, share)


def test_jpeg_branch_of_rgb_patches_reads_the_luma_the_encoder_quantised():
    """in_channels=3: the branch reads Y (BT.601), where a colour JPEG's luma lattice lies; the green
    channel, a mix of luma and chroma, shows it far less. A grey patch gives the green branch's histograms."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([128 + 20 * np.sin(xx / 6), 120 + 0 * xx, 100 + 15 * np.cos(yy / 5)], -1) + rng.normal(0, 6, (64, 64, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=50, subsampling=0)
    x = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()).permute(2, 0, 1)
    x = x[None].float() / 255
    on_lattice = [i + 15 for i in (-12, -11, -10, -1, 0, 1, 10, 11, 12)]
    luma = float(DCTHistogram(3, coefficients=1, half_range=15)(x)[0, on_lattice].sum())
    green = float(DCTHistogram(1, coefficients=1, half_range=15)(x[:, 1:2])[0, on_lattice].sum())
    assert luma > 0.6 and luma > 1.5 * green, (luma, green)
    grey = _jpeg_patch(50).float().reshape(1, 1, 64, 64) / 255
    torch.testing.assert_close(DCTHistogram(3)(grey.expand(1, 3, 64, 64)), DCTHistogram(1)(grey))
    with pytest.raises(ValueError, match="in_channels"):
        DCTHistogram(2)


def test_rgb_backbone_takes_three_channel_patches():
    model = load_model("mislnet_small_jpeg", 64, num_classes=4, in_channels=3).eval()
    assert model.feature_dim("jpeg") == 27 * 31  # one luma plane, not three
    with torch.no_grad():
        assert model(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)).shape == (2, 4)
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8))


def test_jpeg_branch_dropout_drops_whole_patches_in_training_only():
    model = load_model("mislnet_small_jpeg", 64, num_classes=6, jpeg={"coefficients": 27, "half_range": 15,
                                                                      "dropout": 0.5})
    x = patches(64, 64)
    model.eval()
    with torch.no_grad():
        full = model.features(x, "fc_a1.pre")
        from_hist = model.fcs["fc_a1"].weight[:, 128:] @ model.jpeg_norm(model.features(x, "jpeg")).T
        without = full - from_hist.T  # fc_a1 with every patch's normalised histograms at zero
        again = model.features(x, "fc_a1.pre")
    assert torch.equal(full, again)  # evaluation: no dropout
    model.train()
    for m in model.modules():  # batch norm in eval mode too, so each patch's row depends on it alone
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        trained = model.features(x, "fc_a1.pre")
    kept = torch.isclose(trained, full, atol=1e-5).all(1)
    dropped = torch.isclose(trained, without, atol=1e-5).all(1)
    assert bool((kept ^ dropped).all())  # every patch: all of its histograms or none
    assert 16 <= int(dropped.sum()) <= 48  # about half of 64
    with pytest.raises(ValueError, match=r"jpeg.dropout.*\[0, 1\)"):
        small_backbone(jpeg={"coefficients": 5, "dropout": 1.0})
    with pytest.raises(ValueError, match="jpeg.dropout"):
        small_backbone(jpeg={"coefficients": 5, "dropout": -0.1})


def test_backbone_with_jpeg_branch():
    model = load_model("mislnet_small_jpeg", 64, num_classes=6).eval()
    assert model.feature_dim("jpeg") == 27 * 31
    assert model.fcs["fc_a1"].in_features == 128 + 27 * 31
    x = patches(3, 64)
    with torch.no_grad():
        feats = model.forward_features(x, ["jpeg", "fc_a2.pre"])
        assert torch.allclose(feats["jpeg"].sum(1), torch.full((3,), 27.0))  # 27 histograms, each sums to 1
        assert model(x).shape == (3, 6)
        # the branch feeds fc_a1: changing the histograms changes the feature
        model.fcs["fc_a1"].weight.data[:, 128:] = 0
        assert not torch.allclose(model.features(x), feats["fc_a2.pre"])
    with pytest.raises(ValueError, match="jpeg.*multiple of 8"):
        small_backbone(patch_size=36, jpeg={"coefficients": 5})
    with pytest.raises(ValueError, match="jpeg.*coeficients"):
        small_backbone(jpeg={"coeficients": 5})
    with pytest.raises(ValueError, match="jpeg.coefficients"):
        small_backbone(jpeg={"coefficients": 64})
