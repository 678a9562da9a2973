"""Phase B similarity head S(f(X1), f(X2)) (docs/method.md, "Learning Phase B").

f1, f2 -> shared branch (fc_b1 = fc_b2: Linear + PReLU + dropout, widths ``branch``)
-> combine -> hidden layers (fc_b3: Linear + PReLU, widths ``hidden``) -> 1 logit.
sigmoid(logit) = S in [0, 1]; the decision is S > eta (eta = 0.5).

``combine``:
- ``concat``: [g1, g2] (the paper; not symmetric in its two inputs);
- ``concat_mul``: [g1, g1 * g2, g2] (the authors' later code);
- ``absdiff``: |g1 - g2| (symmetric).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camsim.plain import to_plain
from camsim.models.backbone import _int, make_activation

__all__ = ["COMBINE_MODES", "FUSED_BLOCK", "BitDropout", "PReLU", "SimilarityNet", "dropout_mask"]

log = logging.getLogger(__name__)

COMBINE_MODES = ("concat", "concat_mul", "absdiff")
_INITS = ("xavier", "torch")
#: activations the fused pair kernel takes (elementwise on any shape)
_FUSABLE = (nn.PReLU, nn.ReLU, nn.Tanh, nn.GELU)
#: pairs per call of the compiled kernel (rows x columns; one static shape, the last blocks
#: zero-padded): 128 K pairs, ~8 M pre-activations at H = 64
FUSED_BLOCK = (256, 512)
#: pre-activations per block of concat_mul's GEMM path (``[rows, H, m]``, 16 MB of float32)
MUL_BLOCK = 1 << 22
#: the compiled kernel once per process ("fn"; None after a failed compile)
_FUSED: dict[str, Callable | None] = {}


def _pair_logits(a: Tensor, c: Tensor, act: nn.Module, w: Tensor, bias: Tensor, logits: bool) -> Tensor:
    """``Σ_h w_h act(a_ih + c_jh) + bias`` ``[n, m]`` of row terms ``a [n, H]``, ``c [m, H]`` (its
    sigmoid unless ``logits``): a concat head with one hidden layer on all pairs (compiled: the
    sum never leaves registers)."""
    z = (act(a[:, None, :] + c[None, :, :]) * w).sum(-1) + bias
    return z if logits else torch.sigmoid(z)


def _fused_kernel() -> Callable | None:
    """:func:`_pair_logits` under torch.compile (static shapes), or None once compiling failed."""
    if "fn" not in _FUSED:
        _FUSED["fn"] = torch.compile(_pair_logits, dynamic=False)
    return _FUSED["fn"]


def _disable_fused(err: Exception) -> None:
    _FUSED["fn"] = None
    log.warning("compiled pair scoring unavailable (%s: %s); scoring pairs eagerly",
                type(err).__name__, str(err).splitlines()[0] if str(err) else "")


def _pad_rows(x: Tensor, k: int) -> Tensor:
    return x if k == 0 else torch.cat([x, x.new_zeros(k, x.shape[1])])


@functools.lru_cache(maxsize=16)
def _mask_table(bits: int, p: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[256, 8/bits]``: the mask values (``1/(1 − p)`` or 0) of each byte's ``bits``-bit fields,
    least significant first; a field keeps its element when it is ≥ ``p·2^bits``."""
    fields = (torch.arange(256)[:, None] >> torch.arange(0, 8, bits)) & (2**bits - 1)
    return ((fields >= round(p * 2**bits)).to(dtype) * (1.0 / (1.0 - p))).to(device)


