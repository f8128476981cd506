"""``kernel_estimate``: a sampler × feature-map estimate of the softmax kernel exp(x yᵀ).

Used by tests and benchmarks to study bias and variance of every registered combination
(Spectraformer, arXiv 2405.15310). The result is the true estimate φ(x)ᵀφ(y): stabilizers are
off, and there is no attention normalization.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from spectra.features.samplers.base import seeded_generator
from spectra.registry import FEATURE_MAPS, SAMPLERS

__all__ = ["kernel_estimate"]

_RESERVED = ("dim", "num_features", "seed")  # set by kernel_estimate itself


def kernel_estimate(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sampler: str,
    feature_map: str,
    num_features: int,
    seed: int = 0,
    sampler_options: Mapping[str, Any] | None = None,
    feature_map_options: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """The estimate φ(x)ᵀφ(y) of exp(x yᵀ), shape (…, Lx, Ly), in the dtype of ``x``.

    ``x`` (…, Lx, d) and ``y`` (…, Ly, d) are already scaled (no d^(-1/4) here). The sampler
    ``sampler`` (built with dim = d, ``num_features`` = m) draws W from ``seeded_generator(seed)``
    in x's dtype; the sampler also gets ``seed`` (every sampler takes one; a learnable one
    initializes from it), so different seeds give independent draws. ``sampler_options`` and
    ``feature_map_options`` go to their component as given (the registry rejects an option the
    component does not take with a ``ValueError`` listing the allowed ones); an unknown name
    raises ``UnknownComponentError``.
    """
    SAMPLERS.get(sampler), FEATURE_MAPS.get(feature_map)  # unknown names fail first
    what = f"kernel_estimate(sampler={sampler!r}, feature_map={feature_map!r})"
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what}: x and y must be tensors")
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{what}: x and y must be (..., L, d) with the same head dim d, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    sampler_options = dict(sampler_options or {})
    reserved = sorted(set(sampler_options) & set(_RESERVED))
    if reserved:
        raise ValueError(f"{what}: {', '.join(reserved)} is set by kernel_estimate, do not pass it")
    draw = SAMPLERS.build(sampler, dim=x.shape[-1], num_features=num_features, seed=seed,
                          **sampler_options).to(x.device)
    fmap = FEATURE_MAPS.build(feature_map, **(feature_map_options or {}))
    with torch.no_grad():
        w = draw.sample(seeded_generator(seed), device=x.device, dtype=x.dtype)
    phi_x, phi_y = fmap(x, y, w.detach(), stabilize=False)
    return (phi_x @ phi_y.transpose(-1, -2)).to(x.dtype)
