"""JPEG branch of the backbone: histograms of block-DCT coefficients on the JPEG grid.

A camera model's JPEG quantisation tables (quality, chroma subsampling) leave a lattice in
the 8×8 block-DCT coefficients of its images — even in the decoded green channel. The
constrained convolution and max pooling of MISLnet barely see it at 64 px (README,
"Results"), while histograms of those coefficients separate models that the convolutional
tower confuses. :class:`DCTHistogram` computes them with fixed weights (nothing to learn);
the backbone standardises them with batch norm and concatenates them with the
convolutional features before ``fc_a1`` (``model.jpeg``), so the fc layers — and the
feature f(X) that Phase B reads — learn from both.

Patches must be cut on the JPEG 8×8 grid (``patches.align`` a multiple of 8, the default);
the branch reads blocks from the patch's top-left corner.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BLOCK = 8


def dct_basis(n: int = BLOCK) -> Tensor:
    """Orthonormal 2-D DCT-II basis ``[n*n, n, n]`` (JPEG's transform), row-major (u, v) order."""
    k = torch.arange(n, dtype=torch.float64)
    c = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # [u, x]
    c[0] /= math.sqrt(2)
    c *= math.sqrt(2 / n)
    return torch.einsum("ux,vy->uvxy", c, c).reshape(n * n, n, n).float()


def zigzag(n: int = BLOCK) -> list[int]:
    """Row-major indices u*n + v of an n×n block in JPEG's zigzag order (DC first)."""
    cells = [(u, v) for u in range(n) for v in range(n)]
    cells.sort(key=lambda uv: (uv[0] + uv[1], uv[1] if (uv[0] + uv[1]) % 2 == 0 else uv[0]))
    return [u * n + v for u, v in cells]


def soft_histogram(values: Tensor, half_range: int) -> Tensor:
    """Linear-interpolation histogram over the integer bins −half_range..half_range.

    ``values`` ``[N, K, *]`` → ``[N, K, 2·half_range + 1]``: each value (clipped to the range)
    splits its unit weight between the two nearest integers, then weights are averaged over
    the trailing dimensions, so each row sums to 1.
    """
    v = values.clamp(-half_range, half_range).flatten(2) + half_range  # [N, K, M] in [0, 2h]
    lo = v.floor()
    frac = v - lo
    bins = 2 * half_range + 1
    lo_idx = lo.long()
    hi_idx = (lo_idx + 1).clamp(max=bins - 1)
    hist = values.new_zeros((*v.shape[:2], bins))
    hist.scatter_add_(2, lo_idx, 1 - frac)
    hist.scatter_add_(2, hi_idx, frac)
    return hist / v.shape[2]


#: luma weights of R, G, B (ITU-R BT.601, as JFIF's RGB → YCbCr)
LUMA = (0.299, 0.587, 0.114)


class DCTHistogram(nn.Module):
    """Fixed JPEG-domain features: for the first ``coefficients`` AC frequencies (zigzag order)
    of every 8×8 block, the histogram of their values (pixel scale 0..255, bins of 1 from
    −``half_range`` to ``half_range``) over the patch's blocks. Output ``[N, K·(2h+1)]``.

    Of RGB patches (``in_channels=3``) the branch reads the luma Y = 0.299 R + 0.587 G + 0.114 B
    (ITU-R BT.601, JFIF's YCbCr), the plane a JPEG encoder quantises with its luma table —
    not R, G and B, each a mix of the luma and chroma quantisation."""

    def __init__(self, in_channels: int = 1, coefficients: int = 27, half_range: int = 15):
        super().__init__()
        if not 1 <= coefficients <= BLOCK * BLOCK - 1:
            raise ValueError(f"jpeg.coefficients: 1..{BLOCK * BLOCK - 1} AC frequencies, got {coefficients}")
        if half_range < 1:
            raise ValueError(f"jpeg.half_range: at least 1, got {half_range}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels: 1 (green) or 3 (RGB, read as luma), got {in_channels}")
        self.in_channels, self.coefficients, self.half_range = in_channels, coefficients, half_range
        ac = zigzag()[1:coefficients + 1]
        self.register_buffer("basis", dct_basis()[ac].unsqueeze(1), persistent=False)  # [K, 1, 8, 8]
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    @property
    def out_features(self) -> int:
        return self.coefficients * (2 * self.half_range + 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[N, C, P, P]`` on the 0..1 scale (the backbone's normalised input)."""
        n = x.shape[0]
        plane = x if self.in_channels == 1 else (x * self.luma.to(x.dtype)).sum(1, keepdim=True)  # [N, 1, P, P]
        coef = nn.functional.conv2d(plane * 255.0, self.basis.to(x.dtype), stride=BLOCK)  # [N, K, P/8, P/8]
        return soft_histogram(coef, self.half_range).reshape(n, -1)
