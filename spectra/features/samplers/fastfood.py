"""Fastfood weights (Le, Sarlós & Smola, "Fastfood — approximating kernel expansions in
loglinear time", ICML 2013, arXiv 1408.3060) and their learnable variant (Yang et al. 2015,
"À la carte — learning fast kernels", arXiv 1412.6493).

One block is V = (1/(σ√p)) S H G Π H B (p × p; p = d padded to the next power of two, H the
unnormalized Walsh–Hadamard matrix, B a diagonal of random signs ±1, Π a uniformly random
permutation, G a diagonal of iid N(0, 1), σ = 1 for the kernel exp(xᵀy)). With the normalized
Ĥ = H/√p, every row of Ĥ G Π Ĥ B has norm ‖G‖/√p (Π Ĥ B is orthogonal), so the paper's
S_ii = s_i / ‖G‖ with s_i ~ χ_p gives rows of norm exactly s_i. We write the same thing as

    ω_i = s_i · v_i / ‖v_i‖,   v_i = row i of Ĥ G Π Ĥ B restricted to its first d columns,
    s_i = ‖g_i‖, g_i ~ N(0, I_d) independent (χ_d),

which equals the paper's matrix when d is a power of two and keeps ‖ω_i‖ ~ χ_d exactly when the
padded columns are cut off (zero-padding x). Independent blocks (p rows each) are stacked and cut
to m rows, so any m works (the Spectraformer reference code ignored m). Rows are not exactly
Gaussian (``marginally_gaussian`` False); the estimator is asymptotically unbiased. Built with the
O(p log p) :func:`~spectra.features.hadamard.fwht`: O(m d log p) per draw.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from spectra.features.hadamard import fwht, next_power_of_two
from spectra.features.samplers.base import (
    DRAW_DTYPE,
    Sampler,
    chi_norms,
    draw_device,
)
from spectra.features.samplers.sorf import random_signs
from spectra.registry import SAMPLERS

__all__ = [
    "FastfoodParts",
    "FastfoodSampler",
    "LearnableFastfoodSampler",
    "draw_fastfood_parts",
    "fastfood_directions",
    "fastfood_weights",
]


class FastfoodParts(NamedTuple):
    """The random ingredients of stacked Fastfood blocks."""

    signs: torch.Tensor  # B: (blocks, p), ±1
    permutation: torch.Tensor  # Π: (blocks, p), int64, (Πx)_i = x_{perm[i]}
    gaussian: torch.Tensor  # G: (blocks, p), N(0, 1)
    scales: torch.Tensor  # s: (m,), χ_d


def draw_fastfood_parts(
    dim: int, num_features: int, generator: torch.Generator | None, device: torch.device
) -> FastfoodParts:
    """Draw B, Π, G for ⌈m/p⌉ blocks and the m row norms s ~ χ_d (floats in ``DRAW_DTYPE``)."""
    p = next_power_of_two(dim)
    blocks = math.ceil(num_features / p)
    signs = random_signs((blocks, p), generator, device)
    keys = torch.rand(blocks, p, generator=generator, device=device, dtype=DRAW_DTYPE)
    permutation = keys.argsort(dim=-1)
    gaussian = torch.randn(blocks, p, generator=generator, device=device, dtype=DRAW_DTYPE)
    scales = chi_norms(num_features, dim, generator, device)
    return FastfoodParts(signs, permutation, gaussian, scales)


def fastfood_directions(
    signs: torch.Tensor, permutation: torch.Tensor, gaussian: torch.Tensor, dim: int
) -> torch.Tensor:
    """First ``dim`` columns of Ĥ diag(G) Π Ĥ diag(B) (Ĥ normalized), shape (blocks, p, dim).

    Via the transpose Vᵀ = B Ĥ Πᵀ G Ĥ applied on the right of the first ``dim`` identity rows;
    (X Πᵀ)[:, i] = X[:, perm[i]].
    """
    p = signs.shape[-1]
    rows = torch.eye(dim, p, dtype=signs.dtype, device=signs.device)
    a = fwht(rows * signs[..., None, :])  # (blocks, dim, p)
    a = a.gather(-1, permutation[..., None, :].expand_as(a))
    a = fwht(a * gaussian[..., None, :])
    return a.transpose(-1, -2)


def fastfood_weights(
    signs: torch.Tensor,
    permutation: torch.Tensor,
    gaussian: torch.Tensor,
    scales: torch.Tensor,
    dim: int,
) -> torch.Tensor:
    """W (m, d) with rows ω_i = s_i v_i / ‖v_i‖ from stacked, cut Fastfood blocks."""
    v = fastfood_directions(signs, permutation, gaussian, dim)
    v = v.reshape(-1, dim)[: scales.shape[0]]
    norms = v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return scales[:, None] * v / norms


@SAMPLERS.register("fastfood")
class FastfoodSampler(Sampler):
    """Fastfood blocks S H G Π H B / (σ√d) (Le et al. 2013), rows rescaled to χ_d norms."""

    marginally_gaussian = False

    def setup(self) -> None:
        self.padded_dim = next_power_of_two(self.dim)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        parts = draw_fastfood_parts(
            self.dim, self.num_features, generator, draw_device(generator, device)
        )
        return fastfood_weights(*parts, dim=self.dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, padded_dim={self.padded_dim}"


@SAMPLERS.register("fastfood_learnable")
class LearnableFastfoodSampler(Sampler):
    """Fastfood with S, G, B as trainable parameters (Π fixed), initialised like ``fastfood``.

    ``sample()`` returns ω_i = S_i v_i/‖v_i‖ computed from the parameters (differentiable); the
    ``generator`` argument is ignored — the randomness is the construction-time draw from
    :meth:`Sampler.init_generator` (seed, layer_index). B is a real vector initialised to ±1.
    At init, ``sample()`` equals ``FastfoodSampler(dim, m).sample(g)`` with ``g`` that generator
    (``seeded_generator(seed)`` when ``layer_index`` is None), up to the parameter dtype.
    """

    marginally_gaussian = False

    def setup(self) -> None:
        self.padded_dim = next_power_of_two(self.dim)
        parts = draw_fastfood_parts(
            self.dim, self.num_features, self.init_generator(), torch.device("cpu")
        )
        dtype = torch.get_default_dtype()
        self.signs = nn.Parameter(parts.signs.to(dtype))
        self.gaussian = nn.Parameter(parts.gaussian.to(dtype))
        self.scales = nn.Parameter(parts.scales.to(dtype))
        self.register_buffer("permutation", parts.permutation)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return fastfood_weights(
            self.signs.to(dtype),
            self.permutation,
            self.gaussian.to(dtype),
            self.scales.to(dtype),
            dim=self.dim,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, padded_dim={self.padded_dim}, seed={self.seed}"
