"""Property-based tests (hypothesis) of every registered attention op.

For random shapes (batch, heads, length 1…10, head dims), masks (arbitrary padding patterns,
all-padding rows, length-1 sequences), dtypes (float64, float32, bfloat16) and norms (up to
‖q‖·‖k‖/√d = 50), every attention in ``ATTENTIONS`` (random features with every feature map)
must: keep the shape (B, H, L, d_v) and the value dtype, be finite everywhere, output exactly 0 at
padded query positions and on all-padding rows, and ignore whatever sits at padded positions
(changing q, k, v there changes no real position's output).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spectra.registry import ATTENTIONS, FEATURE_MAPS

# Small options per attention (an attention without an entry is built with head_dim only).
SMALL = {
    "random_features": {"num_features": 16, "sampler": "orthogonal"},
    "skyformer": {"num_landmarks": 4},
    "nystromformer": {"num_landmarks": 4},
}
CASES = [(name, {}) for name in ATTENTIONS.names() if name != "random_features"] + [
    ("random_features", {"feature_map": fmap}) for fmap in FEATURE_MAPS.names()
]
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
MAX_NORM_PRODUCT = 50.0  # ‖q‖·‖k‖/√d at the largest


@st.composite
def problems(draw: st.DrawFn) -> dict:
    """A random attention input: shapes, mask, dtype, norms and a seed."""
    b = draw(st.integers(1, 3))
    h = draw(st.integers(1, 2))
    length = draw(st.integers(1, 10))
    d = draw(st.sampled_from([4, 8]))
    dv = draw(st.sampled_from([d, 3]))
    rows = draw(
        st.lists(st.lists(st.booleans(), min_size=length, max_size=length), min_size=b, max_size=b)
    )
    mask = torch.tensor(rows, dtype=torch.bool).reshape(b, length)
    if draw(st.booleans()):  # an all-padding row
        mask[draw(st.integers(0, b - 1))] = False
    return {
        "b": b,
        "h": h,
        "length": length,
        "d": d,
        "dv": dv,
        "mask": mask if draw(st.booleans()) or not mask.all() else None,
        "dtype": draw(st.sampled_from(sorted(DTYPES))),
        "product": draw(st.floats(0.0, MAX_NORM_PRODUCT)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _inputs(p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k with max‖q‖·max‖k‖/√d = p["product"] (rows of random norms up to the max)."""
    g = torch.Generator().manual_seed(p["seed"])
    shape = (p["b"], p["h"], p["length"], p["d"])
    q, k = (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )
    radius = math.sqrt(p["product"] * math.sqrt(p["d"]))  # ‖q‖ = ‖k‖ = radius at the largest
    for t in (q, k):
        fractions = torch.rand((*shape[:-1], 1), generator=g, dtype=torch.float64)
        fractions.view(-1)[0] = 1.0  # one row at the maximum norm
        t.mul_(radius * fractions / t.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    v = torch.randn(p["b"], p["h"], p["length"], p["dv"], generator=g, dtype=torch.float64)
    dtype = DTYPES[p["dtype"]]
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _perturb_padding(t: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = (torch.randn(t.shape, generator=g, dtype=torch.float64) * 10).to(t.dtype)
    return torch.where(mask[:, None, :, None], t, noise)


def _tolerance(dtype: torch.dtype) -> dict:
    return {
        torch.float64: {"rtol": 1e-9, "atol": 1e-9},
        torch.float32: {"rtol": 1e-4, "atol": 1e-4},
        torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    }[dtype]


@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda x: str(x))
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI must be reproducible)
    suppress_health_check=[HealthCheck.too_slow],
)
@given(p=problems())
def test_attention_properties(name: str, options: dict, p: dict) -> None:
    attn = ATTENTIONS.build(name, head_dim=p["d"], **{**SMALL.get(name, {}), **options}).eval()
    q, k, v = _inputs(p)
    mask = p["mask"]
    with torch.no_grad():
        out = attn(q, k, v, mask=mask)
    # shapes and dtype preserved
    assert out.shape == (p["b"], p["h"], p["length"], p["dv"])
    assert out.dtype == v.dtype
    # finite everywhere (all-padding rows and length-1 sequences included)
    assert torch.isfinite(out.float()).all(), (name, options, p)
    if mask is None:
        return
    # padded query positions (and so all-padding rows) are exactly zero
    assert (out.float()[~mask[:, None, :, None].expand_as(out)] == 0).all(), (name, options, p)
    # whatever sits at padded positions is ignored
    q2, k2, v2 = (_perturb_padding(t, mask, p["seed"] + i) for i, t in enumerate((q, k, v)))
    with torch.no_grad():
        out2 = attn(q2, k2, v2, mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    scale = max(1.0, float(out.float().abs().max()))
    tol = _tolerance(v.dtype)
    torch.testing.assert_close(
        out2.float()[real],
        out.float()[real],
        rtol=tol["rtol"],
        atol=tol["atol"] * scale,
        msg=lambda m: f"{name} {options} {p}: padded positions leak into real outputs\n{m}",
    )
