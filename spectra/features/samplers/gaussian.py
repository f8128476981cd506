"""iid Gaussian weight matrix (Rahimi & Recht 2007; Performer, arXiv 2009.14794)."""

from __future__ import annotations

import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device
from spectra.registry import SAMPLERS


@SAMPLERS.register("gaussian")
class GaussianSampler(Sampler):
    """iid entries: W_rl ~ N(0, 1)."""

    marginally_gaussian = True

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return torch.randn(
            self.num_features,
            self.dim,
            generator=generator,
            device=draw_device(generator, device),
            dtype=DRAW_DTYPE,
        )