def dropout_mask(shape: Sequence[int], p: float, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Tensor | None:
    """Dropout's scaled keep mask (``1/(1 − p)`` kept, ``0`` dropped, ``P(keep) = 1 − p``) from ``b``
    random bits per element, the fewest of 1, 2, 4, 8 for which ``p·2^b`` is whole (the paper's
    0.5: one bit), drawn from torch's generator as 32-bit words; each random byte becomes its
    ``8/b`` mask values through a 256-row lookup table. None when no such ``b`` exists (``p`` not a
    multiple of 1/256): use torch's dropout. On CPU torch's dropout draws one Bernoulli variate per
    element (~11 ns each: 2.8 ms of a 256 × 1024 batch); this draws 1/32 of the words, and the table
    needs no per-element comparison (a boolean mask costs ~1 ns an element there)."""
    bits = next((b for b in (1, 2, 4, 8) if float(p * 2**b).is_integer()), None)
    if bits is None:
        return None
    n = int(np.prod(shape))
    nbytes = -(-n * bits // 8)
    words = torch.empty(-(-nbytes // 4), dtype=torch.int32, device=device).random_(-2**31, 2**31)
    rows = words.view(torch.uint8)[:nbytes].long()
    table = _mask_table(bits, float(p), dtype, torch.device(device))
    return table.index_select(0, rows).reshape(-1)[:n].reshape(tuple(shape))


class BitDropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from :func:`dropout_mask` on CPU (same maths and scaling
    ``1/(1 − p)``, another draw of the same distribution); torch's own on other devices and for
    a ``p`` that is not a multiple of 1/256. No state: checkpoints are those of ``nn.Dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        mask = dropout_mask(x.shape, self.p, x.dtype, x.device)
        return super().forward(x) if mask is None else x * mask


class _ScalarPReLU(torch.autograd.Function):
    """PReLU with one slope ``w``: torch's values, a backward without per-element branches.
    ``dx = g`` where ``x > 0``, else ``w·g``; ``dw = Σ g·min(x, 0)`` — the same products summed in
    the same order as torch's kernel, which picks per element and, on random signs, mispredicts
    (~3 ns an element on CPU: 0.8 ms of a 256 × 1024 batch, against ~0.3 ms here)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.nn.functional.prelu(x, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor]:
        x, w = ctx.saved_tensors
        pos = torch.ops.aten.threshold_backward  # its first argument where x > 0, else 0
        wg = w * g
        dx = pos(g, x, 0.0) + (wg - pos(wg, x, 0.0))
        dw = (x.clamp(max=0) * g).sum_to_size((1,) * x.dim()).reshape(w.shape)
        return dx, dw


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter, same checkpoints) whose backward in training on CPU, for one
    shared slope, is :class:`_ScalarPReLU`'s; torch's own otherwise (evaluation, export, GPUs)."""

    def forward(self, x: Tensor) -> Tensor:
        if (self.training and self.weight.numel() == 1 and x.device.type == "cpu" and x.dtype == self.weight.dtype
                and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return _ScalarPReLU.apply(x, self.weight)
        return super().forward(x)


def _activation(name: str) -> nn.Module:
    """prelu (one learned slope per layer) | tanh | relu | gelu."""
    if str(name).lower() == "prelu":
        return PReLU()
    return make_activation(name)


class SimilarityNet(nn.Module):
    """Similarity network of Phase B on top of frozen Phase A features.

    Args (all but ``in_features`` come from ``conf/similarity/*.yaml``):
        in_features: width of the feature f(X) (the backbone's ``feature_dim()``).
        branch: widths of the shared branch layers (paper: [1024]); each is Linear ->
            activation -> dropout.
        activation: prelu (paper) | tanh | relu | gelu, for branch and hidden layers.
        dropout: dropout probability on every branch layer's output (paper: 0.5).
        combine: concat | concat_mul | absdiff (see module docstring).
        hidden: widths of the layers after the combination (paper: [64]), each Linear
            -> activation; a final Linear gives the single logit.
        init: xavier (uniform, zero biases) | torch (PyTorch defaults).
    """

    def __init__(
        self,
        in_features: int,
        branch: Sequence[int] = (1024,),
        activation: str = "prelu",
        dropout: float = 0.5,
        combine: str = "concat",
        hidden: Sequence[int] = (64,),
        init: str = "xavier",
    ) -> None:
        super().__init__()
        branch, hidden = to_plain(branch), to_plain(hidden)
        self.in_features = _int(in_features, "in_features", 1)
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine: unknown {combine!r}; choose one of {list(COMBINE_MODES)}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        if str(init).lower() not in _INITS:
            raise ValueError(f"init: unknown {init!r}; choose one of {list(_INITS)}")
        if not isinstance(branch, list) or not branch:
            raise ValueError(f"branch: expected a non-empty list of widths, got {branch!r}")
        if not isinstance(hidden, list):
            raise ValueError(f"hidden: expected a list of widths, got {hidden!r}")
        _activation(activation)  # validates the name
        self.combine = combine
        self.config = {
            "branch": branch,
            "activation": activation,
            "dropout": float(dropout),
            "combine": combine,
            "hidden": hidden,
            "init": init,
        }

        layers: list[nn.Module] = []
        width = self.in_features
        for i, w in enumerate(branch):
            w = _int(w, f"branch[{i}]", 1)
            layers += [nn.Linear(width, w), _activation(activation), BitDropout(float(dropout))]
            width = w
        self.branch = nn.Sequential(*layers)
        self.branch_width = width

        combined = {"concat": 2 * width, "concat_mul": 3 * width, "absdiff": width}[combine]
        widths = [_int(w, f"hidden[{i}]", 1) for i, w in enumerate(hidden)] + [1]
        # head_in is the first Linear after the combination (fc_b3, or the output layer if
        # hidden is empty); score_matrix() relies on it being linear.
        self.head_in = nn.Linear(combined, widths[0])
        rest: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            rest += [_activation(activation), nn.Linear(a, b)]
        self.head_rest = nn.Sequential(*rest)

        if str(init).lower() == "xavier":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ helpers
    def _check(self, f: Tensor, name: str) -> None:
        if f.dim() != 2 or f.shape[1] != self.in_features:
            raise ValueError(
                f"{name}: expected features [N, {self.in_features}], got shape {tuple(f.shape)}"
            )

    def _combine(self, g1: Tensor, g2: Tensor) -> Tensor:
        if self.combine == "concat":
            return torch.cat([g1, g2], dim=-1)
        if self.combine == "concat_mul":
            return torch.cat([g1, g1 * g2, g2], dim=-1)
        return (g1 - g2).abs()

    def _tail(self, z: Tensor) -> Tensor:
        """head_rest on ``[..., H]`` pre-activations of head_in -> logits ``[...]``."""
        shape = z.shape[:-1]
        return self.head_rest(z.reshape(-1, z.shape[-1])).reshape(shape)

    # ------------------------------------------------------------------ API
    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        """Similarity logits ``[N]`` of feature pairs ``f1, f2: [N, in_features]``."""
        self._check(f1, "f1")
        self._check(f2, "f2")
        if f1.shape[0] != f2.shape[0]:
            raise ValueError(f"f1/f2: batch sizes differ ({f1.shape[0]} vs {f2.shape[0]})")
        z = self.head_in(self._combine(self.branch(f1), self.branch(f2)))
        return self._tail(z)

    def _row_terms(self, g1: Tensor, g2: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The first layer after a concat / concat_mul combination split into per-row terms:
        W [g1; (g1*g2); g2] + bias = (W1 g1 + bias) + W2 g2 (+ Wm (g1*g2)).
        Returns ``(W1 g1 + bias [N, H], W2 g2 [M, H], Wm [H, b] or None)``; ``(None, None, None)``
        for absdiff, which combines per pair."""
        if self.combine == "absdiff":
            return None, None, None
        b, weight = self.branch_width, self.head_in.weight
        wm = weight[:, b : 2 * b] if self.combine == "concat_mul" else None
        return g1 @ weight[:, :b].T + self.head_in.bias, g2 @ weight[:, -b:].T, wm

    def _pair_head_in(self, g1: Tensor, g2: Tensor, a1: Tensor | None, c2: Tensor | None,
                      wm: Tensor | None) -> Tensor:
        """head_in's output for pairs of branch outputs ``g1``, ``g2`` (aligned rows, or blocks
        that broadcast to ``[bi, bj, b]``) from the per-row terms of :meth:`_row_terms` — the
        same maths as ``head_in(_combine(g1, g2))``, a pair costing only what is not per row."""
        if self.combine == "absdiff":
            return self.head_in((g1 - g2).abs())
        z = a1 + c2
        return z if wm is None else z + (g1 * g2) @ wm.T

    # ------------------------------------------------------------------ all pairs
    def row_width(self) -> int:
        """Width of a :meth:`row_terms` row: concat 2H, concat_mul b + 2H, absdiff b
        (b the branch width, H head_in's width)."""
        b, h = self.branch_width, self.head_in.out_features
        return {"concat": 2 * h, "concat_mul": b + 2 * h, "absdiff": b}[self.combine]

    def row_terms(self, F: Tensor) -> Tensor:
        """What all-pairs scoring needs of each row of ``F``, once per row, packed ``[N, row_width()]``:
        concat ``[a | c]``, concat_mul ``[g | a | c]``, absdiff ``g`` (``g`` the branch output,
        ``a = W1 g + bias``, ``c = W2 g`` the first layer's per-row terms, :meth:`_row_terms`).
        :meth:`score_rows` scores pairs of such rows."""
        self._check(F, "F")
        g = self.branch(F)
        if self.combine == "absdiff":
            return g
        a, c, _ = self._row_terms(g, g)
        return torch.cat([a, c] if self.combine == "concat" else [g, a, c], dim=1)

    def score_matrix(self, F: Tensor, G: Tensor | None = None, batch: int = 128, logits: bool = False,
                     compile: bool = False) -> Tensor:
        """S for every pair: ``out[i, j] = sigmoid(forward(F[i], G[j]))``, shape ``[N, M]``.

        ``G=None`` scores F against itself. The branch runs once per patch (:meth:`row_terms`),
        pairs are scored by :meth:`score_rows`. Call in eval mode (dropout off) and under
        ``torch.no_grad()`` for splicing localisation. ``logits=True`` returns logits instead of S.
        """
        rf = self.row_terms(F)
        return self.score_rows(rf, rf if G is None else self.row_terms(G), batch, logits, compile)

    def score_rows(self, R1: Tensor, R2: Tensor, batch: int = 128, logits: bool = False,
                   compile: bool = False) -> Tensor:
        """``out[i, j]`` = S of the pair (row i of ``R1``, row j of ``R2``), rows of :meth:`row_terms`.

        concat_mul: the product term of a block of ``R1`` rows against all of ``R2`` is one GEMM,
        ``z[i, h, j] = (g_i ⊙ Wm[h]) · g_j`` (no ``[pairs, b]`` tensor). concat with one hidden
        layer and ``compile=True``: one fused kernel (torch.compile) for ``Σ_h w_h act(a_ih +
        c_jh) + bias`` in static blocks of :data:`FUSED_BLOCK` pairs, which never writes the
        ``[pairs, H]`` pre-activations (3–4× the eager blocks on 2 shared CPU cores, H = 64; compiles
        once per process, ~2–8 s; falls back to the eager blocks, with a warning, if compiling fails). Otherwise
        (and the eager reference): ``_pair_head_in`` + the hidden layers on ``batch`` x ``batch``
        blocks of pairs (memory O(batch² H)). Reordered sums agree with :meth:`forward` within
        fp32 rounding (tests/test_similarity.py).
        """
        width = self.row_width()
        for name, r in (("R1", R1), ("R2", R2)):
            if r.dim() != 2 or r.shape[1] != width:
                raise ValueError(f"{name}: expected row terms [N, {width}], got shape {tuple(r.shape)}")
        batch = _int(batch, "batch", 1)
        if compile and self.fusable() and _fused_kernel() is not None:
            out = self._score_fused(R1, R2, logits)
            if out is not None:
                return out
        out = self._score_mul(R1, R2) if self.combine == "concat_mul" else self._score_blocks(R1, R2, batch)
        return out if logits else torch.sigmoid(out)

    def _split(self, r: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(g, a, c)`` views of row terms (concat: no ``g``; absdiff: only ``g``; None for the missing)."""
        b, h = self.branch_width, self.head_in.out_features
        if self.combine == "absdiff":
            return r, None, None
        if self.combine == "concat":
            return None, r[:, :h], r[:, h:]
        return r[:, :b], r[:, b:b + h], r[:, b + h:]

    def _score_blocks(self, R1: Tensor, R2: Tensor, batch: int) -> Tensor:
        """concat / absdiff, the reference: ``batch`` x ``batch`` blocks of pairs through
        :meth:`_pair_head_in` and :meth:`_tail`."""
        g1, a, _ = self._split(R1)
        g2, _, c = self._split(R2)
        n, m = len(R1), len(R2)
        out = R1.new_empty(n, m)
        for i0 in range(0, n, batch):
            i1 = min(i0 + batch, n)
            for j0 in range(0, m, batch):
                j1 = min(j0 + batch, m)
                if self.combine == "absdiff":
                    z = self._pair_head_in(g1[i0:i1, None, :], g2[None, j0:j1, :], None, None, None)
                else:
                    z = self._pair_head_in(None, None, a[i0:i1, None, :], c[None, j0:j1, :], None)
                out[i0:i1, j0:j1] = self._tail(z)
        return out

    def _score_mul(self, R1: Tensor, R2: Tensor) -> Tensor:
        """concat_mul: rows of R1 in blocks of :data:`MUL_BLOCK` pre-activations ``[bi, H, m]`` against all of R2."""
        b, h = self.branch_width, self.head_in.out_features
        g1, a, _ = self._split(R1)
        g2, _, c = self._split(R2)
        wm = self.head_in.weight[:, b:2 * b]
        g2t, ct = g2.T, c.T.contiguous()
        n, m = len(R1), len(R2)
        out = R1.new_empty(n, m)
        rows = max(1, MUL_BLOCK // max(1, h * m))
        for i0 in range(0, n, rows):
            i1 = min(i0 + rows, n)
            z = ((g1[i0:i1, None, :] * wm).reshape(-1, b) @ g2t).reshape(i1 - i0, h, m)
            z += a[i0:i1, :, None]
            z += ct
            out[i0:i1] = self._tail_hm(z)
        return out

    def _tail_hm(self, z: Tensor) -> Tensor:
        """head_rest on pre-activations laid out ``[bi, H, m]`` -> logits ``[bi, m]``."""
        if len(self.head_rest) == 0:
            return z[:, 0, :]
        if len(self.head_rest) == 2:                   # act, Linear(H, 1): a weighted sum over H
            act, lin = self.head_rest
            return torch.matmul(lin.weight[0], act(z)) + lin.bias
        return self._tail(z.transpose(1, 2))

    def fusable(self) -> bool:
        """Whether ``score_rows(compile=True)`` has a fused kernel for this head: concat, one
        hidden layer, an elementwise activation (the other heads score eagerly)."""
        return self.combine == "concat" and len(self.head_rest) == 2 and isinstance(self.head_rest[0], _FUSABLE)

    def _score_fused(self, R1: Tensor, R2: Tensor, logits: bool) -> Tensor | None:
        """concat: :func:`_pair_logits` compiled, on zero-padded static blocks of :data:`FUSED_BLOCK`
        (None if it failed to compile)."""
        _, a, _ = self._split(R1)
        _, _, c = self._split(R2)
        act, lin = self.head_rest
        w, bias = lin.weight[0], lin.bias
        bi, bj = FUSED_BLOCK
        n, m = len(R1), len(R2)
        a = _pad_rows(a, -n % bi).contiguous()        # one layout: no recompile for other strides
        c = _pad_rows(c, -m % bj).contiguous()
        out = a.new_empty(len(a), len(c))
        kernel = _fused_kernel()
        try:
            for i0 in range(0, len(a), bi):
                for j0 in range(0, len(c), bj):
                    out[i0:i0 + bi, j0:j0 + bj] = kernel(a[i0:i0 + bi], c[j0:j0 + bj], act, w, bias, logits)
        except Exception as err:  # no C++ compiler, unsupported platform: the eager blocks
            _disable_fused(err)
            return None
        return out[:n, :m].contiguous()

    def score_pairs(self, F: Tensor, i: Tensor, j: Tensor, batch: int = 65536, logits: bool = False) -> Tensor:
        """S of the pairs ``(F[i[k]], F[j[k]])`` — the evaluation's pair scoring.

        Like :meth:`score_matrix`, the branch runs once per row of ``F`` (not per pair) and the
        pairs are combined by :meth:`_pair_head_in`. Equals ``sigmoid(forward(F[i], F[j]))``
        in eval mode. Call under ``torch.no_grad()``.
        """
        self._check(F, "F")
        if i.shape != j.shape or i.dim() != 1:
            raise ValueError(f"i, j: expected two index vectors of one length, got {tuple(i.shape)} and {tuple(j.shape)}")
        g = self.branch(F)
        a, c, wm = self._row_terms(g, g)
        out = g.new_empty(len(i))
        for k in range(0, len(i), batch):
            ii, jj = i[k:k + batch], j[k:k + batch]
            z = self._pair_head_in(g[ii], g[jj], None if a is None else a[ii], None if c is None else c[jj], wm)
            out[k:k + batch] = self._tail(z)
        return out if logits else torch.sigmoid(out)
