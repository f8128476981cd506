"""Log-features of the form e_ir = ω_rᵀx_i + t_i + f_r, computed as one matmul.

Every exponential map of Spectra (posrf, gerf/oprf, hyperbolic, sderf; arXiv 2009.14794,
2205.15317, 2302.00787) has log-features that are a projection plus a per-token term t_i (e.g.
−‖x_i‖²/2 − ½ log m) plus a per-feature term f_r (e.g. A‖ω_r‖²). Appending columns,

    e_ir = [x_i, t_i, 1] · [ω_r, 1, f_r],

gives the whole (…, L, m) block from a single matmul, with no further elementwise pass over it
(and no reduction over it in backward): on CPU those passes, not the matmul, dominate the cost.
"""

from __future__ import annotations

import torch

__all__ = ["projected_exponent", "projected_exponent_naive"]


def projected_exponent(
    x: torch.Tensor,
    w: torch.Tensor,
    token_term: torch.Tensor,
    feature_term: torch.Tensor | None = None,
) -> torch.Tensor:
    """e = x Wᵀ + t[…, :, None] + f[…, None, :] as one matmul, shape (…, L, m).

    x (…, L, d); w (…, m, d) or (m, d); token_term t (…, L); feature_term f (…, m), (m,) or
    None (0).
    """
    columns = [x, token_term.unsqueeze(-1)]
    w_lead = w.shape[:-2]
    if feature_term is not None:
        columns.append(torch.ones_like(x[..., :1]))
        w_lead = torch.broadcast_shapes(w_lead, feature_term.shape[:-1])
        w = w.expand(*w_lead, *w.shape[-2:])
    rows = [w, torch.ones_like(w[..., :1])]
    if feature_term is not None:
        rows.append(feature_term.expand(*w_lead, w.shape[-2]).unsqueeze(-1))
    return torch.cat(columns, dim=-1) @ torch.cat(rows, dim=-1).transpose(-1, -2)


def projected_exponent_naive(
    x: torch.Tensor,
    w: torch.Tensor,
    token_term: torch.Tensor,
    feature_term: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for :func:`projected_exponent`: the three terms added separately."""
    e = x @ w.transpose(-1, -2) + token_term.unsqueeze(-1)
    return e if feature_term is None else e + feature_term.unsqueeze(-2)
