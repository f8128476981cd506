"""Statistical helpers for Monte-Carlo tests of random-feature estimators.

Tolerances are principled: a mean is compared with its standard error (4 SE), a variance with the
standard error of the sample variance from the sample fourth central moment (delta method, valid
for non-normal data, unlike the chi-square interval), and two estimators with a paired z-score.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "assert_mean_close",
    "mean_and_se",
    "paired_z",
    "two_sample_z",
    "variance_and_se",
]


def mean_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over dim 0 and its standard error s / √N."""
    n = samples.shape[0]
    return samples.mean(0), samples.std(0) / math.sqrt(n)


def assert_mean_close(
    samples: torch.Tensor, exact: torch.Tensor, *, k: float = 4.0, what: str = ""
) -> None:
    """|mean − exact| ≤ k SE (+ 1e-9·|exact| for zero-variance estimates), elementwise."""
    mean, se = mean_and_se(samples)
    err = (mean - exact).abs()
    tol = k * se + 1e-9 * exact.abs()
    bad = err > tol
    if bad.any():
        z = (err / se.clamp_min(1e-300))[bad]
        raise AssertionError(
            f"{what}: mean differs from exact by more than {k} SE at {int(bad.sum())} entries; "
            f"max z = {z.max().item():.2f}, mean {mean[bad].tolist()[:4]}, exact "
            f"{exact[bad].tolist()[:4]}"
        )


def variance_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample variance over dim 0 and its SE √((μ₄ − s⁴)/N) (μ₄: sample 4th central moment)."""
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    var = centred.square().sum(0) / (n - 1)
    mu4 = centred.pow(4).mean(0)
    return var, ((mu4 - var.square()).clamp_min(0.0) / n).sqrt()


def paired_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """z-score of mean(a − b) for paired per-seed statistics a, b (N,)."""
    diff = a - b
    return (diff.mean() / (diff.std() / math.sqrt(diff.shape[0]))).item()


def two_sample_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """z-score of mean(a) − mean(b) for independent samples a (N,), b (M,)."""
    se2 = a.var() / a.shape[0] + b.var() / b.shape[0]
    return ((a.mean() - b.mean()) / se2.sqrt()).item()
