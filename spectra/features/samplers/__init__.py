"""Weight-matrix samplers (Spectraformer, arXiv 2405.15310): each draws W ∈ R^{m×d}."""

from spectra.features.samplers import (  # noqa: F401  (imports register the samplers)
    fastfood,
    gaussian,
    gq,
    learnable,
    mm,
    orthogonal,
    qmc,
    rom,
    scrf,
    sgq,
    sorf,
)
from spectra.features.samplers.base import Sampler, seeded_generator

__all__ = ["Sampler", "seeded_generator"]
