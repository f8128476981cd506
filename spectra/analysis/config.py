"""The ``train`` config as ``train.py`` composes it, for scripts that need its values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

__all__ = ["CONF_DIR", "compose_train"]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_train(overrides: Sequence[str] = (), *, hydra_config: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` (Hydra's compose API; every registered
    sampler and feature map in the ConfigStore). Bad overrides raise Hydra's errors."""
    from spectra.training.config_store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_config)
