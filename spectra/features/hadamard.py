"""Walsh–Hadamard transform: a fast O(n log n) path and the explicit Sylvester matrix.

The Sylvester Hadamard matrix of order n = 2^k is H_1 = [1], H_{2n} = [[H_n, H_n], [H_n, −H_n]]
(entries ±1, symmetric, H Hᵀ = n I). The normalized matrix H/√n is orthogonal and symmetric.
Used by the structured samplers ``sorf`` (Yu et al. 2016, arXiv 1610.09072) and ``fastfood``
(Le, Sarlós & Smola 2013).
"""

from __future__ import annotations

import math

import torch

__all__ = ["fwht", "hadamard_matrix", "is_power_of_two", "next_power_of_two"]


def is_power_of_two(n: int) -> bool:
    """Whether ``n`` is 1, 2, 4, 8, …"""
    return n >= 1 and (n & (n - 1)) == 0


def next_power_of_two(n: int) -> int:
    """Smallest power of two ≥ ``n`` (n ≥ 1)."""
    if n < 1:
        raise ValueError(f"next_power_of_two needs n >= 1, got {n}")
    return 1 << (n - 1).bit_length()


def _check_length(n: int, what: str) -> None:
    if not is_power_of_two(n):
        raise ValueError(
            f"{what} must be a power of two (1, 2, 4, 8, …), got {n}; "
            f"zero-pad to {next_power_of_two(max(n, 1))}"
        )


def fwht(x: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Fast Walsh–Hadamard transform over the last dim: ``x @ H`` (H Sylvester, symmetric).

    O(n log n) butterflies, differentiable; with ``normalized`` the result is ``x @ H / √n``
    (an orthogonal transform). The last dim n must be a power of two.
    """
    n = x.shape[-1]
    _check_length(n, "fwht: the last dimension")
    batch = x.shape[:-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        # Pairs (i, i + h) inside blocks of 2h: (a, b) -> (a + b, a - b).
        y = y.reshape(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    y = y.reshape(*batch, n)
    if normalized:
        y = y / math.sqrt(n)
    return y


def hadamard_matrix(
    n: int,
    normalized: bool = True,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The explicit n × n Sylvester Hadamard matrix (÷√n if ``normalized``): the plain reference
    for :func:`fwht`, O(n²) memory."""
    _check_length(n, "hadamard_matrix: n")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), dim=1), torch.cat((h, -h), dim=1)), dim=0)
    if normalized:
        h = h / math.sqrt(n)
    return h
