"""Learned spectral weights: W itself is an ``nn.Parameter`` (Spectraformer, arXiv 2405.15310).

Initialised with iid N(0, 1) entries from :meth:`Sampler.init_generator` — seeded by (``seed``,
``layer_index``), so each layer starts from its own W — (so rows are N(0, I_d) at init; training
moves them, after which no distributional statement holds). ``sample()`` returns the parameter
(differentiable); the ``generator`` argument is ignored and W is never redrawn.
"""

from __future__ import annotations

import torch
from torch import nn

from spectra.features.samplers.base import DRAW_DTYPE, Sampler
from spectra.registry import SAMPLERS

__all__ = ["LearnableSampler"]


@SAMPLERS.register("learnable")
class LearnableSampler(Sampler):
    """W ∈ R^{m×d} as a trainable parameter, Gaussian init from (seed, layer); generator ignored."""

    marginally_gaussian = True  # at initialisation

    def setup(self) -> None:
        init = torch.randn(
            self.num_features, self.dim, generator=self.init_generator(), dtype=DRAW_DTYPE
        )
        self.weight = nn.Parameter(init.to(torch.get_default_dtype()))

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, seed={self.seed}"
