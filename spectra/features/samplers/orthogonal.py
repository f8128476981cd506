"""Orthogonal random features, ORF (Yu et al. 2016, arXiv 1610.09072; Performer, 2009.14794).

Each block of d rows is a Haar-random orthogonal matrix Q (QR of a d×d Gaussian matrix with the
signs fixed by diag(R), which makes Q exactly Haar), blocks are independent, stacked ⌈m/d⌉ times
and cut to m rows. Row r is then rescaled to norm s_r:

* ``scale="chi"`` (default): s_r = ‖g_r‖ with g_r ~ N(0, I_d) independent, i.e. s_r ~ χ_d. A
  uniform direction times an independent χ_d norm is exactly N(0, I_d), so every row is marginally
  Gaussian and e.g. posrf stays unbiased; rows inside a block are orthogonal.
* ``scale="sqrt_d"``: s_r = √d for every row. Then ‖ω_r‖² = d exactly, which is not the χ²_d law of
  a N(0, I_d) vector, so rows are NOT marginally Gaussian (E[exp(ωᵀx)] ≠ exp(‖x‖²/2)) and posrf /
  trig built on it are biased (``marginally_gaussian`` is False for this variant).
"""

from __future__ import annotations

import math

import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, chi_norms, draw_device
from spectra.registry import SAMPLERS

__all__ = ["OrthogonalSampler", "haar_orthogonal"]

SCALES = ("chi", "sqrt_d")


def haar_orthogonal(
    blocks: int, dim: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``blocks`` independent Haar-random (dim × dim) orthogonal matrices, shape (blocks, d, d).

    Q R = G (G Gaussian); Q ← Q diag(sign diag R) makes the factorization unique, hence Q Haar.
    """
    g = torch.randn(blocks, dim, dim, generator=generator, device=device, dtype=DRAW_DTYPE)
    q, r = torch.linalg.qr(g)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs[..., None, :]


@SAMPLERS.register("orthogonal")
class OrthogonalSampler(Sampler):
    """Blocks of d orthogonal rows (Haar), rows rescaled to χ_d norms (or √d with ``scale``)."""

    marginally_gaussian = True

    def __init__(
        self,
        dim: int,
        num_features: int,
        scale: str = "chi",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        if scale not in SCALES:
            raise ValueError(
                f"orthogonal sampler: unknown scale {scale!r}; allowed: {', '.join(SCALES)}"
            )
        self.scale = scale
        # Only χ_d norms make a row exactly N(0, I_d); constant √d norms do not.
        self.marginally_gaussian = scale == "chi"

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        d, m = self.dim, self.num_features
        gen_device = draw_device(generator, device)
        blocks = math.ceil(m / d)
        directions = haar_orthogonal(blocks, d, generator, gen_device).reshape(blocks * d, d)[:m]
        if self.scale == "chi":
            norms = chi_norms(m, d, generator, gen_device)
        else:
            norms = torch.full((m,), math.sqrt(d), device=gen_device, dtype=DRAW_DTYPE)
        return directions * norms[:, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale!r}"
