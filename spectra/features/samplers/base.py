"""Base class of weight-matrix samplers: draw W = [ω_1 … ω_m]ᵀ ∈ R^{m×d}."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["Sampler", "seeded_generator"]


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


class Sampler(nn.Module):
    """Draws a (num_features, dim) weight matrix whose rows are (marginally) ω ~ N(0, I_d).

    Subclasses implement :meth:`_sample`. ``marginally_gaussian`` says whether each row is
    exactly N(0, I_d) (so feature maps built on it are unbiased); structured and
    moment-matched samplers set it to False (asymptotically unbiased only).
    """

    marginally_gaussian: ClassVar[bool] = True

    def __init__(self, dim: int, num_features: int) -> None:
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.num_features = _positive_int(num_features, "num_features (m)")

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
