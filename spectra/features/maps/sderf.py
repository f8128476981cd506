"""Symmetric dense-exponential random features, SDERF (FAVOR#, arXiv 2302.00787).

For ω ~ N(0, I_d), a symmetric d×d matrix A with I − 4A ≻ 0 and B with Bᵀ(I − 4A)⁻¹B = I::

    f(ω, x) = D exp(ωᵀAω + ωᵀBx − ‖x‖²/2),   D = det(I − 4A)^(1/4),

    E[f(ω,x) f(ω,y)] = D² det(I−4A)^(−1/2) exp(½ (x+y)ᵀBᵀ(I−4A)⁻¹B(x+y) − (‖x‖²+‖y‖²)/2)
                     = exp(xᵀy).

The variance-optimal choice: with P = mean_{i,j} (x_i+y_j)(x_i+y_j)ᵀ = QΛQᵀ, the mean log
second moment splits, in the eigenbasis of P, into d one-dimensional OPRF problems with ρ = Λ_l,
so a_l = A*(Λ_l) (:func:`~spectra.features.maps.oprf.optimal_a`) and

    A = Q diag(a) Qᵀ,   B = Q diag(√(1 − 4a)) Qᵀ,   D = Π_l (1 − 4a_l)^(1/4).

A and B are spectral functions of P, so they do not depend on the signs of the eigenvectors nor
on the basis chosen inside a repeated eigenvalue's eigenspace: the features are continuous in
the data. (The quadratic term Σ_l a_l ω_l² in ω's own coordinates with B = diag(√(1−4a))Qᵀ
is the same estimator in distribution, ω → Qᵀω, but for a fixed W its features jump whenever
eigh flips an eigenvector's sign.) P, Q, Λ are computed per (batch, head) over valid tokens
(eigh in float64) and detached.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from spectra.features.maps.base import (
    ExponentialFeatureMap,
    pairwise_quadratic,
    pairwise_sq_norms,
)
from spectra.features.maps.oprf import optimal_a
from spectra.features.maps.projection import projected_exponent
from spectra.features.maps.stats import query_key_second_moment
from spectra.registry import FEATURE_MAPS

__all__ = ["SymmetricDenseExponentialFeatures", "sderf_exponent", "sderf_parameters"]


@torch.no_grad()
def sderf_parameters(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (…, d, d), B (…, d, d), log D (…)) of SDERF from the valid queries and keys, detached.

    A = Q diag(a) Qᵀ and B = Q diag(√(1−4a)) Qᵀ (both symmetric), log D = ¼ Σ_l log(1−4a_l),
    for P = QΛQᵀ and a_l = A*(Λ_l).
    """
    p = query_key_second_moment(x, y, x_mask, y_mask)
    lam, q = torch.linalg.eigh(p.to(torch.float64))
    a = optimal_a(lam.clamp_min(0.0))
    one_minus_4a = 1.0 - 4.0 * a
    qt = q.transpose(-1, -2)
    a_mat = (q * a[..., None, :]) @ qt
    b_mat = (q * one_minus_4a.sqrt()[..., None, :]) @ qt
    # Q diag(·) Qᵀ is symmetric only up to rounding; make it exactly symmetric
    a_mat = 0.5 * (a_mat + a_mat.transpose(-1, -2))
    b_mat = 0.5 * (b_mat + b_mat.transpose(-1, -2))
    log_d = 0.25 * one_minus_4a.log().sum(-1)
    return a_mat.to(x.dtype), b_mat.to(x.dtype), log_d.to(x.dtype)


def sderf_exponent(
    x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, log_d: torch.Tensor
) -> torch.Tensor:
    """e(x) = ω_rᵀAω_r + ω_rᵀBx − ‖x‖²/2 + log D − ½ log m, shape (…, L, m).

    x (…, L, d); w (…, m, d) or (m, d); A, B (…, d, d) symmetric; log D (…).
    """
    m = w.shape[-2]
    wb = w @ b  # (…, m, d): row r is ω_rᵀB
    quad = ((w @ a) * w).sum(-1)  # (…, m): ω_rᵀAω_r
    token = -0.5 * x.square().sum(-1) + (log_d - 0.5 * math.log(m))[..., None]
    return projected_exponent(x, wb, token, quad)


@FEATURE_MAPS.register("sderf")
class SymmetricDenseExponentialFeatures(ExponentialFeatureMap):
    """SDERF φ(x) = m^(-1/2) D exp(ωᵀAω + ωᵀBx − ‖x‖²/2), A, B from P (arXiv 2302.00787).

    Data-dependent (looks at all tokens), so not causal.
    """

    data_dependent: ClassVar[bool] = True

    def statistics(self, x, y, x_mask=None, y_mask=None):  # type: ignore[override]
        """(A (…, d, d), B (…, d, d), log D (…)) from P."""
        return sderf_parameters(x, y, x_mask, y_mask)

    def rowwise_exponents(self, x, y, w, *stats):  # type: ignore[override]
        a, b, log_d = stats
        return sderf_exponent(x, w, a, b, log_d), sderf_exponent(y, w, a, b, log_d)

    @torch.no_grad()
    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """4 log D − ½ log det(I−8A) + 2 (x+y)ᵀB(I−8A)⁻¹B(x+y) − ‖x‖² − ‖y‖² (A ≼ 0 here)."""
        a, b, log_d = sderf_parameters(x, y)
        i_minus_8a = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device) - 8.0 * a
        inner = b.mT @ torch.linalg.solve(i_minus_8a, b)
        const = 4.0 * log_d - 0.5 * torch.linalg.slogdet(i_minus_8a).logabsdet
        return (
            const[..., None, None] + 2.0 * pairwise_quadratic(x, y, inner) - pairwise_sq_norms(x, y)
        )
