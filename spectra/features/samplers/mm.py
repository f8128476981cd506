"""Moment-matched Gaussian weights (Spectraformer, arXiv 2405.15310; moment matching as in
Glasserman, "Monte Carlo Methods in Financial Engineering", §4.5).

Draw G ∈ R^{m×d} with iid N(0, 1) entries, centre its columns, G_c = G − 1 ḡᵀ, and whiten so the
empirical distribution of the rows has mean 0 and covariance I *exactly*:

    (1/m) Σ_r ω_r = 0,        (1/m) Σ_r ω_r ω_rᵀ = I        (divisor m, not m − 1).

Divisor m makes the second moment of the m-point estimator exact: (1/m) Σ_r (ω_rᵀz)² = ‖z‖² for
every z, which is the quantity averaged by the feature map's 1/m. The whitening is
W = G_c C^{-1/2} with C = G_cᵀG_c / m, computed stably as W = √m · U Vᵀ from the thin SVD
G_c = U S Vᵀ (the polar factor: the matrix closest to G_c in Frobenius norm with WᵀW = m I;
entries are bounded by √m however ill-conditioned G_c is).

This needs rank(G_c) = d, i.e. m ≥ d + 1. For m ≤ d the columns are split into ⌈d/(m−1)⌉
contiguous, near-equal blocks J of at most m − 1 columns and each block is whitened on its own.
Exact identities then: (1/m) Σ_r ω_r = 0, and (1/m) Σ_r ω_rJ ω_rJᵀ = I_{|J|} for every block J
(so every column has empirical mean 0 and second moment 1); cross-block moments are not
matched. m = 1 is rejected (one centred row is 0). The rows are not marginally Gaussian
(``marginally_gaussian`` False). Computed in float64.
"""

from __future__ import annotations

import itertools
import math

import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device
from spectra.registry import SAMPLERS

__all__ = ["MomentMatchingSampler", "column_blocks", "moment_match"]


def column_blocks(dim: int, num_features: int) -> list[tuple[int, int]]:
    """Contiguous column ranges [start, stop) whitened together: one block if m ≥ d + 1, else
    ⌈d/(m−1)⌉ near-equal blocks of at most m − 1 columns."""
    if num_features < 2:
        raise ValueError(f"moment matching needs num_features >= 2, got {num_features}")
    width = min(dim, num_features - 1)
    count = math.ceil(dim / width)
    bounds = [round(i * dim / count) for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def moment_match(g: torch.Tensor) -> torch.Tensor:
    """Centre the (m, d) matrix ``g`` and whiten each column block: (1/m) WᵀW = I per block."""
    m, d = g.shape
    centred = g - g.mean(dim=0, keepdim=True)
    out = torch.empty_like(centred)
    for start, stop in column_blocks(d, m):
        u, _, vh = torch.linalg.svd(centred[:, start:stop], full_matrices=False)
        out[:, start:stop] = math.sqrt(m) * (u @ vh)
    return out


@SAMPLERS.register("mm")
class MomentMatchingSampler(Sampler):
    """Gaussian W centred and whitened: row sample mean 0, sample covariance I (divisor m)."""

    marginally_gaussian = False

    def setup(self) -> None:
        if self.num_features < 2:
            raise ValueError(
                "mm sampler: num_features must be >= 2 (centring a single row leaves 0), "
                f"got {self.num_features}"
            )
        self.blocks = column_blocks(self.dim, self.num_features)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        g = torch.randn(
            self.num_features,
            self.dim,
            generator=generator,
            device=draw_device(generator, device),
            dtype=DRAW_DTYPE,
        )
        return moment_match(g)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, column_blocks={len(self.blocks)}"
