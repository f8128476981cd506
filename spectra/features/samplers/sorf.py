"""Structured orthogonal random features, SORF (Yu et al. 2016, arXiv 1610.09072).

One block is M = √p · H D₁ H D₂ H D₃ (p × p), H the *normalized* Walsh–Hadamard matrix (H Hᵀ = I)
and D_i independent diagonals of random signs ±1; p is d padded to the next power of two. Zero
padding the input x to length p is the same as keeping the first d columns of M. Independent
blocks are stacked (each gives p rows) and cut to m rows: W = [M⁽¹⁾; M⁽²⁾; …][:m, :d].

Facts (exact): the rows of a block are orthogonal with norm √p; every entry has mean 0 and
variance 1 (E over D₃ kills cross terms, E over D₂ gives (H D₁ H)_{ik}² averaged = 1/p). Rows are
not exactly Gaussian (``marginally_gaussian`` False): SORF is only asymptotically unbiased. Built
with the O(p log p) :func:`~spectra.features.hadamard.fwht`: O(m d log p) per draw.
"""

from __future__ import annotations

import math

import torch

from spectra.features.hadamard import fwht, next_power_of_two
from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device
from spectra.registry import SAMPLERS

__all__ = ["SORFSampler", "random_signs", "sorf_blocks"]


def random_signs(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """iid Rademacher entries ±1 (in ``DRAW_DTYPE``)."""
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(DRAW_DTYPE)


def sorf_blocks(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, dim: int) -> torch.Tensor:
    """First ``dim`` columns of √p · H diag(d1) H diag(d2) H diag(d3), for sign vectors (…, p).

    Returns (…, p, dim). Computed from the transpose Mᵀ = D₃ H D₂ H D₁ H (H symmetric): start with
    the first ``dim`` rows of the identity and apply (·D₃) → H → (·D₂) → H → (·D₁) → H on the right.
    """
    p = d1.shape[-1]
    rows = torch.eye(dim, p, dtype=d1.dtype, device=d1.device)  # rows e_1 … e_dim
    a = rows * d3[..., None, :]
    a = fwht(a) * d2[..., None, :]
    a = fwht(a) * d1[..., None, :]
    a = fwht(a)  # (…, dim, p) = (M[:, :dim])ᵀ
    return math.sqrt(p) * a.transpose(-1, -2)


@SAMPLERS.register("sorf")
class SORFSampler(Sampler):
    """Structured ORF: blocks √p · H D₁ H D₂ H D₃ (normalized Hadamard H, random sign D_i)."""

    marginally_gaussian = False

    def setup(self) -> None:
        self.padded_dim = next_power_of_two(self.dim)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        p, m = self.padded_dim, self.num_features
        blocks = math.ceil(m / p)
        signs = random_signs((3, blocks, p), generator, draw_device(generator, device))
        w = sorf_blocks(signs[0], signs[1], signs[2], self.dim)  # (blocks, p, d)
        return w.reshape(blocks * p, self.dim)[:m]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, padded_dim={self.padded_dim}"
