"""Argument checks shared by every component: one validator per rule, one message format."""

from __future__ import annotations

import numbers

__all__ = ["positive_int", "seed_and_layer"]


def positive_int(value: object, what: str) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a ``ValueError``
    naming ``what``: ``"<what> must be a positive integer, got <value>"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def seed_and_layer(seed: object, layer_index: object) -> tuple[int, int | None]:
    """The base-contract arguments of every attention and sampler, checked: ``seed`` an int,
    ``layer_index`` None (an unnumbered module) or an int >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if layer_index is not None and (
        isinstance(layer_index, bool) or not isinstance(layer_index, numbers.Integral)
        or layer_index < 0
    ):
        raise ValueError(f"layer_index must be None or an int >= 0, got {layer_index!r}")
    return int(seed), None if layer_index is None else int(layer_index)
