"""Batch norm and max pooling of a conv block as one step, in training (a CPU speed path).

The forward is torch's own pair, bit for bit — the batch norm (batch statistics, running
statistics updated) and the max pooling of its output, whose window maxima and indices it keeps —
but the normalised full-size tensor is not kept for the backward. The backward is one dense pass
instead of five (the pooling's zero fill and scatter, the batch norm's two reads of two full-size
tensors and its write): with ``s = weight / sqrt(var + eps)``,

    dL/dx = s * scatter(g) - s * mean(g_y) - s * x_hat * mean(g_y * x_hat),

where ``scatter(g)`` puts each pooled gradient at its window's maximum and both means over the
batch come from the pooled positions alone (``g_y``, the gradient of the normalised tensor, is
zero elsewhere). The same maths as torch's backward up to fp32 rounding (``tests/test_models.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["batch_norm_max_pool", "fusable"]


def fusable(bn: nn.Module, pool: nn.Module) -> bool:
    """Whether :func:`batch_norm_max_pool` can stand for ``pool(bn(x))`` in training: an affine
    BatchNorm2d in training mode (batch statistics; one set to eval, i.e. frozen, normalises by its
    running ones) that tracks running statistics, and a max pool without dilation or indices."""
    return (type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats and bn.training
            and type(pool) is nn.MaxPool2d and pool.dilation in (1, (1, 1)) and not pool.return_indices)


class _BatchNormMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                factor: float, eps: float, pool: tuple) -> Tensor:
        y, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, factor,
                                                           eps)
        out, index = F.max_pool2d_with_indices(y, *pool)
        ctx.save_for_backward(x, index, mean, invstd, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, index, mean, invstd, weight = ctx.saved_tensors
        n, c = x.shape[:2]
        last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout, dim = (torch.channels_last, 1) if last else (torch.contiguous_format, 2)

        def planes(t: Tensor) -> Tensor:  # [n, positions, c] (channels_last) or [n, c, positions]
            return t.permute(0, 2, 3, 1).reshape(n, -1, c) if last else t.reshape(n, c, -1)

        per_c = (1, 1, c) if last else (1, c, 1)
        x_hat = (planes(x).gather(dim, planes(index)) - mean.view(per_c)) * invstd.view(per_c)  # at the maxima
        g_bias = g.sum(dim=(0, 2, 3))
        g_weight = (planes(g) * x_hat).sum(dim=(0, dim))
        count = x.numel() // c
        scale = weight * invstd
        slope = -scale * invstd * g_weight / count
        offset = -scale * g_bias / count - slope * mean
        gx = torch.addcmul(offset.view(1, -1, 1, 1), x, slope.view(1, -1, 1, 1)).contiguous(memory_format=layout)
        planes(gx).scatter_add_(dim, planes(index), planes(g * scale.view(1, -1, 1, 1)))  # a view of gx
        return gx, g_weight, g_bias, None, None, None, None, None


def batch_norm_max_pool(x: Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d) -> Tensor:
    """``pool(bn(x))`` in training mode (batch statistics; ``bn``'s running statistics and batch
    count updated as ``bn`` itself does) for a pair that :func:`fusable` accepts."""
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)  # stride: never None
    return _BatchNormMaxPool.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, factor, bn.eps, args)
