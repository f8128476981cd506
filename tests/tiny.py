"""Shared by the end-to-end tests: the smallest model that still runs every path, and config
composition (also the ``compose_config`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


TINY_MODEL = [
    "model.embed_dim=16",
    "model.ffn_dim=32",
    "model.head_dim=8",
    "model.head_hidden_dim=16",
]

# A whole tiny training run on the generated ListOps fixture (task.data_dir=… to add): 10 steps
# of batch 4, one validation batch at the end, logs every step, no progress bar.
TINY_RUN = [
    "task=lra_listops",
    "attention=favor_plus",
    "attention.num_features=16",
    *TINY_MODEL,
    "task.pad_to=longest",
    "task.batch_size=4",
    "trainer.max_steps=10",
    "trainer.val_check_interval=100",
    "trainer.check_val_every_n_epoch=null",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
]


def compose_config(overrides: list[str], out: Path | str = "/tmp/unused",
                   name: str = "train") -> DictConfig:
    """``conf/<name>.yaml`` composed with ``overrides``, as ``train.py`` composes it (every
    registered component and schema in the ConfigStore first); runs write under ``out``."""
    from spectra.training.config_store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={out}", *overrides])
