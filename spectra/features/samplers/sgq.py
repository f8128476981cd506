"""Sparse-grid (Smolyak) Gauss–Hermite random features, SGQ (Dao, De Sa & Ré, NeurIPS 2017,
arXiv 1709.02605, §4 "sparse grids"; Smolyak 1963; Gerstner & Griebel 1998).

**The rule** (a small numpy implementation, :func:`smolyak_rule`; no chaospy). U_l is the
(l + 1)-point Gauss–Hermite rule for N(0, 1) (probabilists' nodes, weights summing to 1; exact for
degree ≤ 2l + 1), and the level-L Smolyak rule on R^d is the combination

    A(L, d) = Σ_{max(0, L−d+1) ≤ |l| ≤ L} (−1)^{L−|l|} C(d−1, L−|l|) · U_{l_1} ⊗ … ⊗ U_{l_d},

l ∈ N^d, |l| = l_1 + … + l_d. Merging equal points gives nodes ω_j and weights a_j with
Σ_j a_j = 1; A(L, d) integrates every polynomial of total degree ≤ 2L + 1 exactly against
N(0, I_d) (so E ω = 0, E ωωᵀ = I for L ≥ 1). Each node has at most L nonzero coordinates, and
the rule has O(2^L C(d, L)) nodes instead of the (L + 1)^d of the tensor grid. ``level`` = L
(default 2, ≥ 1; level 0 is the single node 0). Nodes are stored sparsely (≤ L coordinates each);
a rule that would need more than ``MAX_TERMS`` raw points is refused with a clear error.

**Weights are signed.** For L ≥ 1 and d ≥ 2 some a_j < 0 (e.g. L = 1: the origin has weight
−(d − 1)). This is essential, not a detail: the nodes are short (max_j ‖ω_j‖² = 1, 3, 5.45 at
L = 1, 2, 3, whatever d), and Σ_j a_j ‖ω_j‖² = d is reached only through the cancellation of
signed weights. Hence no probability law on the sparse grid — whatever the weights — has
E‖ω‖² = d once d > max_j ‖ω_j‖², and a signed weight cannot be carried by W itself: the built-in
feature maps average f_x(ω_r) f_y(ω_r) with equal positive weights 1/m (posrf features are
positive, so a negative contribution is impossible).

**How rows are drawn** (the documented choice). ``sample()`` draws m iid rows from the
total-variation normalization of the rule, P(ω_r = ω_j) = |a_j| / S with S = Σ_j |a_j| (inverse
CDF of one uniform per row), and *drops the signs*.
:meth:`SparseGridQuadratureSampler.sample_signed` returns the signs s_r = sign(a_{j_r}) and S
too: with them the importance-sampling estimator

    k̂(x, y) = (S / m) Σ_r s_r f_x(ω_r) f_y(ω_r)

is unbiased for the Smolyak rule's value Σ_j a_j f_x(ω_j) f_y(ω_j) (a real estimator: the signs
multiply real features), but its variance grows with S² (S = 2d − 1 at L = 1) and it is not what
the attention layers compute. With the signs dropped the rows follow a different law, so W is
**strongly biased** (``marginally_gaussian`` False): E‖ω‖² under |a|/S is 0.52, 1.03, 1.54 at
L = 1, 2, 3 for d = 16 and 0.50, 1.01, 1.51 for d = 64 (:func:`sgq_row_second_moment`) instead
of d — the rows are nearly 0 — and with posrf, ‖x‖ = ‖y‖ = 1, x = y spread over all coordinates,
the expected kernel estimate is 0.15 × exp(xᵀy) (relative bias −0.85 at d = 16 and −0.86 at
d = 64, L = 2; exact sums over the rule, ``tests/test_samplers_parity.py``). The signed rule is
not exact either at that norm: its own relative error is −0.31 (L = 2) and −0.13 (L = 3), since
it integrates only polynomials of degree ≤ 2L + 1. This is a faithful row sampler for the rule,
not a good kernel estimator; use ``gq`` (the dense grid, positive weights) for that.

The Spectraformer reference code (arXiv 2405.15310) builds a 1-D "sparse grid" of order 1 with
chaospy (nodes ±1), rescales it by √2 and normalizes the weights by √π as if it were the
physicists' rule, so its probabilities sum to 1/√π and every uniform above 0.564 falls into node
0: its entries are −√2 with probability 0.72 and +√2 with 0.28. We do not reproduce that.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from spectra.features.samplers.base import DRAW_DTYPE, Sampler, draw_device, positive_int
from spectra.features.samplers.gq import draw_index
from spectra.registry import SAMPLERS

__all__ = [
    "MAX_TERMS",
    "SmolyakRule",
    "SparseGridQuadratureSampler",
    "sgq_row_second_moment",
    "smolyak_rule",
]

MAX_TERMS = 4_000_000
"""Most raw (unmerged) points of a rule built here; e.g. d = 64 allows level ≤ 3."""


@dataclass(frozen=True)
class SmolyakRule:
    """A merged Smolyak rule in sparse form.

    Node j has coordinates ``coords[j, i]`` (−1 = unused slot) with values
    ``values[j, i]``; all other coordinates are 0. ``weights`` sum to 1 and may be negative.
    """

    dim: int
    level: int
    coords: np.ndarray  # (N, level) int64, −1 padding
    values: np.ndarray  # (N, level) float64, 0 at padding
    weights: np.ndarray  # (N,) float64

    def dense_nodes(self) -> np.ndarray:
        """The nodes as an (N, dim) float64 array."""
        out = np.zeros((len(self.weights), self.dim))
        rows, slots = np.nonzero(self.coords >= 0)
        out[rows, self.coords[rows, slots]] = self.values[rows, slots]
        return out

    @property
    def abs_mass(self) -> float:
        """S = Σ_j |a_j| (1 for a positive rule)."""
        return float(np.abs(self.weights).sum())


@lru_cache(maxsize=16)
def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()


def _compositions(total_max: int, parts: int) -> list[tuple[int, ...]]:
    """Ordered tuples of ``parts`` positive integers with sum ≤ ``total_max``."""
    return [
        p for p in itertools.product(range(1, total_max + 1), repeat=parts) if sum(p) <= total_max
    ]


def _raw_size(dim: int, level: int) -> int:
    size = 0
    for s in range(0, min(level, dim) + 1):
        for pattern in _compositions(level, s):
            if sum(pattern) >= level - dim + 1:
                size += math.comb(dim, s) * math.prod(p + 1 for p in pattern)
    return size


@lru_cache(maxsize=8)
def smolyak_rule(dim: int, level: int) -> SmolyakRule:
    """The merged level-``level`` Smolyak rule on the Gauss–Hermite family in ``dim`` dimensions.

    Every term U_{l_1} ⊗ … ⊗ U_{l_d} is enumerated by its support (the coordinates with l_k > 0,
    at most ``level`` of them) and the positive levels on it; level 0 is the node 0. Points are
    keyed by their (coordinate, node) pairs and equal points merged, adding their weights; nodes
    whose weights cancel (|a_j| < 1e-13) are dropped.
    """
    dim = positive_int(dim, "dim")
    level = positive_int(level, "level")
    raw = _raw_size(dim, level)
    if raw > MAX_TERMS:
        raise ValueError(
            f"sgq: the level-{level} Smolyak rule in dim={dim} has {raw:,} raw points "
            f"(limit {MAX_TERMS:,}); use a lower level"
        )
    # 1-D node table: one id per distinct node value over levels 1 … L (0 is shared by odd rules).
    rules = {lv: _gauss_hermite(lv + 1) for lv in range(1, level + 1)}
    table = np.unique(np.round(np.concatenate([n for n, _ in rules.values()]), 12))
    node_ids = {lv: np.searchsorted(table, np.round(n, 12)) for lv, (n, _) in rules.items()}
    n_values = len(table)

    keys, weights = [], []
    for s in range(0, min(level, dim) + 1):
        supports = list(itertools.combinations(range(dim), s))
        combos = np.array(supports, dtype=np.int64).reshape(len(supports), s)
        for pattern in _compositions(level, s):
            total = sum(pattern)
            if total < level - dim + 1:
                continue
            coef = (-1) ** (level - total) * math.comb(dim - 1, level - total)
            # all node choices of the tensor rule on the support: (P, s) ids and (P,) weights
            grids = [np.arange(p + 1) for p in pattern]
            points = list(itertools.product(*grids))
            choice = np.array(points, dtype=np.int64).reshape(len(points), s)
            ids = np.zeros_like(choice)
            w = np.full(len(points), float(coef))
            for i, p in enumerate(pattern):
                ids[:, i] = node_ids[p][choice[:, i]]
                w *= rules[p][1][choice[:, i]]
            # keys: coordinate · n_values + node id for nonzero values, −1 otherwise
            code = combos[:, None, :] * n_values + ids[None, :, :]  # (C, P, s)
            nonzero = table[ids] != 0.0
            code = np.where(nonzero[None], code, -1).reshape(len(combos) * len(points), s)
            code = np.pad(code, ((0, 0), (0, level - s)), constant_values=-1)
            keys.append(np.sort(code, axis=1))
            weights.append(np.tile(w, combos.shape[0]))
    all_keys = np.concatenate(keys)
    all_weights = np.concatenate(weights)
    unique, inverse = np.unique(all_keys, axis=0, return_inverse=True)
    merged = np.bincount(inverse.reshape(-1), weights=all_weights, minlength=len(unique))
    keep = np.abs(merged) >= 1e-13
    unique, merged = unique[keep], merged[keep]
    coords = np.where(unique >= 0, unique // n_values, -1)
    values = np.where(unique >= 0, table[np.where(unique >= 0, unique % n_values, 0)], 0.0)
    return SmolyakRule(dim, level, coords, values, merged)


def sgq_row_second_moment(dim: int, level: int) -> float:
    """E‖ω‖² of a row drawn from |a|/S (the sign-dropped law ``sample()`` uses); N(0, I): dim."""
    rule = smolyak_rule(dim, level)
    sq = (rule.values**2).sum(axis=1)
    return float((np.abs(rule.weights) * sq).sum() / rule.abs_mass)


@SAMPLERS.register("sgq")
class SparseGridQuadratureSampler(Sampler):
    """Rows drawn from a Gauss–Hermite Smolyak rule with probability ∝ |weight| (signs dropped)."""

    marginally_gaussian = False

    def __init__(
        self,
        dim: int,
        num_features: int,
        level: int = 2,
        *,
        seed: int = 0,
        layer_index: int | None = None,
    ) -> None:
        super().__init__(dim, num_features, seed=seed, layer_index=layer_index)
        self.level = positive_int(level, "sgq sampler: level")
        rule = smolyak_rule(self.dim, self.level)
        self.num_nodes = len(rule.weights)
        self.abs_mass = rule.abs_mass
        probs = torch.from_numpy(np.abs(rule.weights) / rule.abs_mass)
        self._probs = probs.to(DRAW_DTYPE)
        self._coords = torch.from_numpy(rule.coords)
        self._values = torch.from_numpy(rule.values).to(DRAW_DTYPE)
        self._signs = torch.from_numpy(np.sign(rule.weights)).to(DRAW_DTYPE)

    def _draw(
        self, generator: torch.Generator | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, signs) on ``device`` in float64: rows j_r ~ |a|/S, W[r] = ω_{j_r}."""
        m = self.num_features
        index = draw_index(self._probs, (m,), generator, device)
        coords = self._coords.to(device)[index]  # (m, L)
        values = self._values.to(device)[index]
        w = torch.zeros(m, self.dim + 1, dtype=DRAW_DTYPE, device=device)
        w.scatter_(1, torch.where(coords >= 0, coords, self.dim), values)  # padding → dummy col
        return w[:, : self.dim], self._signs.to(device)[index]

    def _sample(
        self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return self._draw(generator, draw_device(generator, device))[0]

    def sample_signed(
        self,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(W, signs, S): the same W as :meth:`sample` for the same generator state, the signs
        s_r = sign(a_{j_r}) and S = Σ|a_j|. (S/m) Σ_r s_r g(ω_r) is unbiased for Σ_j a_j g(ω_j)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = dtype or torch.get_default_dtype()
        w, signs = self._draw(generator, draw_device(generator, device))
        return w.to(device, dtype), signs.to(device, dtype), self.abs_mass

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, level={self.level}, nodes={self.num_nodes}"
