"""Trigonometric random features, RFF (Rahimi & Recht 2007; Performer arXiv 2009.14794, §2.3).

φ(x) = m^(-1/2) exp(‖x‖²/2) [cos(Wx), sin(Wx)] (2m outputs): with ω ~ N(0, I_d),
E[cos(ωᵀ(x − y))] = exp(−‖x − y‖²/2), so E[φ(x)ᵀφ(y)] = exp((‖x‖² + ‖y‖²)/2 − ‖x − y‖²/2)
= exp(xᵀy). Not positive: estimates (and attention denominators) can be ≈ 0 or negative.

Log-scaled form (:meth:`~spectra.features.FeatureMap.scaled`): u = m^(-1/2) [cos Wx, sin Wx]
(|u_r| ≤ m^(-1/2)) and s = ‖x‖²/2. The stabilizers then divide every key by one common
constant (the max of ‖y_j‖²/2 over valid keys, or over keys j ≤ i in causal mode) and drop each
query's own factor, which cancels in its row's normalization.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from spectra.features.maps.base import (
    FeatureMap,
    Scaled,
    mask_rows,
    pairwise_quadratic,
    pairwise_sq_norms,
)
from spectra.registry import FEATURE_MAPS

__all__ = ["TrigonometricFeatures"]


@FEATURE_MAPS.register("trig")
class TrigonometricFeatures(FeatureMap):
    """RFF φ(x) = m^(-1/2) exp(‖x‖²/2) [cos Wx, sin Wx] (Rahimi & Recht 2007); not positive."""

    positive: ClassVar[bool] = False

    def output_dim(self, num_features: int) -> int:
        return 2 * num_features

    def _scaled(self, x, y, w, x_mask, y_mask) -> Scaled:  # type: ignore[override]
        out: list[torch.Tensor] = []
        for t, mask in ((x, x_mask), (y, y_mask)):
            proj = t @ w.transpose(-1, -2)
            u = torch.cat([proj.cos(), proj.sin()], dim=-1) / math.sqrt(w.shape[-2])
            out += mask_rows(u, 0.5 * t.square().sum(-1, keepdim=True), mask)
        return out[0], out[1], out[2], out[3]

    def iid_log_second_moment(self, x, y):  # type: ignore[override]
        """g = e^{(‖x‖²+‖y‖²)/2} cos(ωᵀ(x−y)): E[g²] = e^{‖x‖²+‖y‖²} (1 + e^{−2‖x−y‖²}) / 2."""
        u2 = pairwise_quadratic(x, -y)
        return (
            torch.logaddexp(torch.zeros_like(u2), -2.0 * u2)
            - math.log(2.0)
            + pairwise_sq_norms(x, y)
        )
