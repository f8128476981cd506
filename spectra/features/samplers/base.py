"""Base class of weight-matrix samplers: draw W = [ω_1 … ω_m]ᵀ ∈ R^{m×d}.

Every sampler takes ``seed`` and ``layer_index`` (keyword-only, stored by :class:`Sampler`):
the attention passes its own. Random draws of W come from the generator given to
:meth:`Sampler.sample`; a sampler that draws at construction (a learnable one's initial W) uses
:meth:`Sampler.init_generator`, seeded by :func:`redraw_seed` (seed, layer_index, 0), the same
seed the attention's first W comes from.

Also the small drawing helpers the built-in samplers share: where to draw (the generator's
device), in which precision (float64, then cast), and χ_d row norms.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from spectra.checks import positive_int, seed_and_layer

__all__ = [
    "DRAW_DTYPE",
    "Sampler",
    "chi_norms",
    "draw_device",
    "positive_int",
    "redraw_seed",
    "seeded_generator",
]

DRAW_DTYPE = torch.float64
"""Precision in which the built-in random samplers draw and post-process W before casting.

Drawing in one fixed precision makes the same seed give the same W (up to rounding) whatever
dtype is requested, and keeps QR / SVD post-processing accurate.
"""


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def redraw_seed(seed: int, layer_index: int | None, step: int) -> int:
    """Seed of the generator that draws W at ``step`` (deterministic, the same on every rank).

    (seed, None, 0) → ``seed`` itself (the W drawn at construction of an unnumbered layer is
    ``sampler.sample(seeded_generator(seed))``); any other triple → the first 63 bits of
    SHA-256("seed:layer:step").
    """
    if layer_index is None and step == 0:
        return int(seed)
    key = f"{int(seed)}:{'-' if layer_index is None else int(layer_index)}:{int(step)}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Device to draw on: the generator's (so a seed means one W everywhere), else ``device``."""
    return generator.device if generator is not None else device


def chi_norms(
    n: int, dim: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` iid χ_dim variables: norms of independent N(0, I_dim) vectors, in ``DRAW_DTYPE``."""
    return torch.randn(n, dim, generator=generator, device=device, dtype=DRAW_DTYPE).norm(dim=-1)


class Sampler(nn.Module):
    """Draws a (num_features, dim) weight matrix whose rows are (marginally) ω ~ N(0, I_d).

    Subclasses implement :meth:`_sample`. ``marginally_gaussian`` says whether each row is
    exactly N(0, I_d) (so feature maps built on it are unbiased); structured and
    moment-matched samplers set it to False (asymptotically unbiased only). It is a class
    default that an instance may override when an option changes the row distribution (e.g.
    ``orthogonal`` with ``scale="sqrt_d"``).
    """

    marginally_gaussian: bool = True

    def __init__(
        self, dim: int, num_features: int, *, seed: int = 0, layer_index: int | None = None
    ) -> None:
        super().__init__()
        self.dim = positive_int(dim, "dim")
        self.num_features = positive_int(num_features, "num_features (m)")
        self.seed, self.layer_index = seed_and_layer(seed, layer_index)
        self.setup()

    def setup(self) -> None:
        """Hook run at the end of ``__init__``: a sampler without options of its own puts its
        checks, derived sizes and parameters here instead of repeating the base signature
        (one with options defines ``__init__`` with them and calls ``super().__init__``)."""

    def init_generator(self) -> torch.Generator:
        """Generator for draws made at construction: seeded by (seed, layer_index, step 0)."""
        return seeded_generator(redraw_seed(self.seed, self.layer_index, 0))

    @property
    def learnable(self) -> bool:
        """Whether W depends on trainable parameters (then it is never redrawn)."""
        return any(p.requires_grad for p in self.parameters())

    def _default_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    def sample(
        self,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw W of shape (num_features, dim) on ``device`` in ``dtype``.

        Randomness comes from ``generator`` (drawn on the generator's device, then moved), so the
        same seed gives the same W on every device and every DDP rank.
        """
        default_device, default_dtype = self._default_device_dtype()
        device = torch.device(device) if device is not None else default_device
        dtype = dtype or default_dtype
        if not dtype.is_floating_point:
            raise ValueError(
                f"{type(self).__name__}.sample: dtype must be a floating-point dtype "
                f"(e.g. torch.float32, torch.float64), got {dtype}"
            )
        w = self._sample(generator, device, dtype)
        if w.shape != (self.num_features, self.dim):
            raise RuntimeError(
                f"{type(self).__name__} returned shape {tuple(w.shape)}, "
                f"expected ({self.num_features}, {self.dim})"
            )
        return w.to(device=device, dtype=dtype)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_features={self.num_features}"
