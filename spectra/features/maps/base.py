"""Base classes of component functions (feature maps) φ with E[φ(x)ᵀφ(y)] = exp(xᵀy).

Every map gives its features in *log-scaled* form, φ(t_i) = u_i · exp(s_i) with a bounded
u_i (…, L, M) and one real log-scale s_i (…, L, 1) per row (:meth:`FeatureMap.scaled`); padding
rows have u = 0 and s = −∞. Attention never needs exp(s) itself, only differences of the s,
so nothing overflows or underflows because of a row's overall size:

* non-causal (:meth:`FeatureMap.stabilized`): keys are divided by one common constant, the max
  of their log-scales over valid keys of the (batch, head), and each query row by its own
  constant. Exponential maps do better (:class:`ExponentialFeatureMap`): one constant per
  *feature* on the keys, compensated on the query side (φ(x_i)_r φ(y_j)_r is unchanged), which
  keeps every denominator ≥ 1 (see :mod:`spectra.ops.linear`);
* causal: the key constant of query i is the running max over keys j ≤ i only
  (:func:`~spectra.ops.causal_linear_attention`), so no output depends on a later token.

All these constants are detached and cancel exactly in normalized attention.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = [
    "ExponentialFeatureMap",
    "FeatureMap",
    "expand_mask",
    "finite_or_zero",
    "mask_rows",
    "masked_amax",
    "pairwise_quadratic",
    "pairwise_sq_norms",
]

Scaled = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def masked_amax(e: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...]) -> torch.Tensor:
    """Max of ``e`` over ``dims`` ignoring rows where ``mask`` (…, L) is False; 0 if all masked.

    ``e`` has shape (…, L, m); the result keeps reduced dims (for broadcasting) and is detached.
    An empty reduction (L = 0) gives 0.
    """
    e = e.detach()
    if mask is not None:
        e = e.masked_fill(~mask[..., None], float("-inf"))
    if any(e.shape[dim] == 0 for dim in dims):
        shape = [1 if i in {d % e.dim() for d in dims} else n for i, n in enumerate(e.shape)]
        return e.new_zeros(shape)
    m = e.amax(dim=dims, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def finite_or_zero(t: torch.Tensor) -> torch.Tensor:
    """``t`` with non-finite entries (e.g. the −∞ max of no valid token) replaced by 0."""
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def pairwise_quadratic(
    x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None = None
) -> torch.Tensor:
    """(x_i + y_j)ᵀ M (x_i + y_j) for all pairs, (…, Lx, Ly), without an (Lx, Ly, d) tensor
    (M symmetric (…, d, d); M = I when ``m`` is None)."""
    xm = x if m is None else x @ m
    ym = y if m is None else y @ m
    return (xm * x).sum(-1)[..., :, None] + (ym * y).sum(-1)[..., None, :] + 2.0 * xm @ y.mT


def pairwise_sq_norms(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖x_i‖² + ‖y_j‖² for all pairs, (…, Lx, Ly)."""
    return x.square().sum(-1)[..., :, None] + y.square().sum(-1)[..., None, :]


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


