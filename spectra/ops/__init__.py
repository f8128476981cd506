"""Low-level kernels shared by attention modules (torch only)."""

from spectra.ops.linear import (
    causal_linear_attention,
    causal_linear_attention_prefix_naive,
    causal_linear_attention_quadratic_naive,
    exp_linear_attention,
    exp_linear_attention_naive,
    linear_attention,
    linear_attention_naive,
    normalize_attention,
    rowwise_exp_linear_attention,
)

__all__ = [
    "causal_linear_attention",
    "causal_linear_attention_prefix_naive",
    "causal_linear_attention_quadratic_naive",
    "exp_linear_attention",
    "exp_linear_attention_naive",
    "linear_attention",
    "linear_attention_naive",
    "normalize_attention",
    "rowwise_exp_linear_attention",
]
