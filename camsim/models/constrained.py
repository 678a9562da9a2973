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

import torch
from torch import Tensor, nn

__all__ = [
    "ConstrainedConv2d",
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
