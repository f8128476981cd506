"""Fixtures shared by the test files: config composition, data directories, cache isolation.

Quick check while editing: ``python -m pytest -q -m "not slow"``; CI runs the whole suite
(``python -m pytest -q``, the README's command).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from tiny import compose_config as compose_config_fn

import lra_data

ComposeConfig = Callable[..., DictConfig]


@pytest.fixture(scope="session")
def compose_config() -> ComposeConfig:
    """``compose_config(overrides, out="/tmp/unused", name="train")`` → the composed config."""
    return compose_config_fn


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A directory with a tiny generated ListOps set (16 rows per split)."""
    root = tmp_path_factory.mktemp("lra")
    lra_data.write_fixture("lra_listops", root, rows_per_split=16, seed=0)
    return root


@pytest.fixture
def isolated_lra(tmp_path, monkeypatch) -> Path:
    """The lra_data cache under ``tmp_path`` and no ``LRA_DATA_DIR`` from the environment."""
    cache = tmp_path / "lra_cache"
    monkeypatch.setenv("LRA_CACHE_DIR", str(cache))
    monkeypatch.delenv("LRA_DATA_DIR", raising=False)
    return cache


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: thousands of tiny ops run several times faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
