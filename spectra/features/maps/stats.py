"""Data statistics of queries and keys for data-dependent feature maps (FAVOR++, FAVOR#).

All statistics reduce over the token axis L only (one value per leading index, e.g. per
(batch, head)), use valid tokens only (mask True), are detached (constants for autograd) and
fall back to 0 for an empty set of tokens, so all-padding rows give no NaN.
"""

from __future__ import annotations

import torch

__all__ = [
    "coordinate_moments",
    "masked_mean",
    "masked_second_moment",
    "query_key_rho",
    "query_key_second_moment",
    "rho_from_moments",
]


def _valid_tokens(t: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(``t`` (…, L, k) detached with padding rows set to 0, valid count (…, 1) ≥ 1).

    One pass over ``t`` when masked (``where``, so non-finite padding cannot leak), none
    otherwise; every statistic below is then a plain sum or matmul over L.
    """
    t = t.detach()
    if mask is None:
        return t, t.new_full((*t.shape[:-2], 1), float(max(t.shape[-2], 1)))
    mask = mask.expand(t.shape[:-1])
    count = mask.sum(-1, keepdim=True).clamp_min(1).to(t.dtype)
    return torch.where(mask[..., None], t, torch.zeros((), dtype=t.dtype, device=t.device)), count


@torch.no_grad()
def masked_mean(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid tokens of ``t`` (…, L, k) → (…, k); 0 when no token is valid."""
    t, count = _valid_tokens(t, mask)
    return t.sum(dim=-2) / count


@torch.no_grad()
def coordinate_moments(
    t: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean_i t_il, mean_i t_il²) over valid tokens of ``t`` (…, L, d), each (…, d).

    Both from one zeroed view: a sum and a vector norm over L (no squared copy of ``t``).
    """
    t, count = _valid_tokens(t, mask)
    return t.sum(dim=-2) / count, torch.linalg.vector_norm(t, dim=-2).square() / count


@torch.no_grad()
def masked_second_moment(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i t_i t_iᵀ over valid tokens of ``t`` (…, L, d) → (…, d, d); 0 when none is valid."""
    t, count = _valid_tokens(t, mask)
    return t.transpose(-1, -2) @ t / count[..., None]


@torch.no_grad()
def query_key_second_moment(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """P = mean_{i,j} (x_i + y_j)(x_i + y_j)ᵀ (…, d, d) over valid pairs, without an L² loop.

    Expanding the square: P = mean_i x_i x_iᵀ + mean_j y_j y_jᵀ + x̄ȳᵀ + ȳx̄ᵀ.
    """
    xz, nx = _valid_tokens(x, x_mask)
    yz, ny = _valid_tokens(y, y_mask)
    x_bar, y_bar = xz.sum(dim=-2) / nx, yz.sum(dim=-2) / ny
    cross = x_bar[..., :, None] * y_bar[..., None, :]
    second = xz.transpose(-1, -2) @ xz / nx[..., None] + yz.transpose(-1, -2) @ yz / ny[..., None]
    return second + cross + cross.transpose(-1, -2)


def rho_from_moments(
    x_mean: torch.Tensor, x_mean_sq: torch.Tensor, y_mean: torch.Tensor, y_mean_sq: torch.Tensor
) -> torch.Tensor:
    """ρ = (Σ_l mean x_l² + Σ_l mean y_l² + 2 x̄ᵀȳ) / d from :func:`coordinate_moments`, ≥ 0."""
    d = x_mean.shape[-1]
    total = x_mean_sq.sum(-1) + y_mean_sq.sum(-1) + 2.0 * (x_mean * y_mean).sum(-1)
    return (total / d).clamp_min(0.0)


@torch.no_grad()
def query_key_rho(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """ρ = mean_{i,j} ‖x_i + y_j‖² / d = (mean‖x_i‖² + mean‖y_j‖² + 2 x̄ᵀȳ) / d, shape (…).

    This is tr(P) / d for P of :func:`query_key_second_moment` (FAVOR++, arXiv 2205.15317).
    Clamped at 0 against rounding.
    """
    return rho_from_moments(*coordinate_moments(x, x_mask), *coordinate_moments(y, y_mask))
