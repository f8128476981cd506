"""Approximation quality of sampler × feature-map estimators (Spectraformer, arXiv 2405.15310).

Two metrics, on inputs already scaled like attention (x = q·d^(-1/4), y = k·d^(-1/4)), float64:

* kernel relative MSE of one draw of W (:func:`spectra.features.kernel_estimate`)::

      relMSE = mean_ij (K̂_ij − K_ij)² / mean_ij K_ij²,   K_ij = exp(x_iᵀy_j);

* attention relative error of the registered ``random_features`` attention against exact
  ``softmax`` attention on the same q, k, v: relErr = ‖Â − A‖_F / ‖A‖_F.

A non-finite estimate counts as an infinite error. Each configuration is repeated over draws of
W (seed = trial index) on fixed inputs; :func:`summarize` reports median, quartiles and mean
(errors are heavy-tailed at large norms), the relative squared bias of the trial mean
mean_ij (K̄_ij − K_ij)² / mean_ij K_ij² with its Monte-Carlo floor mean relMSE / trials, and the
closed-form expected relMSE of m iid Gaussian rows (:func:`iid_relative_mse`, from
:meth:`~spectra.features.FeatureMap.iid_log_second_moment`; NaN for a map without one).

Synthetic inputs (:data:`SETTINGS`, the FAVOR++ / FAVOR# protocol, arXiv 2205.15317,
2302.00787): ``isotropic`` x, y ~ N(0, s²/d I); ``asymmetric`` queries ×2 and keys ×½ (the same
kernel, unbalanced norms); ``anisotropic`` per-coordinate variances log-spaced over [1/8, 8]·s²/d.
Real inputs: :mod:`spectra.analysis.capture`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from spectra.features import kernel_estimate
from spectra.registry import ATTENTIONS, FEATURE_MAPS

__all__ = [
    "CSV_FIELDS",
    "DATA_STREAM",
    "SETTINGS",
    "Workload",
    "attention_relative_error",
    "evaluate",
    "iid_relative_mse",
    "kernel_relative_mse",
    "quantiles",
    "run_study",
    "summarize",
    "synthetic_workload",
]

ASYMMETRY = 2.0  # ``asymmetric``: queries ×2, keys ×½ (‖x‖/‖y‖ = 4), the same kernel exp(xᵀy)
ANISOTROPY = 8.0  # ``anisotropic``: per-coordinate variances log-spaced over [1/8, 8] (mean 1)
# Inputs come from torch.Generator().manual_seed(DATA_STREAM + data seed), a stream disjoint from
# the W draws (seeded by small trial indices): with equal seeds W's rows would be the very
# Gaussian vectors the inputs were made of (ωᵀx ≈ ‖x‖·√d), a huge, fake outlier.
DATA_STREAM = 2**40 + 7919
KEYS = ["study", "group", "sampler", "feature_map", "m"]
CSV_FIELDS = [
    "study", "group", "setting", "scale", "layer", "head_dim", "sampler", "feature_map", "m",
    "trials", "n", "mean_sq_norm_x", "mean_sq_norm_y",
    "kernel_rel_mse_median", "kernel_rel_mse_q25", "kernel_rel_mse_q75", "kernel_rel_mse_mean",
    "kernel_rel_mse_iid_theory", "kernel_rel_bias2", "kernel_rel_bias2_floor",
    "attn_rel_err_median", "attn_rel_err_q25", "attn_rel_err_q75", "attn_rel_err_mean",
    "nonfinite",
]  # fmt: skip


# -- metrics ---------------------------------------------------------------------------------------
def _inf_if_nonfinite(err: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def kernel_relative_mse(k_hat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """mean_ij (K̂_ij − K_ij)² / mean_ij K_ij² over the last two dims; inf if not finite."""
    dims = (-2, -1)
    return _inf_if_nonfinite((k_hat - k).square().mean(dim=dims) / k.square().mean(dim=dims))


def attention_relative_error(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """‖Â − A‖_F / ‖A‖_F over the last two dims (L, d_v); inf if not finite."""
    return _inf_if_nonfinite(
        (out - ref).square().sum(dim=(-2, -1)).sqrt() / ref.square().sum(dim=(-2, -1)).sqrt()
    )


def quantiles(values: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    """(median, q25, q75, mean); empirical quantiles without interpolation, so an infinite
    error stays infinite instead of becoming NaN."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return (math.nan,) * 4
    q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75], method="inverted_cdf")
    with np.errstate(over="ignore", invalid="ignore"):
        return float(med), float(q25), float(q75), float(np.mean(values))


