"""Simplified asymmetric dense-exponential random features, SADERF (FAVOR#, arXiv 2302.00787).

exp(xᵀy) = exp((Ψx)ᵀ(Ψ⁻¹y)) for any positive diagonal Ψ, so queries are mapped x → Ψx, keys
y → Ψ⁻¹y and OPRF (:mod:`~spectra.features.maps.oprf`) is applied to the transformed pair. The
kernel is unchanged; only the variance moves. OPRF's objective grows with
ρ = (mean‖Ψx_i‖² + mean‖Ψ⁻¹y_j‖² + 2 x̄ᵀȳ)/d (the cross term does not depend on Ψ), i.e. with
Σ_l Ψ_l² a_l + Ψ_l⁻² b_l, a_l = mean_i x_il², b_l = mean_j y_jl², minimized at

    Ψ_l = (b_l / a_l)^(1/4) = (mean_j y_jl² / mean_i x_il²)^(1/4),

which balances the two sides: mean_i (Ψ_l x_il)² = mean_j (y_jl / Ψ_l)² = √(a_l b_l). Large
keys make Ψ_l > 1 and enlarge the queries. (With equal numbers of valid queries and keys, as in
the paper, means and sums agree.) Google's reference code inverts Ψ (docs/design.md §4), which
squares the imbalance ratio b_l/a_l instead of removing it. Ψ is computed per (batch, head) over
valid tokens and detached; coordinates without signal on one side fall back to Ψ_l = 1, and Ψ_l
is clipped to [1e-4, 1e4] (any positive Ψ keeps the estimator unbiased).
"""

from __future__ import annotations

import torch

from spectra.features.maps.oprf import OptimalPositiveFeatures, optimal_a
from spectra.features.maps.stats import coordinate_moments, rho_from_moments
from spectra.registry import FEATURE_MAPS

__all__ = ["SimplifiedAsymmetricDenseExponentialFeatures", "saderf_psi", "saderf_statistics"]

_PSI_MIN, _PSI_MAX = 1e-4, 1e4


def _psi(x_mean_sq: torch.Tensor, y_mean_sq: torch.Tensor) -> torch.Tensor:
    """Ψ_l = (b_l / a_l)^(1/4) from per-coordinate mean squares, 1 where a side has no signal."""
    a, b = x_mean_sq, y_mean_sq
    tiny = torch.finfo(a.dtype).tiny
    ok = (a > tiny) & (b > tiny)
    ratio = torch.where(ok, b / torch.where(ok, a, torch.ones_like(a)), torch.ones_like(a))
    return ratio.pow(0.25).clamp(_PSI_MIN, _PSI_MAX)


@torch.no_grad()
def saderf_psi(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ψ_l = (mean_j y_jl² / mean_i x_il²)^(1/4) over valid tokens, shape (…, d), detached."""
    return _psi(coordinate_moments(x, x_mask)[1], coordinate_moments(y, y_mask)[1])


@torch.no_grad()
def saderf_statistics(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ψ (…, d), A* (…)): Ψ as in :func:`saderf_psi`, A* of OPRF on (Ψx, Ψ⁻¹y).

    From one pass of per-coordinate moments (no transformed copy of x or y): with
    a_l = mean x_l², b_l = mean y_l², ρ(Ψx, Ψ⁻¹y) = (Σ Ψ_l² a_l + Σ b_l / Ψ_l² + 2 x̄ᵀȳ) / d
    (the cross term does not depend on Ψ).
    """
    x_mean, a = coordinate_moments(x, x_mask)
    y_mean, b = coordinate_moments(y, y_mask)
    psi = _psi(a, b)
    psi_sq = psi.square()
    return psi, optimal_a(rho_from_moments(x_mean, a * psi_sq, y_mean, b / psi_sq))


@FEATURE_MAPS.register("saderf")
class SimplifiedAsymmetricDenseExponentialFeatures(OptimalPositiveFeatures):
    """SADERF: OPRF on (Ψx, Ψ⁻¹y), Ψ_l = (mean y_l² / mean x_l²)^(1/4) (arXiv 2302.00787).

    With orthogonal ω this is FAVOR# (bidirectional). Data-dependent, so not causal.
    """

    def statistics(self, x, y, x_mask=None, y_mask=None):  # type: ignore[override]
        """(Ψ (…, d), A* (…)), A* of OPRF on the transformed pair (Ψx, Ψ⁻¹y)."""
        return saderf_statistics(x, y, x_mask, y_mask)

    def rowwise_exponents(self, x, y, w, *stats):  # type: ignore[override]
        psi, a = stats
        p = psi.unsqueeze(-2)  # (…, 1, d)
        return super().rowwise_exponents(x * p, y / p, w, a)

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """OPRF's closed form on the transformed pair (Ψx, Ψ⁻¹y)."""
        p = saderf_psi(x, y).unsqueeze(-2)
        return super().iid_log_second_moment(x * p, y / p)
