"""Trigonometric random features, RFF (Rahimi & Recht 2007; Performer arXiv 2009.14794, §2.3).

φ(x) = m^(-1/2) exp(‖x‖²/2) [cos(Wx), sin(Wx)] (2m outputs): with ω ~ N(0, I_d),
E[cos(ωᵀ(x − y))] = exp(−‖x − y‖²/2), so E[φ(x)ᵀφ(y)] = exp((‖x‖² + ‖y‖²)/2 − ‖x − y‖²/2)
= exp(xᵀy). Not positive: estimates (and attention denominators) can be ≈ 0 or negative.

Stabilizer (unbiased): the query factor exp(‖x_i‖²/2) is a per-row constant and cancels in that
row's normalization, so it is dropped; the key factors exp(‖y_j‖²/2) differ per key, so they are
divided by one common constant exp(max_j ‖y_j‖²/2) over the valid keys of the (batch, head)
(detached). Stabilized features are then bounded by m^(-1/2) in absolute value.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from spectra.features.maps.base import FeatureMap, masked_amax
from spectra.registry import FEATURE_MAPS

__all__ = ["TrigonometricFeatures"]


@FEATURE_MAPS.register("trig")
class TrigonometricFeatures(FeatureMap):
    """RFF φ(x) = m^(-1/2) exp(‖x‖²/2) [cos Wx, sin Wx] (Rahimi & Recht 2007); not positive."""

    positive: ClassVar[bool] = False

    def output_dim(self, num_features: int) -> int:
        return 2 * num_features

    def _features(self, x, y, w, x_mask, y_mask, stabilize):  # type: ignore[override]
        m = w.shape[-2]
        half_sq_x = 0.5 * x.square().sum(-1, keepdim=True)  # (…, Lx, 1)
        half_sq_y = 0.5 * y.square().sum(-1, keepdim=True)
        if stabilize:
            log_scale_x = torch.zeros_like(half_sq_x)
            log_scale_y = half_sq_y - masked_amax(half_sq_y, y_mask, (-2, -1))
        else:
            log_scale_x, log_scale_y = half_sq_x, half_sq_y
        return (
            self._trig(x, w, log_scale_x - 0.5 * math.log(m)),
            self._trig(y, w, log_scale_y - 0.5 * math.log(m)),
        )

    @staticmethod
    def _trig(t: torch.Tensor, w: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        proj = t @ w.transpose(-1, -2)
        return log_scale.exp() * torch.cat([proj.cos(), proj.sin()], dim=-1)
