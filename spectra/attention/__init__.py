"""Attention modules, registered in ``spectra.registry.ATTENTIONS``."""

from spectra.attention import (  # noqa: F401  (imports register the attentions)
    linear,
    nystromformer,
    random_features,
    skyformer,
    softmax,
)
from spectra.attention.base import Attention

__all__ = ["Attention"]
