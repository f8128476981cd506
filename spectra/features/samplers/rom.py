"""Random orthogonal embeddings, ROM (Choromanski, Rowland & Weller, "The Unreasonable
Effectiveness of Structured Random Orthogonal Embeddings", NeurIPS 2017, arXiv 1703.00864).

One block is the real ROM of depth k,

    M = H D_1 H D_2 ⋯ H D_k       (p × p),

H the *normalized* Walsh–Hadamard matrix (H Hᵀ = I, :func:`~spectra.features.hadamard.fwht`) and
D_i independent diagonals of iid Rademacher signs ±1; p is d padded to the next power of two and
zero-padding x is the same as keeping the first d columns, v_r = M[r, :d]. ``depth`` = k
(default 3; Choromanski et al. find k = 3 enough in practice). Independent blocks (p rows each)
are stacked and cut to m rows. Only this real (HD)^k family is implemented: the paper's S-Hybrid
variant puts complex unit-circle entries on one diagonal, which gives complex rows, and the
feature maps here need real ω (the Spectraformer reference code, arXiv 2405.15310, builds the
complex S-Hybrid matrix).

Rows are rescaled to norms s_r: ω_r = s_r v_r / ‖v_r‖.

* ``scale="chi"`` (default): s_r ~ χ_d independent (``orthogonal``'s convention), so ‖ω_r‖² has
  the χ²_d law of a Gaussian row. We use χ_d rather than the paper's √d because maps that weight
  ‖ω‖² — GERF's e^{A‖ω‖²} with a fixed A — are biased by a factor ≈ e^{−2A²d} when every row has
  norm exactly √d (that is why ``sorf × gerf`` is a known-biased cell; rom × gerf is not).
* ``scale="sqrt_d"``: s_r = √d, Choromanski et al.'s and Yu et al.'s normalization. With d a
  power of two and k = 3 this is exactly ``sorf``'s matrix √d · H D_1 H D_2 H D_3 for the same
  signs (and the same generator: both draw the signs first, as a (k, blocks, p) tensor).

Cut rows can vanish. When d < p a row's first d entries can all be 0 (the products are sparse
sums of ±1): in 2000 blocks of depth 3, 6.1 % of the rows at d = 3, 2.5 % at d = 5, 0.8 % at
d = 6, 0.03 % at d = 9, none at d = 7, 12, 17, 33 (depth 2: 1.9 % at d = 5, 0.01 % at d = 12).
Such a row stays 0 (its features are constants — a bias, as in ``sorf``'s √p·M[:, :d]); head
dims that are powers of two never hit this.

Facts (exact, d a power of two): rows of a block are orthogonal; entries have mean 0 and
E[W_ij²] = 1. Rows are not Gaussian (discrete directions): ``marginally_gaussian`` is False and
the kernel estimates are only asymptotically unbiased, like ``sorf``'s. O(m d log p) per draw.
"""

from __future__ import annotations

import math

import torch

from spectra.features.hadamard import fwht, next_power_of_two
from spectra.features.samplers.base import (
    DRAW_DTYPE,
    Sampler,
    chi_norms,
    draw_device,
    positive_int,
)
from spectra.features.samplers.sorf import random_signs
from spectra.registry import SAMPLERS

__all__ = ["ROMSampler", "rom_blocks"]

SCALES = ("chi", "sqrt_d")


def rom_blocks(signs: torch.Tensor, dim: int) -> torch.Tensor:
    """First ``dim`` columns of H D_1 H D_2 ⋯ H D_k (H normalized) for signs (k, …, p).

    Returns (…, p, dim). Via the transpose Mᵀ = D_k H ⋯ D_1 H (H symmetric): the first ``dim``
    identity rows, then (·D_k) → H → (·D_{k−1}) → H → … → (·D_1) → H on the right.
    """
    p = signs.shape[-1]
    a = torch.eye(dim, p, dtype=signs.dtype, device=signs.device)
    for i in reversed(range(signs.shape[0])):
        a = fwht(a * signs[i][..., None, :])
    return a.transpose(-1, -2)


@SAMPLERS.register("rom")
class ROMSampler(Sampler):
    """Real ROM blocks H D_1 ⋯ H D_k (normalized Hadamard, Rademacher D_i), χ_d row norms."""

    marginally_gaussian = False

    def __init__(
        self,
        dim: int,
        num_features: int,
        depth: int = 3,
        scale: str = "chi",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        self.depth = positive_int(depth, "rom sampler: depth")
        if scale not in SCALES:
            raise ValueError(f"rom sampler: unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        self.scale = scale
        self.padded_dim = next_power_of_two(self.dim)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        p, m, d = self.padded_dim, self.num_features, self.dim
        gen_device = draw_device(generator, device)
        blocks = math.ceil(m / p)
        signs = random_signs((self.depth, blocks, p), generator, gen_device)
        v = rom_blocks(signs, d).reshape(blocks * p, d)[:m]
        if self.scale == "chi":
            norms = chi_norms(m, d, generator, gen_device)
        else:
            norms = torch.full((m,), math.sqrt(d), device=gen_device, dtype=DRAW_DTYPE)
        # Entries of the unnormalized product are integers, so a nonzero cut row has norm
        # ≥ p^(−k/2); below half of that it is a rounding-level 0 and stays 0 (see docstring).
        row_norms = v.norm(dim=-1)
        nonzero = row_norms >= 0.5 * p ** (-self.depth / 2)
        return torch.where(nonzero, norms / row_norms.clamp_min(1e-300), 0.0)[:, None] * v

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, depth={self.depth}, scale={self.scale!r}, "
            f"padded_dim={self.padded_dim}"
        )
