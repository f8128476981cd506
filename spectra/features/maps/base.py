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

__all__ = ["ExponentialFeatureMap", "FeatureMap", "expand_mask", "masked_amax"]


def masked_amax(e: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...]) -> torch.Tensor:
    """Max of ``e`` over ``dims`` ignoring rows where ``mask`` (…, L) is False; 0 if all masked.

    ``e`` has shape (…, L, m); the result keeps reduced dims (for broadcasting) and is detached.
    """
    e = e.detach()
    if mask is not None:
        e = e.masked_fill(~mask[..., None], float("-inf"))
    m = e.amax(dim=dims, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def expand_mask(mask: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor | None:
    """``mask`` (broadcastable to ``t.shape[:-1]``) expanded to exactly (…, L) of ``t``."""
    if mask is None:
        return None
    return mask.expand(t.shape[:-1])


def _check_mask(name: str, label: str, t: torch.Tensor, mask: torch.Tensor | None) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: {label} must be a bool tensor (True = real token), got {got}")
    want = tuple(t.shape[:-1])
    ok = mask.dim() >= 1 and mask.dim() <= len(want) and mask.shape[-1] == want[-1]
    if ok:
        try:
            ok = tuple(torch.broadcast_shapes(mask.shape, want)) == want
        except RuntimeError:
            ok = False
    if not ok:
        raise ValueError(
            f"{name}: {label} must have shape {want} (…, L), or broadcast to it with the same "
            f"L, got {tuple(mask.shape)}"
        )


class FeatureMap(nn.Module):
    """A component function: ``forward(x, y, w) -> (φ(x), φ(y))``.

    ``x`` (…, Lx, d) are queries and ``y`` (…, Ly, d) keys, both already scaled by d^(-1/4);
    ``w`` is the (m, d) weight matrix (leading batch dims broadcast). Masks are bool (…, L),
    True = real token (a mask that broadcasts to (…, L) with the same L is accepted).
    Computation runs in float32 (float64 stays float64) with autocast disabled; data statistics
    of data-dependent maps are computed over valid tokens, per leading index (batch, head), and
    detached. Padding rows of φ are exactly zero.
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
        """(φ(x) (…, Lx, M), φ(y) (…, Ly, M)), M = ``output_dim(m)``.

        With ``stabilize=False`` the features are exact: φ(x)ᵀφ(y) is the kernel estimate.
        With ``stabilize=True`` each query row is scaled by its own constant and all keys of a
        (batch, head) by one common constant, so normalized attention is unchanged.
        """
        self._check_inputs(x, y, w, x_mask, y_mask)
        x_mask, y_mask = expand_mask(x_mask, x), expand_mask(y_mask, y)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y, w = x.to(dtype), y.to(dtype), w.to(dtype)
            phi_x, phi_y = self._features(x, y, w, x_mask, y_mask, stabilize)
            if x_mask is not None:
                phi_x = torch.where(x_mask[..., None], phi_x, torch.zeros_like(phi_x))
            if y_mask is not None:
                phi_y = torch.where(y_mask[..., None], phi_y, torch.zeros_like(phi_y))
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
            raise ValueError(
                f"{name}: x and y must be (..., L, d), got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if not (x.is_floating_point() and y.is_floating_point() and w.is_floating_point()):
            raise ValueError(
                f"{name}: x, y and w must be floating point, got {x.dtype}, {y.dtype}, {w.dtype}"
            )
        d = x.shape[-1]
        if y.shape[-1] != d:
            raise ValueError(f"{name}: head dims differ: x has d={d}, y has d={y.shape[-1]}")
        if w.dim() < 2 or w.shape[-1] != d:
            raise ValueError(f"{name}: w must be (m, d={d}), got {tuple(w.shape)}")
        _check_mask(name, "x_mask", x, x_mask)
        _check_mask(name, "y_mask", y, y_mask)


class ExponentialFeatureMap(FeatureMap):
    """Positive maps φ(x) = exp(e(x)) whose log-features ``e`` come from :meth:`exponents`.

    ``exponents`` returns the exact log-features (all constants included, e.g. −½ log m), so
    Σ exp(e_x + e_y) over features is the kernel estimate. The stabilizers are applied here, in
    one place: queries subtract their per-row max, keys one detached max over all valid keys and
    features of each (batch, head); padding rows get exponent −∞ (feature exactly 0).

    Row-wise form: every map splits into detached data statistics s = :meth:`statistics`
    (over all valid tokens, O(L·d); none for data-independent maps) and log-features that are
    row-wise given s, :meth:`rowwise_exponents` (a token's e depends on that token, W and s
    only), with ``exponents(x, y, w, masks) = rowwise_exponents(x, y, w, *statistics(…))``.
    Attention uses the split to stream over row chunks without storing L×M log-features
    (:func:`~spectra.ops.rowwise_exp_linear_attention`). A data-independent map implements
    :meth:`exponents` only; a data-dependent one implements :meth:`statistics` and
    :meth:`rowwise_exponents` (or only :meth:`exponents`, and then runs on the fused path).
    """

    positive: ClassVar[bool] = True

    def exponents(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-features (e_x (…, Lx, M), e_y (…, Ly, M)) with E[Σ exp(e_x + e_y)] = exp(xᵀy)."""
        if not self.has_rowwise_exponents:
            raise NotImplementedError(
                f"{type(self).__name__} must implement exponents() or, for a data-dependent map, "
                "statistics() and rowwise_exponents()"
            )
        return self.rowwise_exponents(x, y, w, *self.statistics(x, y, x_mask, y_mask))

    def statistics(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Detached data statistics over valid tokens, each of shape (…, *) with the leading
        (batch, head) dims of ``x`` and ``y`` broadcast; () for a data-independent map."""
        return ()

    def rowwise_exponents(
        self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-features given the statistics; row-wise (also called with an empty x or y)."""
        if self.data_dependent:
            raise NotImplementedError(
                f"{type(self).__name__} is data-dependent and does not implement "
                "rowwise_exponents(x, y, w, *stats)"
            )
        return self.exponents(x, y, w)

    @property
    def has_rowwise_exponents(self) -> bool:
        """Whether :meth:`rowwise_exponents` is available (data-independent, or overridden)."""
        overridden = type(self).rowwise_exponents is not ExponentialFeatureMap.rowwise_exponents
        return overridden or not self.data_dependent

    def _features(self, x, y, w, x_mask, y_mask, stabilize):  # type: ignore[override]
        ex, ey = self.exponents(x, y, w, x_mask, y_mask)
        if stabilize:
            ex = ex - masked_amax(ex, x_mask, (-1,))
            ey = ey - masked_amax(ey, y_mask, (-2, -1))
        if x_mask is not None:
            ex = ex.masked_fill(~x_mask[..., None], float("-inf"))
        if y_mask is not None:
            ey = ey.masked_fill(~y_mask[..., None], float("-inf"))
        return ex.exp(), ey.exp()
