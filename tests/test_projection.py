"""projected_exponent (one augmented matmul) equals the three terms added separately."""

from __future__ import annotations

import pytest
import torch

from spectra.features.maps.projection import projected_exponent, projected_exponent_naive

DT = torch.float64

CASES = {
    "shared W, no feature term": ((2, 3), (), None),
    "shared W, shared feature term": ((2, 3), (), (7,)),
    "shared W, per-head feature term": ((2, 3), (), (2, 3, 7)),
    "per-head W, per-head feature term": ((2, 3), (2, 3), (2, 3, 7)),
    "per-head W, broadcast feature term": ((2, 3), (1, 3), (2, 1, 7)),
}


@pytest.mark.parametrize(("lead", "w_lead", "f_shape"), CASES.values(), ids=CASES.keys())
def test_projected_exponent_matches_naive_outputs_and_grads(lead, w_lead, f_shape) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(*lead, 9, 4, generator=g, dtype=DT, requires_grad=True)
    w = torch.randn(*w_lead, 7, 4, generator=g, dtype=DT, requires_grad=True)
    t = torch.randn(*lead, 9, generator=g, dtype=DT, requires_grad=True)
    f = None if f_shape is None else torch.randn(f_shape, generator=g, dtype=DT).requires_grad_()
    inputs = [x, w, t] + ([] if f is None else [f])
    fast = projected_exponent(x, w, t, f)
    ref = projected_exponent_naive(x, w, t, f)
    assert fast.shape == ref.shape == (*lead, 9, 7)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    probe = torch.randn(fast.shape, generator=g, dtype=DT)
    for a, b in zip(
        torch.autograd.grad((fast * probe).sum(), inputs),
        torch.autograd.grad((ref * probe).sum(), inputs),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
