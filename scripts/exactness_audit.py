#!/usr/bin/env python
"""Float64 audit of the random-feature attention against its estimator (issue: exact attention).

For each case the module's float32 output is compared, row by row, with the float64 estimator
φ(X)φ(Y)ᵀV / φ(X)φ(Y)ᵀ1 computed on the natural scale (no stabilizer, no ε) from the same W:
features from ``feature_map(…, stabilize=False)`` in float64, the L×L kernel formed explicitly
(lower-triangular in causal mode). Cases (d = 64, m = 256, orthogonal W, q, k, v ~ σ·N(0, 1)):

* ``causal_pos0``: causal posrf, relative error of position 0 (must return v₀ exactly);
* ``causal_leak``: causal posrf, the last key replaced by the row of W with the largest norm
  times d^(1/4); the largest relative change of any earlier output (must be 0);
* ``rows_over_1pct``: fraction of rows more than 1 % off the float64 estimator (non-causal);
* ``outlier_median``: median row error with one outlier key (aligned with a row of W);
* ``sderf_jump``: relative output change of sderf (d = 12, m = 64) under q → q + 1e-3·N(0, 1).

Usage: ``python scripts/exactness_audit.py [--sigma 2] [--length 1024]`` (≈ 1 min on 2 cores).
"""

from __future__ import annotations

import argparse

import torch

from spectra.registry import ATTENTIONS


def reference(attn, q, k, v, causal: bool) -> torch.Tensor:
    """Float64 natural-scale estimator with the module's W (no stabilizer, no ε)."""
    q, k, v = q.double(), k.double(), v.double()
    scale = attn.head_dim**-0.25
    w = attn.current_weight().double()
    phi_x, phi_y = attn.feature_map(q * scale, k * scale, w, stabilize=False)
    kern = phi_x @ phi_y.transpose(-1, -2)
    if causal:
        kern = kern.tril()
    return (kern @ v) / kern.sum(-1, keepdim=True)


def row_error(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out.double() - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-300)


def build(fmap: str, d: int = 64, m: int = 256):
    return ATTENTIONS.build(
        "random_features", head_dim=d, num_features=m, sampler="orthogonal", feature_map=fmap
    ).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sigma", type=float, default=2.0)
    p.add_argument("--length", type=int, default=1024)
    args = p.parse_args()
    torch.manual_seed(0)
    d, length, sigma = 64, args.length, args.sigma
    q, k, v = (sigma * torch.randn(1, 1, length, d) for _ in range(3))
    with torch.no_grad():
        attn = build("posrf")
        out = attn(q, k, v, causal=True)
        pos0 = (out[..., 0, :] - v[..., 0, :]).norm() / v[..., 0, :].norm()
        print(f"causal_pos0     posrf        {pos0.item():.3e}")
        w = attn.current_weight()
        k2 = k.clone()
        k2[..., -1, :] = w[w.norm(dim=-1).argmax()] * d**0.25
        out2 = attn(q, k2, v, causal=True)
        leak = row_error(out2[..., :-1, :], out[..., :-1, :].double()).max()
        print(f"causal_leak     posrf        {leak.item():.3e}")
        for fmap in ("posrf", "hyperbolic", "gerf", "oprf", "saderf", "sderf", "trig"):
            attn = build(fmap)
            err = row_error(attn(q, k, v), reference(attn, q, k, v, False))
            frac = (err > 1e-2).double().mean().item()
            kk = k.clone()
            ww = attn.current_weight()
            kk[..., length // 2, :] = ww[ww.norm(dim=-1).argmax()] * d**0.25
            err_o = row_error(attn(q, kk, v), reference(attn, q, kk, v, False))
            print(
                f"{fmap:<10} rows_over_1pct {frac:.4f}  median {err.median().item():.2e}  "
                f"outlier_median {err_o.median().item():.3e}"
            )
        for fmap in ("sderf", "saderf", "oprf"):
            torch.manual_seed(1)
            attn = build(fmap, d=12, m=64)
            qs, ks, vs = (torch.randn(1, 1, 64, 12, dtype=torch.float64) for _ in range(3))
            base = attn(qs, ks, vs)
            moved = attn(qs + 1e-3 * torch.randn_like(qs), ks, vs)
            jump = ((moved - base).norm() / base.norm()).item()
            print(f"{fmap:<10} jump under 1e-3 perturbation {jump:.3e}")


if __name__ == "__main__":
    main()
