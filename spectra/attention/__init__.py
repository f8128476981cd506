"""Attention modules, registered in ``spectra.registry.ATTENTIONS``."""

from spectra.attention import (  # noqa: F401  (imports register the attentions)
    bigbird,
    informer,
    kernelized,
    linear,
    linformer,
    nystromformer,
    random_features,
    reformer,
    skyformer,
    softmax,
)
from spectra.attention.base import Attention

__all__ = ["Attention"]
