"""Randomized Halton quasi-Monte-Carlo weights (Halton 1960; Owen 2017, arXiv 1706.02808).

The Halton sequence uses the radical inverse in the l-th prime base b_l for coordinate l: writing
the point index r = Σ_k a_k(r) b^k, its coordinate is h_b(r) = Σ_k a_k(r) b^{−k−1}
(J. H. Halton, "On the efficiency of certain quasi-random sequences of points in evaluating
multi-dimensional integrals", Numerische Mathematik 2, 1960). Points r = 0 … m−1 fill
[0, 1)^d more evenly than iid uniforms; ω_r = Φ⁻¹(u_r) (``torch.special.ndtri``) maps them to
Gaussian rows.

Unrandomized Halton points are deterministic (a biased estimator), so they are randomized. Two
randomizations are offered, each making every single point *exactly* Uniform[0, 1)^d, hence each
row ω_r exactly N(0, I_d) (``marginally_gaussian = True``: feature maps built on it stay unbiased),
while the point set keeps its low discrepancy:

* ``"permute"`` (default) — random digit permutation (Matoušek 1998; Owen 2017): each digit
  position k of each coordinate l gets its own uniformly random permutation π_{l,k} of
  {0, …, b_l − 1}, u = Σ_{k<K} π_{l,k}(a_k(r)) b^{−k−1} + b^{−K} U with U ~ Uniform[0, 1).
  For a fixed r the permuted digits are iid uniform, so the first K digits are uniform on the
  b^{−K} grid and the jitter U fills each grid cell: u is exactly uniform. K = ⌈53 / log₂ b⌉
  digits (b^{−K} ≤ 2⁻⁵³, the float64 resolution). Permutations also break the strong linear
  correlations between coordinates with large bases that plain Halton points show for r < b
  (h_b(r) = r / b there), which matters for head dims like 32–64 (bases up to 131–311).
* ``"shift"`` — Cranley–Patterson rotation (Cranley & Patterson, SIAM J. Numer. Anal. 13, 1976):
  u_r = (h(r) + U) mod 1 with one U ~ Uniform[0, 1)^d shared by all points; cheaper, but keeps
  the large-base correlations.

u is clamped into [2⁻⁶⁰, 1 − 2⁻⁵³] (float64) only to guard Φ⁻¹ against rounding to 0 or 1 (a
probability-2⁻⁵³ event). Everything is drawn in float64 on the generator's device, then cast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from spectra.features import Sampler
from spectra.registry import SAMPLERS

__all__ = ["RANDOMIZATIONS", "HaltonSampler", "first_primes", "radical_inverse_digits"]

_DTYPE = torch.float64
_U_MIN, _U_MAX = 2.0**-60, 1.0 - 2.0**-53


def first_primes(n: int) -> list[int]:
    """The first ``n`` primes (2, 3, 5, …): the Halton bases of coordinates 0 … n−1."""
    if n <= 0:
        return []
    # p_n < n (ln n + ln ln n) for n ≥ 6 (Rosser's bound); small n use 15.
    limit = 15 if n < 6 else int(n * (math.log(n) + math.log(math.log(n)))) + 1
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytearray(len(sieve[p * p :: p]))
    primes = [p for p in range(limit + 1) if sieve[p]]
    return primes[:n]


def num_digits(base: int) -> int:
    """K = ⌈53 / log₂ b⌉: digits after which b^{−K} ≤ 2⁻⁵³ (float64 resolution)."""
    return math.ceil(53.0 / math.log2(base))


def radical_inverse_digits(index: torch.Tensor, base: int, k: int) -> torch.Tensor:
    """Base-``base`` digits a_0 … a_{k−1} (least significant first) of ``index``, shape (n, k)."""
    powers = base ** torch.arange(k, device=index.device, dtype=torch.int64)
    return torch.div(index[:, None], powers, rounding_mode="floor") % base


def _weights(base: int, k: int, device: torch.device) -> torch.Tensor:
    """b^{−1}, b^{−2}, …, b^{−k} in float64."""
    return float(base) ** -torch.arange(1, k + 1, device=device, dtype=_DTYPE)


def _permuted(
    index: torch.Tensor, bases: list[int], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Random-digit-permutation Halton points, shape (n, d), each exactly Uniform[0, 1)^d."""
    columns = []
    for base in bases:
        k = num_digits(base)
        digits = radical_inverse_digits(index, base, k)  # (n, k)
        # k independent uniform permutations of {0, …, b−1}: argsort of iid uniforms.
        perms = torch.rand(k, base, generator=generator, device=device, dtype=_DTYPE).argsort(-1)
        permuted = perms[torch.arange(k, device=device), digits]  # (n, k): π_k(a_k(r))
        columns.append(permuted.to(_DTYPE) @ _weights(base, k, device))
    grid = torch.stack(columns, dim=-1)  # uniform on each coordinate's b^{−K} grid
    jitter = torch.rand(grid.shape, generator=generator, device=device, dtype=_DTYPE)
    cell = torch.tensor([float(b) ** -num_digits(b) for b in bases], device=device, dtype=_DTYPE)
    return grid + jitter * cell


def _shifted(
    index: torch.Tensor, bases: list[int], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Cranley–Patterson-rotated Halton points (h(r) + U) mod 1, shape (n, d)."""
    columns = []
    for base in bases:
        k = num_digits(base)
        digits = radical_inverse_digits(index, base, k)
        columns.append(digits.to(_DTYPE) @ _weights(base, k, device))
    points = torch.stack(columns, dim=-1)
    shift = torch.rand(len(bases), generator=generator, device=device, dtype=_DTYPE)
    return torch.remainder(points + shift, 1.0)


RANDOMIZATIONS: dict[
    str,
    Callable[[torch.Tensor, list[int], torch.Generator | None, torch.device], torch.Tensor],
] = {"permute": _permuted, "shift": _shifted}
"""Randomizations of the Halton points; each makes every point exactly uniform."""


@SAMPLERS.register("halton")
class HaltonSampler(Sampler):
    """Randomized Halton QMC rows ω = Φ⁻¹(u), marginally N(0, I_d) (Halton 1960; arXiv 1706.02808).

    Options: ``randomization`` — ``"permute"`` (random digit permutations, default) or
    ``"shift"`` (Cranley–Patterson rotation). Coordinate l uses the l-th prime as base.
    """

    marginally_gaussian = True

    def __init__(
        self,
        dim: int,
        num_features: int,
        randomization: str = "permute",
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        if randomization not in RANDOMIZATIONS:
            raise ValueError(
                f"halton sampler: unknown randomization {randomization!r}; "
                f"allowed: {', '.join(sorted(RANDOMIZATIONS))}"
            )
        self.randomization = randomization
        self.bases = first_primes(self.dim)

    def points(
        self, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Randomized Halton points u ∈ (0, 1)^{m×d} (float64), drawn on the generator's device
        (or on ``device`` without a generator)."""
        device = generator.device if generator is not None else torch.device(device)
        index = torch.arange(self.num_features, device=device, dtype=torch.int64)
        u = RANDOMIZATIONS[self.randomization](index, self.bases, generator, device)
        return u.clamp(_U_MIN, _U_MAX)

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return torch.special.ndtri(self.points(generator, device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, randomization={self.randomization!r}"
