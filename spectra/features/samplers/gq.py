"""Gaussian-quadrature random features, GQ (Dao, De Sa & Ré, "Gaussian Quadrature for Kernel
Features", NeurIPS 2017, arXiv 1709.02605: the subsampled dense grid).

The n-point Gauss–Hermite rule for the weight e^{−t²/2} (probabilists' Hermite polynomials,
``numpy.polynomial.hermite_e.hermegauss``) has nodes t_1 < … < t_n and weights a_j > 0 with
Σ_j a_j = √(2π). With p_j = a_j / √(2π) it is a probability law on the nodes,

    P(ω = t_j) = p_j,      Σ_j p_j t_j^k = E_{g ~ N(0,1)}[g^k]   for every k ≤ 2n − 1,

i.e. its first 2n − 1 moments are those of N(0, 1) (all odd moments are 0 by symmetry; the first
mismatch is the 2n-th moment, which is smaller than (2n − 1)!!). Every entry W_rl is drawn iid
from this law (inverse CDF of one uniform per entry): each row is a uniformly random point of the
tensor-product ("dense") grid, drawn with the tensor weight as its probability. ``degree`` = n
(default 8, as in Dao et al. and the Spectraformer reference code, which uses the physicists'
rule scaled by √2 — the same nodes).

Bias (not hidden: ``marginally_gaussian`` is False). The rows are not Gaussian, so E[e^{ωᵀz}] =
Π_l M_n(z_l) with M_n(t) = Σ_j p_j e^{t_j t} instead of e^{‖z‖²/2}; M_n(t) / e^{t²/2} − 1 =
−O(t^{2n}/(2n)!) (:func:`gq_mgf_relative_bias`, exact). Measured for n = 8: −2.8e−14, −1.5e−9,
−7.0e−7, −4.4e−5, −8.8e−4, −8.0e−3, −0.13 at t = 0.5, 1, 1.5, 2, 2.5, 3, 4 (n = 4: −2.2e−6,
−4.6e−4, −5.3e−2, −0.39 at t = 0.5, 1, 2, 3). For posrf with ‖x‖ = ‖y‖ = 1 the kernel's z = x + y
has ‖z‖ ≤ 2, so the relative bias is at most 4.4e−5 (all of z on one coordinate) and far smaller
for spread-out z; it matters only when single coordinates of x + y exceed ≈ 2.5.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device, positive_int
from spectra.registry import SAMPLERS

__all__ = [
    "GaussianQuadratureSampler",
    "draw_index",
    "gauss_hermite_law",
    "gq_mgf_relative_bias",
]


@lru_cache(maxsize=64)
def _hermegauss_law(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    probs = weights / weights.sum()  # Σ weights = √(2π) up to rounding: normalize exactly
    return tuple(float(t) for t in nodes), tuple(float(p) for p in probs)


def gauss_hermite_law(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and probabilities (float64, sum 1) of the n-point Gauss–Hermite rule for N(0, 1)."""
    n = positive_int(n, "degree")
    nodes, probs = _hermegauss_law(n)
    return torch.tensor(nodes, dtype=DRAW_DTYPE), torch.tensor(probs, dtype=DRAW_DTYPE)


def gq_mgf_relative_bias(t: float | torch.Tensor, degree: int = 8) -> torch.Tensor:
    """E[e^{ωt}] / e^{t²/2} − 1 for ω from the ``degree``-point rule (exact, float64)."""
    nodes, probs = gauss_hermite_law(degree)
    t = torch.as_tensor(t, dtype=DRAW_DTYPE)
    log_mgf = torch.logsumexp(probs.log() + nodes * t[..., None], dim=-1)
    return torch.expm1(log_mgf - t.square() / 2)


def draw_index(
    probs: torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """iid indices j with P(j) = probs[j] (int64), by the inverse CDF of one uniform each."""
    u = torch.rand(shape, generator=generator, device=device, dtype=DRAW_DTYPE)
    cdf = probs.to(device=device, dtype=DRAW_DTYPE).cumsum(0)
    index = torch.searchsorted(cdf, u.reshape(-1), right=True).clamp_max(len(probs) - 1)
    return index.reshape(shape)


@SAMPLERS.register("gq")
class GaussianQuadratureSampler(Sampler):
    """Entries iid on the Gauss–Hermite nodes with the normalized weights (Dao et al. 2017)."""

    marginally_gaussian = False

    def __init__(
        self,
        dim: int,
        num_features: int,
        degree: int = 8,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        self.degree = positive_int(degree, "gq sampler: degree")
        if self.degree < 2:
            raise ValueError(
                "gq sampler: degree must be >= 2 (the 1-point rule is the node 0: W = 0), "
                f"got {degree!r}"
            )
        self.nodes, self.probs = gauss_hermite_law(self.degree)  # float64 tables (not buffers)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        gen_device = draw_device(generator, device)
        index = draw_index(self.probs, (self.num_features, self.dim), generator, gen_device)
        return self.nodes.to(gen_device)[index]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, degree={self.degree}"
