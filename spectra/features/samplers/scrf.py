"""Signed circulant random features, SCRF (Feng, Hu & Liao, "Random Feature Mapping with Signed
Circulant Matrix Projection", IJCAI 2015, pp. 3490–3496; no arXiv version).

One block is the d × d signed circulant matrix P = diag(σ) C(c): c ~ N(0, I_d), σ iid
Rademacher ±1, and C(c)_{ij} = c_{(i−j) mod d}, i.e. C(c) x = c ⊛ x (circular convolution), the
matrix that the FFT diagonalizes: C(c) x = ifft(fft(c) · fft(x)). We build the block through
that identity, applied to the identity matrix (column j of C(c) is ifft(fft(c) · fft(e_j))),
with ``torch.fft``; the tests compare it with the explicit circulant matrix. Independent blocks
are stacked ⌈m/d⌉ times and cut to m rows.

Every row of C(c) is a permutation of c, so each row is exactly N(0, I_d) and every row of a
block has the same norm ‖c‖; the random signs σ decorrelate the rows' sums (Feng et al.: an
unsigned circulant makes Σ_i ω_i = (Σ_k c_k)·1). Rows are then rescaled to norms s_r:

* ``scale="chi"`` (default): s_r = ‖g_r‖, g_r ~ N(0, I_d) independent (χ_d), as ``orthogonal``
  does. A row's direction c-shift/‖c‖ is uniform on the sphere and independent of s_r, so every
  row is exactly N(0, I_d) (``marginally_gaussian`` True: posrf, trig, … stay unbiased) while rows
  of a block no longer share one norm. (The Spectraformer reference code, arXiv 2405.15310,
  computes this multiplier and then returns the unscaled matrix.)
* ``scale="none"``: the rows of diag(σ) C(c) as they are (norm ‖c‖ ~ χ_d, shared by the block);
  still exactly N(0, I_d) row by row.
* ``scale="sqrt_d"``: s_r = √d; rows are no longer Gaussian (``marginally_gaussian`` False).
"""

from __future__ import annotations

import math

import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, chi_norms, draw_device
from spectra.features.samplers.sorf import random_signs
from spectra.registry import SAMPLERS

__all__ = ["SCRFSampler", "circulant_fft"]

SCALES = ("chi", "none", "sqrt_d")


def circulant_fft(c: torch.Tensor) -> torch.Tensor:
    """C(c) with C_{ij} = c_{(i−j) mod d} for vectors c (…, d), via the FFT: shape (…, d, d).

    C = F⁻¹ diag(F c) F, so C e_j = ifft(fft(c) · fft(e_j)); real part of a float64 complex FFT.
    """
    d = c.shape[-1]
    eye = torch.eye(d, dtype=c.dtype, device=c.device)
    spectrum = torch.fft.fft(c)[..., :, None]  # (…, d, 1): frequency along rows
    columns = torch.fft.ifft(spectrum * torch.fft.fft(eye, dim=0), dim=-2)  # column j = C e_j
    return columns.real


@SAMPLERS.register("scrf")
class SCRFSampler(Sampler):
    """Blocks diag(σ) C(c) (Gaussian circulant, random row signs) built by FFT, χ_d row norms."""

    marginally_gaussian = True

    def __init__(
        self,
        dim: int,
        num_features: int,
        scale: str = "chi",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        if scale not in SCALES:
            raise ValueError(f"scrf sampler: unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        self.scale = scale
        self.marginally_gaussian = scale != "sqrt_d"

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        d, m = self.dim, self.num_features
        gen_device = draw_device(generator, device)
        blocks = math.ceil(m / d)
        c = torch.randn(blocks, d, generator=generator, device=gen_device, dtype=DRAW_DTYPE)
        signs = random_signs((blocks, d), generator, gen_device)
        w = (signs[..., None] * circulant_fft(c)).reshape(blocks * d, d)[:m]
        if self.scale == "none":
            return w
        if self.scale == "chi":
            norms = chi_norms(m, d, generator, gen_device)
        else:
            norms = torch.full((m,), math.sqrt(d), device=gen_device, dtype=DRAW_DTYPE)
        row_norms = w.norm(dim=-1).clamp_min(torch.finfo(DRAW_DTYPE).tiny)
        return w * (norms / row_norms)[:, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale!r}"