def mask_rows(
    u: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding rows (mask False) → u = 0, s = −∞."""
    if mask is None:
        return u, s
    keep = mask[..., None]
    return (
        torch.where(keep, u, torch.zeros_like(u)),
        torch.where(keep, s, torch.full_like(s, float("-inf"))),
    )


class FeatureMap(nn.Module):
    """A component function φ, given as log-scaled features (:meth:`scaled`).

    ``x`` (…, Lx, d) are queries and ``y`` (…, Ly, d) keys, both already scaled by d^(-1/4);
    ``w`` is the (m, d) weight matrix (leading batch dims broadcast). Masks are bool (…, L),
    True = real token (a mask that broadcasts to (…, L) with the same L is accepted).
    Computation runs in float32 (float64 stays float64) with autocast disabled; data statistics
    of data-dependent maps are computed over valid tokens, per leading index (batch, head), and
    detached. Padding rows of φ are exactly zero.

    A subclass implements :meth:`_scaled` — (u_x, s_x, u_y, s_y) with φ = u · exp(s), u bounded
    (e.g. |u| ≤ 1) and s (…, L, 1) — and may override :meth:`_stabilized` (see
    :class:`ExponentialFeatureMap`) and :meth:`_natural`.
    """

    data_dependent: ClassVar[bool] = False
    positive: ClassVar[bool] = True

    def output_dim(self, num_features: int) -> int:
        """Number of features φ produces from m = ``num_features`` rows of W."""
        return num_features

    def iid_log_second_moment(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """log E[g(ω; x_i, y_j)²] for one iid row ω ~ N(0, I_d), all pairs (…, Lx, Ly).

        g is one row's term of the estimate: with m iid rows, φ(x_i)ᵀφ(y_j) = (1/m) Σ_r g(ω_r),
        E[g] = exp(x_iᵀy_j), so Var = (E[g²] − exp(2 x_iᵀy_j)) / m: the variance that FAVOR++
        and FAVOR# (arXiv 2205.15317, 2302.00787) compare. Data-dependent parameters come from
        all of ``x`` and ``y`` (no masks). None when the map has no closed form (the default).
        """
        return None

    # -- public API (validates, casts, disables autocast, zeroes padding rows) -------------------
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
        With ``stabilize=True`` they are those of :meth:`stabilized`: φ(x_i)ᵀφ(y_j) is the
        estimate times a constant of row i, so normalized attention is unchanged.
        """
        if stabilize:
            return self.stabilized(x, y, w, x_mask, y_mask)[:2]
        return self._run(self._natural, x, y, w, x_mask, y_mask)

    def scaled(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> Scaled:
        """(u_x, s_x, u_y, s_y): φ(x_i) = u_x,i · exp(s_x,i), likewise for y; u (…, L, M)
        bounded, s (…, L, 1); padding rows u = 0, s = −∞."""
        return self._run(self._scaled, x, y, w, x_mask, y_mask)

    def stabilized(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(φ̃(x), φ̃(y), c) with φ(x_i)ᵀφ(y_j) = φ̃(x_i)ᵀφ̃(y_j) · exp(c_i), c (…, Lx, 1).

        The non-causal stabilizer: the constants only look at valid keys of the same
        (batch, head), and φ̃ stays in range (no overflow; see the subclass for underflow).
        """
        return self._run(self._stabilized, x, y, w, x_mask, y_mask)

    def _run(self, method, x, y, w, x_mask, y_mask):  # type: ignore[no-untyped-def]
        self._check_inputs(x, y, w, x_mask, y_mask)
        x_mask, y_mask = expand_mask(x_mask, x), expand_mask(y_mask, y)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            return method(x.to(dtype), y.to(dtype), w.to(dtype), x_mask, y_mask)

    # -- what subclasses implement ---------------------------------------------------------------
    def _scaled(self, x, y, w, x_mask, y_mask) -> Scaled:  # type: ignore[no-untyped-def]
        raise NotImplementedError(
            f"{type(self).__name__} must implement _scaled(x, y, w, x_mask, y_mask) -> "
            "(u_x, s_x, u_y, s_y) with φ = u · exp(s) (or subclass ExponentialFeatureMap and "
            "implement exponents())"
        )

    def _natural(self, x, y, w, x_mask, y_mask) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
        """Exact features u · exp(s) (0 on padding rows)."""
        ux, sx, uy, sy = self._scaled(x, y, w, x_mask, y_mask)
        return _times_exp(ux, sx), _times_exp(uy, sy)

    def _stabilized(self, x, y, w, x_mask, y_mask):  # type: ignore[no-untyped-def]
        """Keys divided by exp(T), T = max of s_y over valid keys; queries by exp(s_x,i)."""
        ux, sx, uy, sy = self._scaled(x, y, w, x_mask, y_mask)
        top = masked_amax(sy, y_mask, (-2, -1))  # (…, 1, 1)
        return ux, _times_exp(uy, sy - top), sx + top

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


def _times_exp(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """u · exp(s), exactly 0 where s = −∞ (padding) whatever u is."""
    return torch.where(torch.isneginf(s), torch.zeros_like(u), u * s.exp())


class ExponentialFeatureMap(FeatureMap):
    """Positive maps φ(x) = exp(e(x)) whose log-features ``e`` come from :meth:`exponents`.

    ``exponents`` returns the exact log-features (all constants included, e.g. −½ log m), so
    Σ exp(e_x + e_y) over features is the kernel estimate. Log-scaled form: s_i = max_r e_ir,
    u_i = exp(e_i − s_i) ∈ (0, 1]. Non-causal stabilizer (:meth:`stabilized`), per feature::

        c_r = max_j e_y,jr (valid keys),   φ̃(y_j)_r = exp(e_y,jr − c_r),
        M_i = max_r (e_x,ir + c_r),        φ̃(x_i)_r = exp(e_x,ir + c_r − M_i),

    so φ̃(x_i)_r φ̃(y_j)_r = exp(e_x,ir + e_y,jr − M_i) for every r, and the denominator
    Σ_r φ̃(x_i)_r Σ_j φ̃(y_j)_r ≥ 1 whenever a key is valid (the feature r* where the query max
    is reached has φ̃(x_i)_r* = 1 and Σ_j φ̃(y_j)_r* ≥ 1): it cannot underflow, at any input
    scale. Padding rows get exponent −∞ (feature exactly 0) and never enter the maxima.

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

    def _masked_exponents(self, x, y, w, x_mask, y_mask):  # type: ignore[no-untyped-def]
        ex, ey = self.exponents(x, y, w, x_mask, y_mask)
        if x_mask is not None:
            ex = ex.masked_fill(~x_mask[..., None], float("-inf"))
        if y_mask is not None:
            ey = ey.masked_fill(~y_mask[..., None], float("-inf"))
        return ex, ey

    def _scaled(self, x, y, w, x_mask, y_mask) -> Scaled:  # type: ignore[no-untyped-def]
        out: list[torch.Tensor] = []
        for e, mask in zip(self._masked_exponents(x, y, w, x_mask, y_mask), (x_mask, y_mask)):
            top = masked_amax(e, mask, (-1,))
            if mask is not None:
                top = top.masked_fill(~mask[..., None], float("-inf"))
            out += [(e - finite_or_zero(top)).exp(), top]
        return out[0], out[1], out[2], out[3]

    def _natural(self, x, y, w, x_mask, y_mask):  # type: ignore[no-untyped-def]
        ex, ey = self._masked_exponents(x, y, w, x_mask, y_mask)
        return ex.exp(), ey.exp()

    def _stabilized(self, x, y, w, x_mask, y_mask):  # type: ignore[no-untyped-def]
        ex, ey = self._masked_exponents(x, y, w, x_mask, y_mask)
        c = masked_amax(ey, y_mask, (-2,))  # (…, 1, M): one constant per feature
        ex = ex + c
        top = masked_amax(ex, x_mask, (-1,))  # (…, Lx, 1)
        return (ex - top).exp(), (ey - c).exp(), top
