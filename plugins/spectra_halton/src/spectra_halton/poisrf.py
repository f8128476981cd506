"""Poisson random features, PoisRF: discretely-induced random features (DIRF) from "Chefs' Random
Tables: Non-Trigonometric Random Features" (Likhosherstov et al., NeurIPS 2022, arXiv 2205.15317).

DIRF. For a random vector ω of non-negative integers with iid entries of law p (p(k) > 0 for all
k ≥ 0), the Taylor series of exp gives

    exp(xᵀy) = Π_l Σ_k (x_l y_l)^k / k! = E[Π_l (x_l y_l)^{ω_l} / (ω_l! p(ω_l))],

so f(ω, x) = Π_l x_l^{ω_l} / √(ω_l! p(ω_l)) satisfies E[f(ω, x) f(ω, y)] = exp(xᵀy), and
φ(x) = m^{-1/2} [f(ω_r, x)]_r is unbiased. With Poisson entries, p(k) = e^{−λ} λ^k / k!
(one rate λ_l > 0 per coordinate)::

    f(ω, x) = Π_l e^{λ_l/2} (x_l / √λ_l)^{ω_l}.

Variance. Per coordinate E[f_l(ω, a)² f_l(ω, b)²] = Σ_k e^{−λ} λ^k/k! · e^{2λ} (ab)^{2k} λ^{−2k}
= exp(λ + a²b²/λ), so one feature has second moment exp(Σ_l λ_l + x_l² y_l² / λ_l) and the
m-feature estimate variance (exp(Σ_l λ_l + x_l² y_l²/λ_l) − exp(2xᵀy)) / m
(:func:`poisrf_log_second_moment`).

Rate. ``lam=None`` (default) picks, per (batch, head), the λ that minimizes the mean over all
valid query–key pairs of the log second moment, Σ_l λ_l + mean_i x_il² · mean_j y_jl² / λ_l:

    λ_l* = √(mean_i x_il² · mean_j y_jl²)

(clamped at 1e-6; detached, a constant for autograd, like OPRF's A). This looks at all tokens:
the map is data-dependent, hence not causal. A float ``lam`` fixes λ_l = lam for all l
(data-independent, usable causally). Any λ > 0 keeps the estimate unbiased.

Composing with the framework's Gaussian weight matrices (Gaussian copula). Samplers give rows
W_r that are marginally N(0, I_d); ω_rl = F⁻¹_{Pois(λ_l)}(Φ(W_rl)) then has iid Poisson(λ_l)
entries within each row, so the estimate is unbiased on every sampler with
``marginally_gaussian``; dependence between rows (orthogonal, QMC, Halton) becomes dependence
between the Poisson rows, which changes the variance, not the mean. ω is discrete, so W gets no
gradient through this map (learnable samplers do not learn with it).

Sign. x_l^k < 0 for x_l < 0 and odd k: the features are NOT positive (like ``trig``), and
attention denominators can be ≈ 0 or negative. Features are computed as sign · exp(log-magnitude)
with log|f| = Σ_l λ_l/2 + ω_l (log|x_l| − ½ log λ_l), given to the framework in log-scaled form
φ = u · exp(s) (s = a row's max log-magnitude, detached; ``FeatureMap.scaled``), so the
framework's stabilizers and its denominator guard apply unchanged. x_l = 0 gives
0^0 = 1 and 0^k = 0 (k ≥ 1) exactly; the gradient at x_l = 0 is taken as 0 (a null set).
"""

from __future__ import annotations

import math

import torch

from spectra.features import FeatureMap
from spectra.features.maps.base import mask_rows
from spectra.registry import FEATURE_MAPS

__all__ = ["PoissonRandomFeatures", "optimal_rate", "poisrf_log_second_moment", "poisson_icdf"]

MIN_RATE = 1e-6
_ZERO_LOG = 1.0e4  # log|0| stand-in: ω ≥ 1 gives exp(−1e4 ω) = 0 exactly; ω = 0 gives 0 · … = 0
_UNIT = 1e-300  # keeps u and 1 − u away from 0 (a probability-1e-300 truncation)


