"""The training application layer: Lightning models, data modules, callbacks, loggers and the
``train`` / ``evaluate`` entry points used by ``train.py`` and ``eval.py``.

Unlike the math layer (``spectra.registry``, ``spectra.features``, ``spectra.attention``, which
import only torch), this package imports Lightning, Hydra/OmegaConf and (lazily) W&B. It finds
every component through the registries.
"""

from spectra.training.attention import AttentionSpec, attention_spec, layer_seed
from spectra.training.config_store import register_configs
from spectra.training.naming import run_name, run_tags
from spectra.training.run import evaluate, train

register_configs()  # the registries' config nodes, before any config is composed

__all__ = [
    "AttentionSpec",
    "attention_spec",
    "evaluate",
    "layer_seed",
    "register_configs",
    "run_name",
    "run_tags",
    "train",
]
