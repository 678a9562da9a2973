"""Constrained convolution of Bayar & Stamm (docs/method.md, "Learning Phase A").

Every 2-D kernel slice ``w = weight[o, i]`` is kept on the constraint set

    w(0, 0) = -1 at the centre,    sum of the other k*k - 1 weights = 1,

so the layer computes a learned prediction error (neighbourhood prediction minus the
centre pixel) and suppresses scene content. The constraint is enforced by a
projection applied at init and after every optimiser step: the off-centre weights are
divided by their sum (not shifted by a mean, which would leave the sum != 1 after
rescaling) and the centre is set to -1.

The projection acts on the weights, never inside ``forward``, so training and
evaluation run the very same (constrained) kernels. It is idempotent, hence safe to
call after every batch under gradient accumulation, and deterministic, hence every DDP
rank (which holds identical all-reduced weights) projects to identical weights.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConstrainedConv2d",
    "check_composable",
    "constrained_then_conv",
    "constraint_violation",
    "project_constrained",
    "project_constrained_layers_",
]


def _check_kernel_shape(shape: torch.Size | tuple[int, ...], what: str = "weight") -> int:
    """Return the kernel size k of a ``[out, in, k, k]`` shape; raise ValueError otherwise."""
    if len(shape) != 4:
        raise ValueError(f"{what}: expected a 4-D conv weight [out, in, k, k], got shape {tuple(shape)}")
    kh, kw = int(shape[-2]), int(shape[-1])
    if kh != kw or kh % 2 == 0 or kh < 3:
        raise ValueError(
            f"{what}: constrained kernels must be square with an odd size >= 3 (they need a "
            f"centre and off-centre weights), got {kh}x{kw}"
        )
    return kh


def project_constrained(weight: Tensor, eps: float = 1e-6) -> Tensor:
    """Project conv weights ``[out, in, k, k]`` onto the Bayar & Stamm constraint set.

    For every 2-D slice ``weight[o, i]``: the centre becomes -1 and the off-centre
    weights are divided by their sum s, so they sum to 1 up to the rounding of the
    weight dtype (float64 arithmetic where the device has it; the rounding residual is
    then moved onto the smallest off-centre weight, so float32 kernels sum to 1 within
    ~1e-9 even when dividing by a small s made their weights large).

    Degenerate case: the projection is undefined for s = 0 and explodes for s close to 0.
    When ``|s| <= eps * sum(|off-centre weights|)`` (a scale-free test, like the
    projection itself; it includes an all-zero slice) the off-centre weights are reset
    to the uniform predictor ``1 / (k*k - 1)`` -- the mean of the neighbours, a valid
    point of the constraint set. Otherwise a negative s is divided out like any other
    (the constraint fixes the sum, not the signs).

    Pure: returns a new tensor of ``weight``'s dtype, device and shape.
    """
    k = _check_kernel_shape(weight.shape)
    if not eps >= 0:
        raise ValueError(f"eps: must be >= 0, got {eps}")
    out_ch, in_ch = int(weight.shape[0]), int(weight.shape[1])
    acc = torch.float32 if weight.device.type == "mps" else torch.float64
    w = weight.to(acc).reshape(out_ch, in_ch, k * k)
    centre = (k // 2) * k + k // 2
    off_mask = torch.ones(k * k, dtype=acc, device=w.device)
    off_mask[centre] = 0.0
    off = w * off_mask
    s = off.sum(dim=-1, keepdim=True)
    l1 = off.abs().sum(dim=-1, keepdim=True)
    degenerate = s.abs() <= eps * l1
    safe_s = torch.where(degenerate, torch.ones_like(s), s)
    uniform = off_mask / (k * k - 1)
    off = torch.where(degenerate, uniform.expand_as(off), off / safe_s)
    projected = (off * off_mask - (1.0 - off_mask)).to(weight.dtype)  # centre = -1
    if projected.dtype != acc:
        # Rounding to the weight dtype moves the sum by up to ~k*k ulps of the largest
        # weight (large when s was small). Put the exact residual on the off-centre weight
        # of smallest magnitude, whose ulp is the finest; twice, as that rounds again.
        big = torch.tensor(float("inf"), dtype=acc, device=w.device)
        for _ in range(2):
            cur = projected.to(acc) * off_mask
            residual = 1.0 - cur.sum(dim=-1, keepdim=True)
            idx = torch.where(off_mask.bool(), cur.abs(), big).argmin(dim=-1, keepdim=True)
            fixed = cur.gather(-1, idx) + residual
            projected = projected.scatter(-1, idx, fixed.to(projected.dtype))
    return projected.reshape(weight.shape)


def constraint_violation(weight: Tensor) -> tuple[float, float]:
    """Largest |centre + 1| and largest |off-centre sum - 1| over all 2-D slices."""
    k = _check_kernel_shape(weight.shape)
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], weight.shape[1], k * k)
    centre = (k // 2) * k + k // 2
    c = w[..., centre]
    s = w.sum(dim=-1) - c
    return float((c + 1).abs().max()), float((s - 1).abs().max())


class ConstrainedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose kernels satisfy the Bayar & Stamm constraint.

    No bias by default (a prediction-error filter has none; the authors' code has none).
    Weights are projected at construction and by ``project_()``; the training loop must
    call ``project_()`` (or ``project_constrained_layers_(model)``) after every
    optimiser step. ``eps`` is the degenerate-sum tolerance of ``project_constrained``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        eps: float = 1e-6,
    ) -> None:
        if isinstance(kernel_size, (tuple, list)):
            raise ValueError(f"kernel_size: constrained kernels are square, give one int, got {kernel_size}")
        _check_kernel_shape((out_channels, in_channels, kernel_size, kernel_size), "kernel_size")
        self.eps = eps
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)

    def reset_parameters(self) -> None:  # called by nn.Conv2d.__init__
        super().reset_parameters()
        self.project_()

    @torch.no_grad()
    def project_(self) -> ConstrainedConv2d:
        """Project the weights onto the constraint set in place (no autograd); returns self."""
        self.weight.copy_(project_constrained(self.weight, eps=getattr(self, "eps", 1e-6)))
        return self

    def extra_repr(self) -> str:
        return super().extra_repr() + ", constrained=True"


@torch.no_grad()
def project_constrained_layers_(module: nn.Module) -> int:
    """Project every ``ConstrainedConv2d`` inside ``module`` (in place); return how many.

    Meant for the LightningModule, after each optimiser step, e.g. in
    ``on_before_zero_grad`` or ``on_train_batch_end``: one line, idempotent.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, ConstrainedConv2d):
            m.project_()
            n += 1
    return n


