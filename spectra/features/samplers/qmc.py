"""Randomized quasi-Monte-Carlo weights: scrambled Sobol points mapped by Φ⁻¹ (Spectraformer,
arXiv 2405.15310; Owen-style RQMC).

u_r ∈ [0, 1)^d are the first m points of a scrambled Sobol sequence
(``torch.quasirandom.SobolEngine(d, scramble=True, seed=s)``, s drawn from the generator) and
ω_r = Φ⁻¹(u_r) (``torch.special.ndtri``). Scrambling includes a uniform random digital shift,
so each point is uniform on the 2⁻³⁰ grid of the engine; adding an independent uniform jitter in
[0, 2⁻³⁰) per coordinate makes each u_r exactly Uniform(0, 1)^d, hence each row exactly N(0, I_d)
(unbiased) while the point set stays low-discrepancy. u is clamped into [2⁻⁶⁰, 1 − 2⁻⁵³] (float64)
only to guard against rounding to 0 or 1. A single randomized point set is drawn: rows are
dependent (that is the point), and m need not be a power of two (Sobol's balance properties are
exact only for powers of two; unbiasedness holds for any m). Sobol supports d ≤ 21201.
"""

from __future__ import annotations

import torch
from torch.quasirandom import SobolEngine

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device
from spectra.registry import SAMPLERS

__all__ = ["QMCSampler"]

_SEED_HIGH = 2**62


@SAMPLERS.register("qmc")
class QMCSampler(Sampler):
    """Scrambled Sobol points u mapped to ω = Φ⁻¹(u): rows marginally N(0, I_d), low discrepancy."""

    marginally_gaussian = True
    max_dim = SobolEngine.MAXDIM

    def setup(self) -> None:
        if self.dim > self.max_dim:
            raise ValueError(
                f"qmc sampler: torch's SobolEngine supports dim <= {self.max_dim}, "
                f"got dim={self.dim}"
            )

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        d, m = self.dim, self.num_features
        gen_device = draw_device(generator, device)
        seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator, device=gen_device))
        engine = SobolEngine(dimension=d, scramble=True, seed=seed)
        u = engine.draw(m, dtype=DRAW_DTYPE).to(gen_device)  # on the 2^-MAXBIT grid
        jitter = torch.rand(m, d, generator=generator, device=gen_device, dtype=DRAW_DTYPE)
        u = u + jitter * 2.0 ** (-SobolEngine.MAXBIT)
        u = u.clamp(2.0**-60, 1.0 - 2.0**-53)
        return torch.special.ndtri(u)