def poisson_icdf(u: torch.Tensor, lam: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """Quantile F⁻¹(u) = min{k ≥ 0 : P(Pois(λ) ≤ k) ≥ u} for ``u`` (…, n) and rates ``lam`` (…).

    ``lam`` holds one rate per row of ``u`` (leading shapes broadcast). ``v = 1 − u`` may be given
    separately (e.g. Φ(−w) for u = Φ(w)) to keep precision when u ≈ 1. One table per rate of
    P(X ≤ k) = Q(k+1, λ) (``gammaincc``) and P(X > k) = P(k+1, λ) (``gammainc``), long enough that
    P(X > K−1) ≤ min v; then ω = #{k : P(X ≤ k) < u} when u ≤ ½, and
    #{k : P(X > k) > v} otherwise (each side accurate on its own tail). u and v are clamped at
    1e-300. Computed in float64; returns float64 counts of shape (…, n).
    """
    lam = lam.to(torch.float64)
    if not bool(torch.isfinite(lam).all()) or bool((lam <= 0).any()):
        raise ValueError("poisson_icdf: rates λ must be finite and > 0")
    u = u.to(torch.float64)
    v = (1.0 - u) if v is None else v.to(torch.float64)
    batch = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1], lam.shape)
    n = u.shape[-1]
    u = u.clamp(_UNIT, 1.0).expand(*batch, n)
    v = v.clamp(_UNIT, 1.0).expand(*batch, n)
    lam = lam.expand(batch)[..., None]  # (…, 1)
    v_min = float(v.min()) if v.numel() else 1.0
    size = 16
    while True:  # grow the table until its last tail probability is below every v
        k1 = torch.arange(1, size + 1, dtype=torch.float64, device=lam.device)  # k + 1
        sf = torch.special.gammainc(k1, lam)  # P(X > k), (…, K), non-increasing in k
        if bool((sf[..., -1] <= v_min).all()) or size > 1_000_000:
            break
        size *= 2
    cdf = torch.special.gammaincc(k1, lam)  # P(X ≤ k), non-decreasing in k
    # Counting comparisons over the (short) table; the tensors are W-sized (…, n, K), never
    # token-sized. (torch.searchsorted does the same in O(log K) but is erratically slow on CPU
    # for small batched inputs.)
    below_u = (cdf[..., None, :] < u[..., None]).sum(-1)  # #{k : P(X ≤ k) < u}
    above_v = (sf[..., None, :] > v[..., None]).sum(-1)  # #{k : P(X > k) > v}
    return torch.where(u <= 0.5, below_u, above_v).to(torch.float64)