# ---------------------------------------------------------------- the first two layers as one
@torch.compiler.disable  # index tables, built once per shape: nothing for a compiled graph to trace
@functools.lru_cache(maxsize=64)
def _composition_plan(cin: int, h: int, w: int, k0: int, k1: int, stride: int, pad: int) -> dict:
    """Index tables of :func:`constrained_then_conv` for one input shape (CPU tensors)."""
    def tap_masks(n_in: int, n_out: int) -> Tensor:  # [n_out, k1]: tap q of output i reads a real input
        r = stride * torch.arange(n_out)[:, None] - pad + torch.arange(k1)[None, :]
        return (r >= 0) & (r < n_in)

    h0, w0 = h - k0 + 1, w - k0 + 1  # the constrained layer's (valid) output
    ho, wo = (h0 + 2 * pad - k1) // stride + 1, (w0 + 2 * pad - k1) // stride + 1
    kk, he, we = k0 + k1 - 1, h + 2 * pad, w + 2 * pad
    row_masks, col_masks = tap_masks(h0, ho), tap_masks(w0, wo)
    rows, row_of = torch.unique(row_masks, dim=0, return_inverse=True)
    cols, col_of = torch.unique(col_masks, dim=0, return_inverse=True)
    masks = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, k1 * k1)
    kind = row_of[:, None] * len(cols) + col_of[None, :]  # each output's mask; -1 where every tap reads the image
    kind[row_masks.all(1)[:, None] & col_masks.all(1)[None, :]] = -1
    kind = kind.flatten()
    groups = [(m, (kind == m).nonzero().flatten()) for m in range(len(masks))]
    groups = [(m, pos) for m, pos in groups if len(pos)]
    border = torch.cat([pos for _, pos in groups]) if groups else torch.zeros(0, dtype=torch.long)
    i, j = border // wo, border % wo  # each border output's kk x kk window of the padded input
    r = (stride * i)[:, None, None, None] + torch.arange(kk)[None, None, :, None]
    c = (stride * j)[:, None, None, None] + torch.arange(kk)[None, None, None, :]
    window = torch.arange(cin)[None, :, None, None] * he * we + r * we + c  # [border, cin, kk, kk]
    # tap-major ([cin * kk * kk, border]): one mask's outputs are a [taps, outputs x batch] view
    window = window.reshape(len(border), cin * kk * kk).t().flatten()
    q, s = torch.arange(k1), torch.arange(k0)  # conv tap (a, b) after constrained tap (u, v) -> (a + u, b + v)
    row, col = q[:, None, None, None] + s[None, None, :, None], q[None, :, None, None] + s[None, None, None, :]
    where = (row * kk + col).reshape(k1 * k1, k0 * k0)
    # each border output's conv taps that read padding (the image's mean does not reach it through them)
    lost = torch.cat([(~masks[m]).expand(len(pos), -1) for m, pos in groups]) if groups \
        else torch.zeros(0, k1 * k1, dtype=torch.bool)
    return {"masks": torch.cat([masks, torch.ones(1, k1 * k1, dtype=torch.bool)]), "lost": lost,
            "counts": [(m, len(pos)) for m, pos in groups], "border": border, "window": window,
            "where": where, "kk": kk}


