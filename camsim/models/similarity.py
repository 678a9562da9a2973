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

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from camsim.plain import to_plain
from camsim.models.backbone import _int, make_activation

__all__ = ["COMBINE_MODES", "SimilarityNet"]

COMBINE_MODES = ("concat", "concat_mul", "absdiff")
_INITS = ("xavier", "torch")


def _activation(name: str) -> nn.Module:
    """prelu (one learned slope per layer) | tanh | relu | gelu."""
    if str(name).lower() == "prelu":
        return nn.PReLU()
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
            layers += [nn.Linear(width, w), _activation(activation), nn.Dropout(float(dropout))]
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

    def score_matrix(
        self, F: Tensor, G: Tensor | None = None, batch: int = 128, logits: bool = False
    ) -> Tensor:
        """S for every pair: ``out[i, j] = sigmoid(forward(F[i], G[j]))``, shape ``[N, M]``.

        ``G=None`` scores F against itself. The branch runs once per patch; pairs are
        combined in blocks of ``batch`` x ``batch`` patches (memory O(batch^2 * width)) by
        :meth:`_pair_head_in`, so a pair costs only the hidden layers (plus one bilinear term
        for concat_mul). Call in eval mode (dropout off) and under ``torch.no_grad()`` for
        splicing localisation. ``logits=True`` returns logits instead of S.
        """
        self._check(F, "F")
        if G is not None:
            self._check(G, "G")
        batch = _int(batch, "batch", 1)
        gf = self.branch(F)
        gg = gf if G is None else self.branch(G)
        n, m = gf.shape[0], gg.shape[0]
        out = gf.new_empty(n, m)
        a, c, wm = self._row_terms(gf, gg)
        for i0 in range(0, n, batch):
            i1 = min(i0 + batch, n)
            for j0 in range(0, m, batch):
                j1 = min(j0 + batch, m)
                z = self._pair_head_in(gf[i0:i1, None, :], gg[None, j0:j1, :],
                                       None if a is None else a[i0:i1, None, :],
                                       None if c is None else c[None, j0:j1, :], wm)
                out[i0:i1, j0:j1] = self._tail(z)
        return out if logits else torch.sigmoid(out)

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