@torch.no_grad()
def optimal_rate(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """λ* = √(mean_i x_il² · mean_j y_jl²) over valid tokens, shape (…, d), ≥ ``MIN_RATE``."""

    def mean_square(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        sq = t.detach().square()
        if mask is None:  # a sum over max(L, 1): an empty sequence gives 0, not NaN
            return sq.sum(dim=-2) / max(t.shape[-2], 1)
        weight = mask.expand(t.shape[:-1])[..., None].to(t.dtype)
        return (sq * weight).sum(dim=-2) / weight.sum(dim=-2).clamp_min(1.0)

    return (mean_square(x, x_mask) * mean_square(y, y_mask)).sqrt().clamp_min(MIN_RATE)


def poisrf_log_second_moment(
    x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor | float
) -> torch.Tensor:
    """log E[f(ω,x)² f(ω,y)²] = Σ_l λ_l + x_l² y_l² / λ_l of one PoisRF feature, shape (…)."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)  # scalar or (…, d)
    return (lam + x.square() * y.square() / lam).expand(torch.broadcast_shapes(
        lam.shape, x.shape, y.shape)).sum(-1)


def _masked_amax(e: torch.Tensor, mask: torch.Tensor | None, dims: tuple[int, ...]) -> torch.Tensor:
    """Detached max of ``e`` (…, L, m) over ``dims`` ignoring masked rows; 0 where all masked."""
    e = e.detach()
    if mask is not None:
        e = e.masked_fill(~mask[..., None], -math.inf)
    top = e.amax(dim=dims, keepdim=True)
    return torch.where(torch.isfinite(top), top, torch.zeros_like(top))


def _log_abs_and_negative(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log|t| with log 0 → −1e4, 1 where t < 0 else 0); no NaN gradient at t = 0."""
    zero = t == 0
    safe = torch.where(zero, torch.ones_like(t), t.abs())
    log_abs = torch.where(zero, torch.full_like(t, -_ZERO_LOG), safe.log())
    return log_abs, (t < 0).to(t.dtype)


@FEATURE_MAPS.register("poisrf")
class PoissonRandomFeatures(FeatureMap):
    """Poisson RF (DIRF, arXiv 2205.15317): f = Π_l e^{λ_l/2} (x_l/√λ_l)^{ω_l}; not positive.

    Option ``lam``: None (default) = variance-minimizing λ_l* from the data (not causal), or a
    fixed rate > 0 (data-independent).
    """

    positive = False
    data_dependent = True

    def __init__(self, lam: float | None = None) -> None:
        super().__init__()
        if lam is not None:
            if isinstance(lam, bool) or not isinstance(lam, (int, float)):
                raise ValueError(f"poisrf: lam must be None or a number > 0, got {lam!r}")
            if not (math.isfinite(lam) and lam > 0):
                raise ValueError(f"poisrf: lam must be a finite number > 0 (or None), got {lam}")
            lam = float(lam)
        self.lam = lam
        # A fixed rate does not look at the data: then the map is causal-safe.
        self.data_dependent = lam is None

    def rates(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """λ, shape (…, d) (per leading index) or (d,) for a fixed rate; detached."""
        if self.lam is None:
            return optimal_rate(x, y, x_mask, y_mask)
        return torch.full((x.shape[-1],), self.lam, dtype=x.dtype, device=x.device)

    def counts(self, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """ω_rl = F⁻¹_{Pois(λ_l)}(Φ(W_rl)) (Gaussian copula) for W (…, m, d) and λ (…, d); the
        leading dims broadcast, the result is (…, m, d) in float64."""
        w = w.detach().to(torch.float64)
        # Φ(w) and 1 − Φ(w) via erfc: torch.special.ndtr is 1 + erf(·) inside and underflows to
        # 0 below w ≈ −8.3, which would put all of the far tail on one count.
        u = 0.5 * torch.special.erfc(-w / math.sqrt(2.0))  # (…, m, d)
        v = 0.5 * torch.special.erfc(w / math.sqrt(2.0))
        # one row per coordinate l (rate λ_l): quantiles of the m entries of column l
        counts = poisson_icdf(u.transpose(-1, -2), lam.detach(), v.transpose(-1, -2))
        return counts.transpose(-1, -2)

    def _scaled(self, x, y, w, x_mask, y_mask):  # type: ignore[override]
        """Log-scaled form φ = u · exp(s): s = a row's max log-magnitude, u = sign · exp(e − s)."""
        m = w.shape[-2]
        lam = self.rates(x, y, x_mask, y_mask)  # (…, d)
        omega = self.counts(w, lam).to(x.dtype)  # (…, m, d)
        log_lam = lam.log()[..., None, :]
        # log-magnitude constant of feature r: Σ_l λ_l/2 − ½ Σ_l ω_rl log λ_l − ½ log m
        const = 0.5 * (lam.sum(-1)[..., None] - (omega * log_lam).sum(-1)) - 0.5 * math.log(m)
        const = const[..., None, :]  # (…, 1, m)
        omega_t = omega.transpose(-1, -2)
        out: list[torch.Tensor] = []
        for t, mask in ((x, x_mask), (y, y_mask)):
            log_abs, negative = _log_abs_and_negative(t)
            e = log_abs @ omega_t + const  # (…, L, m)
            sign = 1.0 - 2.0 * torch.remainder(negative @ omega_t, 2.0)
            top = _masked_amax(e, None, (-1,))  # (…, L, 1), detached
            out += mask_rows(sign * (e - top).exp(), top, mask)
        return out[0], out[1], out[2], out[3]

    def extra_repr(self) -> str:
        return f"lam={self.lam}"