def check_composable(constrained: nn.Module | None, conv: nn.Module | None) -> None:
    """Raise ValueError unless :func:`constrained_then_conv` can stand for ``conv(constrained(x))``."""
    if not isinstance(constrained, ConstrainedConv2d) or not isinstance(conv, nn.Conv2d):
        raise ValueError("compose_first_layers: needs a constrained layer followed by a conv block")
    if constrained.bias is not None:
        raise ValueError("compose_first_layers: needs a constrained layer without a bias (the composed "
                         "kernels carry no bias through conv1)")
    if (constrained.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1)
            or conv.stride[0] != conv.stride[1] or not isinstance(conv.padding, tuple)
            or conv.padding[0] != conv.padding[1] or {conv.padding_mode, constrained.padding_mode} != {"zeros"}):
        raise ValueError("compose_first_layers: needs a stride-1 constrained layer and a plain conv1 "
                         "(one stride and padding for both axes, zero padding, no groups or dilation)")


class _ComposedConv(torch.autograd.Function):
    """The composed kernels on the padded image: the interior kernel as one convolution, each
    border mask's kernel as a matrix product on its outputs' windows. Gradients go to the
    kernels only (the image needs none); written out so that no full-size copy of the output or
    its gradient is made (autograd's slice and index assignments made three)."""

    @staticmethod
    def forward(ctx, xp: Tensor, kernels: Tensor, dc: Tensor, conv: Tensor, plan: dict, stride: int) -> Tensor:
        n, cin = xp.shape[:2]
        out_c, kk, dev = kernels.shape[1], plan["kk"], xp.device
        inner = kernels[-1].reshape(out_c, cin, kk, kk)
        # channels_last strides, even for one input channel: mkldnn then writes NHWC, 2-3x faster here
        inner = torch.empty_strided(inner.shape, (cin * kk * kk, 1, kk * cin, cin), dtype=inner.dtype,
                                    device=dev).copy_(inner)
        y = F.conv2d(xp, inner, stride=stride).contiguous(memory_format=torch.channels_last)
        # each border output's window, tap-major: [cin * kk * kk, border outputs, n]
        rows = xp.permute(1, 2, 3, 0).reshape(-1, n).contiguous()  # one row per input pixel: a gather of rows
        windows = rows.index_select(0, plan["window"].to(dev)).view(cin * kk * kk, len(plan["border"]), n)
        values, start = [], 0
        for m, count in plan["counts"]:  # [outputs x batch, out_c] of each mask's outputs
            part = windows[:, start:start + count].reshape(len(windows), -1)
            values.append(part.t() @ kernels[m].reshape(out_c, -1).t())
            start += count
        index = plan["border"].to(dev)
        if values:  # none where conv1 reads no padding
            _positions(y).index_copy_(1, index, torch.cat(values).view(-1, n, out_c).transpose(0, 1))
        ctx.save_for_backward(xp, inner, windows, index, conv)
        ctx.plan, ctx.stride = plan, stride
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        xp, inner, windows, index, conv = ctx.saved_tensors
        plan, out_c = ctx.plan, grad.shape[1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        g = _positions(grad).index_select(1, index).transpose(0, 1).contiguous()  # [border, n, out_c]
        full = torch.ops.aten.convolution_backward(grad, xp, inner, None, [ctx.stride] * 2, [0, 0], [1, 1], False,
                                                   [0, 0], 1, [False, True, False])[1]
        grads, start = windows.new_zeros(len(plan["masks"]), out_c, len(windows)), 0
        for m, count in plan["counts"]:  # each border mask's kernel: its outputs' gradients x their windows
            part = slice(start, start + count)
            grads[m] = g[part].reshape(-1, out_c).t() @ windows[:, part].reshape(len(windows), -1).t()
            start += count
        # the interior kernel's gradient over the interior only: the full one less the border's share
        grads[-1] = full.reshape(out_c, -1) - grads[:-1].sum(0)
        # d/d dc (see below): the image's mean reaches an output through every conv tap that reads a
        # real input — all of them (sum of conv's kernel) but at the border, whose lost taps are taken off
        taps = conv.reshape(out_c, conv.shape[1], -1)
        lost = torch.einsum("ocq,bq->boc", taps, plan["lost"].to(grad.device, grad.dtype))
        g_dc = grad.sum(dim=(2, 3)) @ taps.sum(-1) - torch.bmm(g, lost).sum(0)
        return None, grads.view(len(plan["masks"]), out_c, -1, plan["kk"] * plan["kk"]), g_dc, None, None, None


def _positions(t: Tensor) -> Tensor:
    """A channels_last ``[n, c, h, w]`` as its ``[n, h*w, c]`` view (one row per output position)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n, h * w, c)


def constrained_then_conv(x: Tensor, constrained: Tensor, conv: Tensor, stride: int, padding: int) -> Tensor:
    """``conv2d(conv2d(x, constrained), conv, stride, padding)`` computed as one convolution.

    The constrained layer (valid, stride 1, no bias) and the first conv block's convolution are
    both linear, so where conv reads no padding they are one ``k0 + k1 - 1`` kernel on the
    image: the constrained layer's output, and its input gradient through the next convolution,
    are never formed (the image needs no gradient). Near the border conv reads its own zero
    padding, which is not the composition of anything; each border output is computed with
    the composed kernel of the taps that read real values (a handful of masks, one matrix
    product each). For constrained kernels (each sums to 0, as the projection keeps them) it is
    exact up to fp32 rounding in values and in both weights' gradients (tests/test_models.py,
    tests/test_bench.py); its output is channels_last. An image that needs a gradient itself
    takes the two convolutions.
    """
    if x.requires_grad:
        return F.conv2d(F.conv2d(x, constrained), conv, stride=stride, padding=padding)
    n, cin, h, w = x.shape
    out_c, mid_c, k1 = conv.shape[0], conv.shape[1], conv.shape[-1]
    k0 = constrained.shape[-1]
    plan = _composition_plan(cin, h, w, k0, k1, int(stride), int(padding))
    dev, kk = x.device, plan["kk"]
    # every pair of taps' product at its tap of the composed kernel, then one kernel per mask
    prod = torch.einsum("ocq,cis->oiqs", conv.reshape(out_c, mid_c, -1), constrained.reshape(mid_c, cin, -1))
    per_tap = prod.new_zeros(out_c, cin, k1 * k1, kk * kk).scatter(
        3, plan["where"].to(dev).expand(out_c, cin, -1, -1), prod)
    kernels = torch.einsum("mq,oiqt->moit", plan["masks"].to(dev, per_tap.dtype), per_tap)
    # Constrained kernels sum to 0, so the image's mean adds nothing to any output: it is taken
    # out before the composed kernels (whose gradients it would otherwise swamp with rounding)
    # and given back to the constrained kernels' gradient through ``dc`` (value 0 up to the
    # constraint's rounding, so the forward leaves it out)
    mean = x.mean(dim=(2, 3))
    dc = torch.einsum("ni,ci->nc", mean, constrained.sum(dim=(2, 3)))
    return _ComposedConv.apply(F.pad(x - mean[:, :, None, None], (padding,) * 4), kernels, dc, conv, plan, int(stride))
