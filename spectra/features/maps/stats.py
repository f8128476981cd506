"""Data statistics of queries and keys for data-dependent feature maps (FAVOR++, FAVOR#).

All statistics reduce over the token axis L only (one value per leading index, e.g. per
(batch, head)), use valid tokens only (mask True), are detached (constants for autograd) and
fall back to 0 for an empty set of tokens, so all-padding rows give no NaN.
"""

from __future__ import annotations

import torch

__all__ = ["masked_mean", "masked_second_moment", "query_key_rho", "query_key_second_moment"]


def _weights(t: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token weights (…, L, 1) (1 = valid, 0 = padding) and the valid count (…, 1, 1) ≥ 1."""
    if mask is None:
        w = torch.ones(t.shape[:-1], dtype=t.dtype, device=t.device)
    else:
        w = mask.expand(t.shape[:-1]).to(t.dtype)
    w = w[..., None]
    count = w.sum(dim=-2, keepdim=True).clamp_min(1.0)
    return w, count


def _zero_padding(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return t
    return torch.where(mask.expand(t.shape[:-1])[..., None], t, torch.zeros_like(t))


@torch.no_grad()
def masked_mean(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid tokens of ``t`` (…, L, k) → (…, k); 0 when no token is valid."""
    t = _zero_padding(t.detach(), mask)
    w, count = _weights(t, mask)
    return ((t * w).sum(dim=-2, keepdim=True) / count).squeeze(-2)


@torch.no_grad()
def masked_second_moment(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i t_i t_iᵀ over valid tokens of ``t`` (…, L, d) → (…, d, d); 0 when none is valid."""
    t = _zero_padding(t.detach(), mask)
    _, count = _weights(t, mask)
    return t.transpose(-1, -2) @ t / count


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
    x_bar = masked_mean(x, x_mask)
    y_bar = masked_mean(y, y_mask)
    cross = x_bar[..., :, None] * y_bar[..., None, :]
    return (
        masked_second_moment(x, x_mask)
        + masked_second_moment(y, y_mask)
        + cross
        + cross.transpose(-1, -2)
    )


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
    d = x.shape[-1]
    sq_x = masked_mean(x.detach().square().sum(-1, keepdim=True), x_mask).squeeze(-1)
    sq_y = masked_mean(y.detach().square().sum(-1, keepdim=True), y_mask).squeeze(-1)
    dot = (masked_mean(x, x_mask) * masked_mean(y, y_mask)).sum(-1)
    return ((sq_x + sq_y + 2.0 * dot) / d).clamp_min(0.0)
