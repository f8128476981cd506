"""iid Gaussian weight matrix (Rahimi & Recht 2007; Performer, arXiv 2009.14794)."""

from __future__ import annotations

import torch

from spectra.features.samplers.base import Sampler
from spectra.registry import SAMPLERS


@SAMPLERS.register("gaussian")
class GaussianSampler(Sampler):
    """iid entries: W_rl ~ N(0, 1)."""

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randn(
            self.num_features, self.dim, generator=generator, device=gen_device, dtype=dtype
        )
