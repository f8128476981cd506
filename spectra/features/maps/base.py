"""Base classes of component functions (feature maps) φ with E[φ(x)ᵀφ(y)] = exp(xᵀy).

Stabilizers (DESIGN.md §1), which leave attention outputs unbiased:
queries subtract a per-row max of their exponent (cancels between numerator and denominator of
that row); keys subtract one detached max over all valid keys and features of the (batch, head)
(a common factor of numerator and denominator). Padding keys are excluded from maxima and data
statistics, and their features are zeroed *after* the map (φ(0) ≠ 0).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["ExponentialFeatureMap", "FeatureMap", "masked_amax"]


def masked_amax(e: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...]) -> torch.Tensor:
    """Max of ``e`` over ``dims`` ignoring rows where ``mask`` (…, L) is False; 0 if all masked.

    ``e`` has shape (…, L, m); the result keeps reduced dims (for broadcasting) and is detached.
    """
    e = e.detach()
    if mask is not None:
        e = e.masked_fill(~mask[..., None], float("-inf"))
    m = e.amax(dim=dims, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


class FeatureMap(nn.Module):
    """A component function: ``forward(x, y, w) -> (φ(x), φ(y))``.

    ``x`` (…, Lx, d) are queries and ``y`` (…, Ly, d) keys, both already scaled by d^(-1/4);
    ``w`` is the (m, d) weight matrix. Masks are bool (…, L), True = real token. Computation runs
    in float32 (float64 stays float64) with autocast disabled.
    """

    data_dependent: ClassVar[bool] = False
    positive: ClassVar[bool] = True

    def output_dim(self, num_features: int) -> int:
        """Number of features φ produces from m = ``num_features`` rows of W."""
        return num_features

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
        *,
        stabilize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(x, y, w, x_mask, y_mask)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y, w = x.to(dtype), y.to(dtype), w.to(dtype)
            phi_x, phi_y = self._features(x, y, w, x_mask, y_mask, stabilize)
            if x_mask is not None:
                phi_x = phi_x * x_mask[..., None].to(dtype)
            if y_mask is not None:
                phi_y = phi_y * y_mask[..., None].to(dtype)
        return phi_x, phi_y

    def _features(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None,
        y_mask: torch.Tensor | None,
        stabilize: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _check_inputs(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None,
        y_mask: torch.Tensor | None,
    ) -> None:
        name = type(self).__name__
        if x.dim() < 2 or y.dim() < 2:
            raise ValueError(f"{name}: x and y must be (..., L, d), got {tuple(x.shape)}, {tuple(y.shape)}")
        d = x.shape[-1]
        if y.shape[-1] != d:
            raise ValueError(f"{name}: head dims differ: x has d={d}, y has d={y.shape[-1]}")
        if w.dim() < 2 or w.shape[-1] != d:
            raise ValueError(f"{name}: w must be (m, d={d}), got {tuple(w.shape)}")
        for label, t, mask in (("x_mask", x, x_mask), ("y_mask", y, y_mask)):
            if mask is None:
                continue
            if mask.dtype != torch.bool:
                raise ValueError(f"{name}: {label} must be a bool tensor (True = real token), got {mask.dtype}")
            if mask.shape != t.shape[:-1]:
                raise ValueError(
                    f"{name}: {label} must have shape {tuple(t.shape[:-1])} (…, L), got {tuple(mask.shape)}"
                )


class ExponentialFeatureMap(FeatureMap):
    """Positive maps φ(x) = exp(e(x)) whose log-features ``e`` come from :meth:`exponents`.

    ``exponents`` returns the exact log-features (all constants included, e.g. −½ log m), so
    exp(e_x) exp(e_y)ᵀ summed over features is the kernel estimate. The stabilizers are applied
    here, in one place.
    """

    positive: ClassVar[bool] = True

    def exponents(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None,
        y_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-features (e_x (…, Lx, M), e_y (…, Ly, M)) with E[Σ exp(e_x + e_y)] = exp(xᵀy)."""
        raise NotImplementedError

    def _features(self, x, y, w, x_mask, y_mask, stabilize):  # type: ignore[override]
        ex, ey = self.exponents(x, y, w, x_mask, y_mask)
        if stabilize:
            ex = ex - masked_amax(ex, None, (-1,))
            ey = ey - masked_amax(ey, y_mask, (-2, -1))
        return ex.exp(), ey.exp()