def iid_relative_mse(feature_map: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Expected kernel relMSE with m = 1 iid Gaussian row (divide by m for m rows):
    mean_ij (E[g²]_ij − K_ij²) / mean_ij K_ij², shape (…); None if the map has no closed form."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    with torch.no_grad():
        log_m2 = FEATURE_MAPS.build(feature_map).iid_log_second_moment(x, y)
    if log_m2 is None:
        return None
    k2 = (2.0 * x @ y.mT).exp()
    return (log_m2.exp() - k2).mean(dim=(-2, -1)) / k2.mean(dim=(-2, -1))


# -- inputs ----------------------------------------------------------------------------------------
def _isotropic(scale: float, n: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """x_i, y_j ~ N(0, s²/d · I): E‖x‖² = E‖y‖² = s²."""
    g = torch.randn(2, n, d, generator=gen, dtype=torch.float64) * (scale / math.sqrt(d))
    return g[0], g[1]


def _asymmetric(scale: float, n: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Isotropic, then queries ×2 and keys ×½: the same kernel, E‖x‖² = 4s², E‖y‖² = s²/4."""
    x, y = _isotropic(scale, n, d, gen)
    return x * ASYMMETRY, y / ASYMMETRY


def _anisotropic(scale: float, n: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """x_i, y_j ~ N(0, s²/d · diag(λ)), λ log-spaced over [1/8, 8] and rescaled to mean 1."""
    lam = torch.logspace(-math.log10(ANISOTROPY), math.log10(ANISOTROPY), d, dtype=torch.float64)
    x, y = _isotropic(scale, n, d, gen)
    return x * (lam / lam.mean()).sqrt(), y * (lam / lam.mean()).sqrt()


SETTINGS: dict[str, Callable[[float, int, int, torch.Generator], tuple[torch.Tensor, ...]]] = {
    "isotropic": _isotropic,
    "asymmetric": _asymmetric,
    "anisotropic": _anisotropic,
}


@dataclass
class Workload:
    """Inputs of one study: x, y, v (B, H, L, d) float64, x and y already scaled by d^(-1/4).

    ``groups`` names the result group of each batch row (e.g. ``isotropic s=2``, ``layer 0``);
    statistics pool the rows of a group, all heads and all trials. ``labels`` has one row per
    group (index: group name) with its CSV columns (setting, scale, layer).
    """

    study: str
    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor
    groups: list[str]
    labels: pd.DataFrame

    def __post_init__(self) -> None:
        shapes = tuple(self.x.shape), tuple(self.y.shape), tuple(self.v.shape)
        if self.x.dim() != 4 or shapes[1] != shapes[0] or shapes[2][:3] != shapes[0][:3]:
            raise ValueError(
                f"Workload {self.study!r}: x, y, v must be (B, H, L, d) with equal shapes, got "
                f"{shapes[0]}, {shapes[1]}, {shapes[2]}"
            )
        if len(self.groups) != self.x.shape[0]:
            raise ValueError(
                f"Workload {self.study!r}: {len(self.groups)} group names for "
                f"{self.x.shape[0]} rows"
            )


def synthetic_workload(
    settings: Sequence[str], scales: Sequence[float], *, dim: int, length: int, seed: int
) -> Workload:
    """One batch row (H = 1) per (setting, scale); inputs and values from a generator seeded by
    ``DATA_STREAM + seed``, fixed across trials (only W changes between trials)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; allowed: {', '.join(SETTINGS)}")
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    gen = torch.Generator().manual_seed(DATA_STREAM + seed)
    xs, ys, vs, labels = [], [], [], []
    for setting in settings:
        for scale in scales:
            x, y = SETTINGS[setting](float(scale), length, dim, gen)
            xs.append(x)
            ys.append(y)
            vs.append(torch.randn(length, dim, generator=gen, dtype=torch.float64))
            labels.append({"group": f"{setting} s={scale:g}", "setting": setting, "scale": scale})
    table = pd.DataFrame(labels).set_index("group").assign(layer="")
    x, y, v = (torch.stack(ts)[:, None] for ts in (xs, ys, vs))
    return Workload("synthetic", x, y, v, list(table.index), table)


# -- evaluation ------------------------------------------------------------------------------------
def _softmax_attention(work: Workload) -> torch.Tensor:
    d = work.x.shape[-1]
    with torch.no_grad():
        return ATTENTIONS.build("softmax", head_dim=d).eval()(
            work.x * d**0.25, work.y * d**0.25, work.v
        )


def evaluate(
    work: Workload,
    sampler: str,
    feature_map: str,
    m: int,
    trials: int,
    *,
    seed: int = 0,
    exact_attention: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Errors of ``trials`` draws of W (seeds ``seed … seed+trials−1``): one row per (trial,
    batch row, head) with group, kernel_rel_mse, attn_rel_err, and per (batch row, head) the
    relative squared bias of the trial mean (bias2) and the closed-form iid relMSE / m
    (iid_theory). Errors in building a component propagate (ValueError)."""
    x, y, v = work.x, work.y, work.v
    d = x.shape[-1]
    k = (x @ y.mT).exp()
    exact = _softmax_attention(work) if exact_attention is None else exact_attention
    kern, attn, k_sum = [], [], torch.zeros_like(k)
    for s in range(seed, seed + trials):
        k_hat = kernel_estimate(
            x, y, sampler=sampler, feature_map=feature_map, num_features=m, seed=s
        )
        kern.append(kernel_relative_mse(k_hat, k))
        k_sum += k_hat
        module = ATTENTIONS.build(
            "random_features",
            head_dim=d,
            num_features=m,
            sampler=sampler,
            feature_map=feature_map,
            seed=s,
        ).eval()
        with torch.no_grad():
            attn.append(attention_relative_error(module(x * d**0.25, y * d**0.25, v), exact))
    theory = iid_relative_mse(feature_map, x, y)
    per_unit = {
        "bias2": kernel_relative_mse(k_sum / trials, k),
        "iid_theory": torch.full(x.shape[:2], math.nan) if theory is None else theory / m,
    }
    b, h = x.shape[:2]
    index = pd.MultiIndex.from_product(
        [range(trials), range(b), range(h)], names=["trial", "row", "head"]
    )
    frame = pd.DataFrame(
        {
            "kernel_rel_mse": torch.stack(kern).flatten().numpy(),
            "attn_rel_err": torch.stack(attn).flatten().numpy(),
            **{key: t.expand(trials, b, h).flatten().numpy() for key, t in per_unit.items()},
        },
        index=index,
    ).reset_index()
    frame["group"] = [work.groups[r] for r in frame["row"]]
    return frame.assign(sampler=sampler, feature_map=feature_map, m=m, study=work.study)


def summarize(errors: pd.DataFrame, work: Workload) -> pd.DataFrame:
    """One row (:data:`CSV_FIELDS`) per (study, group, sampler, feature map, m) of
    :func:`evaluate`'s rows: quantiles pooled over the group's rows, heads and trials; bias² and
    iid theory as medians over the group's (row, head) units."""

    def stats(g: pd.DataFrame) -> pd.Series:
        kern, attn = g["kernel_rel_mse"].to_numpy(), g["attn_rel_err"].to_numpy()
        units = g.drop_duplicates(["row", "head"])
        out = {"trials": g["trial"].nunique(), "n": len(g)}
        for name, values in (("kernel_rel_mse", kern), ("attn_rel_err", attn)):
            out.update(
                zip([f"{name}_{q}" for q in ("median", "q25", "q75", "mean")], quantiles(values))
            )
        out["kernel_rel_mse_iid_theory"] = units["iid_theory"].median()
        out["kernel_rel_bias2"] = units["bias2"].median()
        out["kernel_rel_bias2_floor"] = out["kernel_rel_mse_mean"] / out["trials"]
        out["nonfinite"] = int((~np.isfinite(kern)).sum() + (~np.isfinite(attn)).sum())
        return pd.Series(out)

    rows = errors.groupby(KEYS, sort=False).apply(stats, include_groups=False).reset_index()
    norms = (
        pd.DataFrame(
            {
                "group": work.groups,
                "sq_x": work.x.square().sum(-1).mean(dim=(-2, -1)).numpy(),
                "sq_y": work.y.square().sum(-1).mean(dim=(-2, -1)).numpy(),
            }
        )
        .groupby("group")
        .mean()
    )
    rows["mean_sq_norm_x"] = rows["group"].map(norms["sq_x"])
    rows["mean_sq_norm_y"] = rows["group"].map(norms["sq_y"])
    rows["head_dim"] = int(work.x.shape[-1])
    rows = rows.join(work.labels, on="group")
    return rows.astype({"trials": int, "n": int, "nonfinite": int})[CSV_FIELDS]


def run_study(
    work: Workload,
    samplers: Sequence[str],
    feature_maps: Sequence[str],
    ms: Sequence[int],
    trials: int,
    *,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[pd.DataFrame, list[str]]:
    """Every sampler × feature map × m on ``work``: the summary rows and the skipped
    combinations (a component that rejects the combination raises ValueError)."""
    exact = _softmax_attention(work)
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    combos = [(s, f, m) for s in samplers for f in feature_maps for m in ms]
    for i, (s, f, m) in enumerate(combos, 1):
        try:
            errors = evaluate(work, s, f, m, trials, seed=seed, exact_attention=exact)
        except ValueError as exc:
            skipped.append(f"{work.study}: {s} × {f}, m={m}: {exc}")
            log(f"[{work.study} {i}/{len(combos)}] skipped {s} × {f} m={m}: {exc}")
            continue
        frames.append(summarize(errors, work))
        log(f"[{work.study} {i}/{len(combos)}] {s} × {f} m={m}")
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_FIELDS)
    return rows, skipped
