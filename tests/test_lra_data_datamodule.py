"""Where the data module looks for data: an explicit ``task.data_dir`` (command line or
``LRA_DATA_DIR``) must exist and is the only place; ``task.search_dirs`` apply only when it is
null, and ``task.prepare`` then writes into the first of them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lra_data
from spectra.training.data import datamodule_for, find_data

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"num_train": 16, "num_val": 4, "num_test": 4, "min_length": 10, "max_length": 40,
         "max_depth": 3}


def _task(compose_config, *overrides: str) -> dict:
    cfg = compose_config(["task=lra_text", *overrides])
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_default_data_dir_is_null_unless_lra_data_dir_is_set(compose_config, monkeypatch):
    monkeypatch.delenv("LRA_DATA_DIR", raising=False)
    assert _task(compose_config)["data_dir"] is None
    monkeypatch.setenv("LRA_DATA_DIR", "/from/env")
    assert _task(compose_config)["data_dir"] == "/from/env"


def test_explicit_missing_data_dir_fails_at_construction(compose_config, tmp_path, monkeypatch):
    monkeypatch.delenv("LRA_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "imdb").mkdir(parents=True)  # a search dir that would be used before
    missing = tmp_path / "nonexistent"
    task = _task(compose_config, f"task.data_dir={missing}", "task.search_dirs=[data]")
    with pytest.raises(lra_data.MissingDataError) as info:
        datamodule_for(task)
    msg = str(info.value)
    assert f"task.data_dir={missing}" in msg and "directory does not exist" in msg
    assert "must be an existing directory" in msg and "task.data_dir=null" in msg
    assert "(from LRA_DATA_DIR)" not in msg


def test_missing_lra_data_dir_is_named(compose_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(lra_data.MissingDataError, match=r"\(from LRA_DATA_DIR\)"):
        datamodule_for(_task(compose_config))


def test_explicit_missing_dir_is_not_created_by_prepare(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(lra_data.MissingDataError, match=r"task\.data_dir"):
        datamodule_for({"name": "lra_listops", "data_dir": str(missing), "prepare": SMALL})
    assert not missing.exists()


def test_prepare_writes_into_the_first_search_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = datamodule_for({"name": "lra_listops", "data_dir": None, "search_dirs": ["gen", "x"],
                         "prepare": SMALL, "max_length": 40})
    dm.prepare_data()
    assert (tmp_path / "gen" / "listops" / "basic_train.tsv").is_file()
    dm.setup("fit")
    assert dm.resolved_dir == (tmp_path / "gen").resolve() and len(dm.datasets["train"]) == 16


def test_explicit_existing_dir_is_the_only_place(data_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(lra_data.MissingDataError) as info:
        find_data("lra_listops", empty, [str(data_dir)])  # search_dirs ignored
    assert str(data_dir) not in str(info.value)
    assert str(empty / "listops" / "basic_train.tsv") in str(info.value)


def test_cli_explicit_missing_data_dir_exits_fast_with_a_short_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LRA_DATA_DIR"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "train.py", "task=lra_text", "task.data_dir=/nonexistent",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=csv"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "task.data_dir=/nonexistent" in out and "directory does not exist" in out
    assert "Epoch" not in out  # nothing trained on another directory
    # the startup check's short form: the key, no traceback (unless HYDRA_FULL_ERROR=1)
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 20, out
    assert "invalid run config" in out and "  task: " in out
    assert elapsed < 60, elapsed  # generous for 2 shared cores; the check runs before the model
