"""Random-feature attention: a registered sampler × a registered feature map (arXiv 2405.15310).

K(x, y) = exp(xᵀy) on x = q·d^(-1/4), y = k·d^(-1/4) is estimated by φ(x)ᵀφ(y) with
φ = ``feature_map`` applied with W = ``sampler.sample()`` ∈ R^{m×d} (Performer arXiv 2009.14794,
FAVOR++ 2205.15317, FAVOR# 2302.00787)::

    out = φ(X) (φ(Y)ᵀ V) / φ(X) (φ(Y)ᵀ 1)                         (non-causal)
    out_i = φ(x_i)ᵀ Σ_{j≤i} φ(y_j) v_jᵀ / φ(x_i)ᵀ Σ_{j≤i} φ(y_j)   (causal, chunked)

This is the output, not an approximation of it: the stabilizers (detached constants that cancel
exactly) keep every term in floating-point range, and the denominator guard never changes a
well-defined estimate (:mod:`spectra.ops.linear`: no ε for positive maps; for signed maps such
as ``trig`` |den| is clamped to ε on the natural scale).

Features are computed in float32 (float64 stays float64) with autocast disabled. Non-causal
fast path for exponential maps: their data statistics (none for posrf, gerf, hyperbolic; A* for
oprf, (Ψ, A*) for saderf, (A, B, D) for sderf: O(L·d) or O(L·d²), computed once, detached) are
fixed first, then the log-features are row-wise and run chunk by chunk with recomputation in
backward and O(L·d) memory (:func:`~spectra.ops.rowwise_exp_linear_attention`), with one
stabilizing constant per feature, which keeps every denominator ≥ 1 at any input scale; an
exponential map with only ``exponents`` (e.g. a plugin's data-dependent map) uses the fused
exp + attention function (:func:`~spectra.ops.exp_linear_attention`, the same stabilizer);
other maps (e.g. ``trig``, signed) the generic kernel on :meth:`FeatureMap.stabilized`
features. Causal mode (:func:`~spectra.ops.causal_linear_attention`) takes log-scaled features
(:meth:`FeatureMap.scaled`) and a running key max over j ≤ i, so no output depends on a later
token; it is exact unless a query's visible terms span more than fp32's range (~87 in log),
which needs inputs far beyond attention's usual scale. Data-dependent maps (statistics over all
tokens) are rejected in causal mode. The non-causal row-wise path relies on
``rowwise_exponents`` being row-wise (a token's features depend on that token, W and the
statistics only). Each path equals a plain reference (outputs and gradients; see the tests).

Weight matrix and redraws: W is a buffer (saved in checkpoints) drawn at construction. With
``redraw_interval=N``, every N-th training forward step draws a new W from a generator seeded by
(seed, layer_index, step) (:func:`redraw_seed`), so all DDP ranks draw the same W without
communication; the step counter ``redraw_step`` is a buffer too, so redraws resume from a
checkpoint. Eval never redraws. Learnable samplers (``sampler.learnable``) have no buffer: W is
``sampler.sample()`` at every forward (differentiable) and is never redrawn.

Causal mode uses the key stabilizer of the whole sequence (a detached common factor that
cancels exactly between numerator and denominator; future tokens affect earlier outputs only
through ε). Known limit: a query whose visible keys all have log-features more than ~85 below
the sequence's largest one (fp32 underflow) gets 0; that needs ‖y‖ far beyond attention's usual
range. Data-dependent maps (statistics over all tokens) are rejected in causal mode. The
non-causal row-wise path relies on ``rowwise_exponents`` being row-wise (a token's features
depend on that token, W and the statistics only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from spectra.attention.base import Attention
from spectra.checks import positive_int
from spectra.features.maps.base import ExponentialFeatureMap, FeatureMap
from spectra.features.samplers.base import Sampler, redraw_seed, seeded_generator
from spectra.ops.linear import (
    causal_linear_attention,
    exp_linear_attention,
    linear_attention,
    rowwise_exp_linear_attention,
)
from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS

__all__ = ["RandomFeatureAttention", "redraw_seed"]


def _options(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of option names to values, got {value!r}")
    return dict(value)


@ATTENTIONS.register("random_features")
class RandomFeatureAttention(Attention):
    """Random-feature attention φ(X)(φ(Y)ᵀV) / φ(X)(φ(Y)ᵀ1) with W from a registered sampler.

    Options: ``num_features`` m > 0; ``sampler`` / ``feature_map`` registered names (with
    ``sampler_options`` / ``feature_map_options``; the sampler gets ``seed`` and ``layer_index``
    too, as every sampler does); ``redraw_interval`` (None or N > 0 training steps); ``seed``
    and ``layer_index`` (seed the draws); ``chunk_size`` (causal chunk length); ``eps``
    (signed maps only: the floor of |denominator| on the natural scale);
    ``stabilize`` (max-shift stabilizers, on by default; they do not change the result).
    """

    def __init__(
        self,
        head_dim: int,
        num_features: int = 256,
        sampler: str = "orthogonal",
        feature_map: str = "posrf",
        redraw_interval: int | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        feature_map_options: Mapping[str, Any] | None = None,
        chunk_size: int = 128,
        eps: float = 1e-6,
        stabilize: bool = True,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(head_dim, seed=seed, layer_index=layer_index)
        self.num_features = positive_int(num_features, "num_features (m)")
        if redraw_interval is not None:
            positive_int(redraw_interval, "redraw_interval (None or a number of steps)")
        self.redraw_interval = redraw_interval
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.stabilize = bool(stabilize)
        for label, name in (("sampler", sampler), ("feature_map", feature_map)):
            if not isinstance(name, str):
                raise ValueError(f"{label} must be a registered name (str), got {name!r}")

        s_opts = _options(sampler_options, "sampler_options")
        clash = sorted({"dim", "num_features", "layer_index"} & set(s_opts))
        if clash:
            raise ValueError(
                f"sampler_options must not set {clash}: they come from head_dim, num_features "
                "and the layer"
            )
        s_opts.setdefault("seed", seed)  # the sampler contract: every sampler takes seed, layer
        self.sampler: Sampler = SAMPLERS.build(
            sampler, dim=head_dim, num_features=num_features, layer_index=layer_index, **s_opts
        )
        self.feature_map: FeatureMap = FEATURE_MAPS.build(
            feature_map, **_options(feature_map_options, "feature_map_options")
        )
        self.sampler_name, self.feature_map_name = sampler, feature_map
        self.register_buffer("redraw_step", torch.zeros((), dtype=torch.long))
        weight = None if self.learnable else self._draw(0, torch.device("cpu"), torch.float32)
        self.register_buffer("weight", weight)

    # -- weight matrix ----------------------------------------------------------------------------
    @property
    def learnable(self) -> bool:
        """Whether W is trained (a learnable sampler): then it is never redrawn."""
        return self.sampler.learnable

    @property
    def output_dim(self) -> int:
        """Number of features M = ``feature_map.output_dim(m)``."""
        return self.feature_map.output_dim(self.num_features)

    def _draw(self, step: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        gen = seeded_generator(redraw_seed(self.seed, self.layer_index, step))
        with torch.no_grad():
            return self.sampler.sample(gen, device=device, dtype=dtype)

    @torch.no_grad()
    def redraw(self, step: int) -> None:
        """Replace W by the draw for ``step`` (seeded by (seed, layer_index, step))."""
        if self.learnable:
            raise ValueError(
                f"the {self.sampler_name!r} sampler is learnable: its W is trained, not redrawn"
            )
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        assert self.weight is not None
        self.weight.copy_(self._draw(step, self.weight.device, self.weight.dtype))

    def current_weight(self, device: torch.device | None = None) -> torch.Tensor:
        """W (m, d) used by the next forward: the buffer, or ``sampler.sample()`` if learnable."""
        if self.learnable:
            return self.sampler.sample(device=device)
        assert self.weight is not None
        return self.weight if device is None else self.weight.to(device)

    def _maybe_redraw(self) -> None:
        if not self.training or self.redraw_interval is None or self.learnable:
            return
        step = int(self.redraw_step)
        if step > 0 and step % self.redraw_interval == 0:
            self.redraw(step)
        self.redraw_step += 1

    # -- attention --------------------------------------------------------------------------------
    def _scaled_exponents(
        self, q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, *stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row-wise log-features on x = q·d^(-1/4), y = k·d^(-1/4) given the map's statistics
        (scaled chunk by chunk, so no scaled copy of q, k is kept; masks are applied by the
        caller)."""
        scale = self.head_dim**-0.25
        return self.feature_map.rowwise_exponents(q * scale, k * scale, w, *stats)

    def attend(self, q, k, v, mask, causal):  # type: ignore[override]
        if causal and self.feature_map.data_dependent:
            raise ValueError(
                f"feature map {self.feature_map_name!r} is data-dependent (its statistics look at "
                "all tokens, including future ones), so it cannot be used with causal=True; use a "
                "data-independent map: posrf, gerf (fixed A), trig or hyperbolic"
            )
        self._maybe_redraw()
        scale = self.head_dim**-0.25
        token_mask = self.token_mask(mask, q)
        fm = self.feature_map
        w = self.current_weight(q.device).to(q.dtype)
        if causal:
            if not self.stabilize:
                phi_x, phi_y = fm(q * scale, k * scale, w, token_mask, token_mask, stabilize=False)
                return causal_linear_attention(
                    phi_x, phi_y, v, chunk_size=self.chunk_size, eps=self.eps, positive=fm.positive
                )
            ux, sx, uy, sy = fm.scaled(q * scale, k * scale, w, token_mask, token_mask)
            return causal_linear_attention(
                ux,
                uy,
                v,
                chunk_size=self.chunk_size,
                eps=self.eps,
                positive=fm.positive,
                x_log_scale=sx,
                y_log_scale=sy,
            )
        if isinstance(fm, ExponentialFeatureMap) and fm.has_rowwise_exponents:
            stats: tuple[torch.Tensor, ...] = ()
            if fm.data_dependent:
                with torch.no_grad():
                    stats = fm.statistics(q * scale, k * scale, token_mask, token_mask)
            return rowwise_exp_linear_attention(
                q,
                k,
                v,
                w,
                self._scaled_exponents,
                x_mask=token_mask,
                y_mask=token_mask,
                stabilize=self.stabilize,
                params=[p for p in fm.parameters() if p.requires_grad],
                stats=stats,
            )
        x, y = q * scale, k * scale
        if isinstance(fm, ExponentialFeatureMap):
            ex, ey = fm.exponents(x, y, w, token_mask, token_mask)
            return exp_linear_attention(
                ex, ey, v, x_mask=token_mask, y_mask=token_mask, stabilize=self.stabilize
            )
        if self.stabilize:
            phi_x, phi_y, log_scale = fm.stabilized(x, y, w, token_mask, token_mask)
        else:
            (phi_x, phi_y), log_scale = fm(x, y, w, token_mask, token_mask, stabilize=False), None
        return linear_attention(
            phi_x, phi_y, v, eps=self.eps, positive=fm.positive, log_scale=log_scale
        )

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, num_features={self.num_features}, "
            f"sampler={self.sampler_name!r}, feature_map={self.feature_map_name!r}, "
            f"redraw_interval={self.redraw_interval}, seed={self.seed}"
        )
