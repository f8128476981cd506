"""Weight-matrix samplers (Spectraformer, arXiv 2405.15310): each draws W ∈ R^{m×d}."""

from spectra.features.samplers import gaussian  # noqa: F401
from spectra.features.samplers.base import Sampler, seeded_generator

__all__ = ["Sampler", "seeded_generator"]
