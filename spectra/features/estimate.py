"""``kernel_estimate``: a sampler × feature-map estimate of the softmax kernel exp(x yᵀ).

Used by tests and benchmarks to study bias and variance of every registered combination
(Spectraformer, arXiv 2405.15310). The result is the true estimate φ(x)ᵀφ(y): stabilizers are
off, and there is no attention normalization.
"""

from __future__ import annotations

from typing import Any

import torch

from spectra.features.samplers.base import seeded_generator
from spectra.registry import FEATURE_MAPS, SAMPLERS, accepted_options

__all__ = ["kernel_estimate", "split_options"]

_RESERVED = ("dim", "num_features")


def split_options(
    sampler_cls: Any, map_cls: Any, options: dict[str, Any], *, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``options`` between a sampler and a feature map by their constructor signatures.

    An option goes to every component that names it; failing that, to any that takes
    ``**kwargs``; an option nobody accepts raises a ``ValueError`` listing the allowed ones.
    """
    s_names, s_var = accepted_options(sampler_cls)
    f_names, f_var = accepted_options(map_cls)
    s_names -= set(_RESERVED)
    to_sampler: dict[str, Any] = {}
    to_map: dict[str, Any] = {}
    unknown = []
    for key, value in options.items():
        if key in _RESERVED:
            raise ValueError(f"{what}: {key!r} is set by kernel_estimate, do not pass it")
        if key in s_names or key in f_names:
            if key in s_names:
                to_sampler[key] = value
            if key in f_names:
                to_map[key] = value
        elif s_var or f_var:
            if s_var:
                to_sampler[key] = value
            if f_var:
                to_map[key] = value
        else:
            unknown.append(key)
    if unknown:
        allowed = sorted((s_names | f_names) - {"seed"})
        raise ValueError(
            f"{what} got unknown option(s) {', '.join(map(repr, sorted(unknown)))}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return to_sampler, to_map


def kernel_estimate(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sampler: str,
    feature_map: str,
    num_features: int,
    seed: int = 0,
    **options: Any,
) -> torch.Tensor:
    """The estimate φ(x)ᵀφ(y) of exp(x yᵀ), shape (…, Lx, Ly), in the dtype of ``x``.

    ``x`` (…, Lx, d) and ``y`` (…, Ly, d) are already scaled (no d^(-1/4) here). The sampler
    ``sampler`` (built with dim = d, ``num_features`` = m) draws W from ``seeded_generator(seed)``
    in x's dtype; the sampler also gets ``seed`` (every sampler takes one; a learnable one
    initializes from it), so different seeds give independent draws. ``options`` are split
    between the sampler and the feature map by their constructor signatures; an option neither
    accepts raises ``ValueError``; an unknown name raises ``UnknownComponentError``.
    """
    sampler_cls = SAMPLERS.get(sampler)
    map_cls = FEATURE_MAPS.get(feature_map)
    what = f"kernel_estimate(sampler={sampler!r}, feature_map={feature_map!r})"
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{what}: x and y must be tensors")
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{what}: x and y must be (..., L, d) with the same head dim d, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    to_sampler, to_map = split_options(sampler_cls, map_cls, options, what=what)
    to_sampler.setdefault("seed", seed)  # every sampler takes seed (the base contract)
    draw = sampler_cls(dim=x.shape[-1], num_features=num_features, **to_sampler).to(x.device)
    fmap = map_cls(**to_map)
    with torch.no_grad():
        w = draw.sample(seeded_generator(seed), device=x.device, dtype=x.dtype)
    phi_x, phi_y = fmap(x, y, w.detach(), stabilize=False)
    return (phi_x @ phi_y.transpose(-1, -2)).to(x.dtype)
