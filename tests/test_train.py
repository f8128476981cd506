"""End to end: train/test/resume/eval on tiny fixtures, fail-fast names, W&B offline, DDP sim.

Everything runs with ``debug=fdr`` (one step) on ``lra_data.write_fixture`` data; the subprocess
tests run ``python train.py`` exactly as a user would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from tiny import TINY_MODEL

import lra_data
from spectra.registry import UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small and fast: tiny model, few features, sequences padded to the longest in the batch.
FAST = [
    *TINY_MODEL,
    "task.pad_to=longest",
    "task.batch_size=8",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lra")
    for task in ("lra_listops", "imdb_retrieval"):
        lra_data.write_fixture(task, root, rows_per_split=16, seed=0)
    return root


def compose_train(overrides: list[str], out: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", *overrides])
    return cfg


def run_train(overrides: list[str], out: Path) -> dict:
    from spectra.training import train

    return train(compose_train(overrides, out))


RANDOM_FEATURE_PRESETS = {
    "favor_plus",
    "favor_pp",
    "favor_sharp",
    "performer_trig",
    "spectraformer",
}


def base(data_dir: Path, task: str = "lra_listops", attention: str = "favor_plus") -> list[str]:
    few = ["attention.num_features=16"] if attention in RANDOM_FEATURE_PRESETS else []
    return [
        f"task={task}",
        f"attention={attention}",
        "debug=fdr",
        f"task.data_dir={data_dir}",
        *FAST,
        *few,
    ]


def test_fdr_trains_tests_checkpoints_and_logs(data_dir, tmp_path) -> None:
    metrics = run_train(base(data_dir, attention="favor_sharp"), tmp_path)
    assert metrics["global_step"] == 1
    assert 0.0 <= metrics["objective"] <= 1.0 and 0.0 <= metrics["test/acc"] <= 1.0
    for key in (
        "train/loss",
        "val/acc",
        "val/loss",
        "model/params_total",
        "perf/mean_step_time_s",
        "perf/mean_tokens_per_s",
        "perf/peak_mem_mb",
        "wall_time_s",
    ):
        assert key in metrics, key
    assert Path(metrics["last_model_path"]).is_file()
    assert Path(metrics["best_model_path"]).is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["run_name"] == "lra_listops.random_features.orthogonal.saderf.m16.s0"
    csv_text = (tmp_path / "csv" / "metrics.csv").read_text()
    for column in (
        "train/loss",
        "lr-AdamW",
        "train/time",  # Lightning's ThroughputMonitor
        "train/lengths",
        "val/acc",
        "time/elapsed_s",  # WallClock: accuracy against wall clock
    ):
        assert column in csv_text, column
    hparams = (tmp_path / "csv" / "hparams.yaml").read_text()
    assert "saderf" in hparams and "model/params_total" in hparams


def test_bf16_mixed_precision_fdr(data_dir, tmp_path) -> None:
    metrics = run_train([*base(data_dir), "trainer.precision=bf16-mixed"], tmp_path)
    assert metrics["global_step"] == 1
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_retrieval_fdr(data_dir, tmp_path) -> None:
    metrics = run_train(base(data_dir, task="imdb_retrieval", attention="softmax"), tmp_path)
    assert metrics["global_step"] == 1 and "test/acc" in metrics


def test_resume_continues_global_step_and_eval_on_checkpoint(data_dir, tmp_path) -> None:
    common = [
        *base(data_dir),
        "trainer.max_steps=4",
        "trainer.limit_train_batches=2",
        "trainer.val_check_interval=2",
    ]
    first = run_train([*common, "trainer.max_epochs=1", "test=false"], tmp_path / "a")
    assert first["global_step"] == 2
    last = first["last_model_path"]
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    second = run_train([*common, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "b")
    assert second["global_step"] == 4
    steps = (tmp_path / "b" / "csv" / "metrics.csv").read_text()
    assert "train/loss" in steps
    # WallClock carries the elapsed wall clock over the resume: run b's clock starts at a's
    elapsed = [pd.read_csv(tmp_path / d / "csv" / "metrics.csv")["time/elapsed_s"].dropna()
               for d in ("a", "b")]
    assert elapsed[0].is_monotonic_increasing and elapsed[1].is_monotonic_increasing
    assert elapsed[1].iloc[0] > elapsed[0].iloc[-1] > 0

    # eval.py's function on the resumed run's last checkpoint, config taken from the checkpoint
    from spectra.training import evaluate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ecfg = compose(
            "eval",
            overrides=[
                f"paths.output_dir={tmp_path / 'eval'}",
                f"ckpt_path={second['last_model_path']}",
                "split=val",
                "trainer.limit_val_batches=1",
            ],
        )
    result = evaluate(ecfg)
    assert 0.0 <= result["val/acc"] <= 1.0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["split"] == "val"

    # train=false test=true: test a checkpoint with the composed config
    tested = run_train([*common, "train=false", f"ckpt_path={last}"], tmp_path / "c")
    assert "test/acc" in tested and tested["test/ckpt_path"] == last


def test_bad_names_fail_before_data_loading(tmp_path) -> None:
    missing = tmp_path / "no-data-here"  # exists, holds nothing: loading would raise
    missing.mkdir()  # MissingDataError (an explicit task.data_dir that does not exist is one)
    common = ["debug=fdr", f"task.data_dir={missing}", "task.prepare=null", *FAST]
    with pytest.raises(UnknownComponentError) as err:
        run_train([*common, "attention=favor_plus", "attention.sampler.name=orthogonl"], tmp_path)
    assert "orthogonal" in str(err.value) and "gaussian" in str(err.value)
    with pytest.raises(UnknownComponentError, match="Registered feature maps"):
        run_train([*common, "attention=favor_plus", "attention.feature_map.name=nope"], tmp_path)
    with pytest.raises(UnknownComponentError, match="softmax"):
        run_train([*common, "attention=softmax", "attention.name=softmx"], tmp_path)
    with pytest.raises(ValueError, match="known tasks"):
        run_train([*common, "attention=softmax", "task.name=lra_nope"], tmp_path)
    assert not any(missing.iterdir())


def test_missing_data_error_says_where_it_looked(tmp_path) -> None:
    from spectra.training.data import MissingDataError

    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(MissingDataError, match="Looked for") as err:
        run_train(
            [
                "task=lra_retrieval",
                "attention=softmax",
                "debug=fdr",
                f"task.data_dir={missing}",
                "task.search_dirs=[]",
                *FAST,
            ],
            tmp_path,
        )
    assert str(missing) in str(err.value) and "prepare" in str(err.value)


def test_falling_back_to_a_search_dir_is_logged(data_dir, tmp_path, caplog, monkeypatch) -> None:
    from spectra.training.data import find_data, log

    # an earlier Hydra run in this process may have reconfigured logging (disabled loggers)
    monkeypatch.setattr(log, "disabled", False)
    monkeypatch.setattr(log, "propagate", True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="spectra.training.data"):
        found, _ = find_data("lra_listops", None, [str(empty), str(data_dir)])
    assert found == data_dir.resolve()
    assert "using" in caplog.text and str(empty) in caplog.text and str(data_dir) in caplog.text
    assert f"- {empty / 'listops' / 'basic_train.tsv'}" in caplog.text  # not an empty list
    assert "Looked for:\n  - " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spectra.training.data"):
        find_data("lra_listops", None, [str(data_dir), str(empty)])
    assert caplog.text == ""  # found where asked first: nothing to say


def test_quickstart_style_prepare_generates_missing_listops(tmp_path) -> None:
    out = tmp_path / "gen"
    prepare = "{num_train:64,num_val:16,num_test:16,min_length:10,max_length:60,max_depth:4}"
    metrics = run_train(
        [*base(out), "task.data_dir=null", f"task.search_dirs=[{out}]", f"+task.prepare={prepare}",
         "task.max_length=64"],
        tmp_path / "run",
    )
    assert metrics["data/train_size"] == 64
    assert any(out.rglob("*.tsv"))


def test_wandb_init_failure_falls_back_to_csv(monkeypatch, tmp_path, capsys) -> None:
    import lightning.pytorch.loggers as pl_loggers

    from spectra.training.loggers import wandb_logger

    class Broken:
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("no network")

    monkeypatch.setattr(pl_loggers, "WandbLogger", Broken)
    logger = wandb_logger(save_dir=str(tmp_path), mode="offline")
    assert isinstance(logger, pl_loggers.CSVLogger)
    assert "W&B logging is unavailable (RuntimeError: no network)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mode must be one of"):
        wandb_logger(save_dir=str(tmp_path), mode="sometimes")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LOCAL_RANK", None)
    env["WANDB_MODE"] = "offline"
    env["WANDB_SILENT"] = "true"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _run(args: list[str], script: str = "train.py", timeout: int = 240):
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]
    return proc


@pytest.mark.slow
def test_cli_multirun_wandb_offline_one_group_then_eval(data_dir, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    _run(
        [
            "-m",
            "attention=favor_plus,favor_sharp",
            "task=lra_listops",
            "debug=fdr",
            "logger=wandb",
            f"task.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep}",
            *FAST,
        ]
    )
    groups, runs = set(), []
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        groups.add(metrics["logger/wandb_group"])
        runs += list((sweep / job / "wandb").glob("offline-run-*"))
    assert groups == {"sweep"}
    assert len(runs) == 2 and all(any(r.glob("*.wandb")) for r in runs)
    assert "attention=favor_sharp" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()

    # eval.py, as a user runs it, on the second job's checkpoint
    out = tmp_path / "eval"
    _run(
        [
            f"ckpt_path={sweep / '1' / 'checkpoints' / 'last.ckpt'}",
            "split=test",
            "trainer.limit_test_batches=1",
            f"hydra.run.dir={out}",
        ],
        script="eval.py",
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["split"] == "test" and 0.0 <= result["test/acc"] <= 1.0
    assert result["run_name"].startswith("eval.lra_listops.random_features.orthogonal.saderf.")


@pytest.mark.slow
def test_cli_ddp_sim_two_processes_in_a_multirun(data_dir, tmp_path) -> None:
    """trainer=ddp_sim: 2 CPU processes (gloo) per job; two jobs in one multirun check that the
    workers are relaunched for the right job and that the second job starts a fresh group."""
    sweep = tmp_path / "ddp"
    proc = _run(
        [
            "-m",
            "trainer=ddp_sim",
            "debug=fdr",
            "task=lra_listops",
            "attention=favor_plus,softmax",
            f"task.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep}",
            *FAST,
        ]
    )
    names = []
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["global_step"] == 1
        # every rank drew the same random features (checked before DDP wrapped the model)
        assert metrics["feature_sync/ranks_checked"] == 2 and metrics["feature_sync/checks"] >= 2
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran in this job dir
        names.append(metrics["run_name"])
    assert (
        names[0].startswith("lra_listops.random_features") and names[1] == "lra_listops.softmax.s0"
    )
    assert "differs across DDP ranks" not in proc.stderr


def test_metrics_files_are_strict_json(tmp_path) -> None:
    """NaN/inf (e.g. the objective of a run without validation) are written as null."""
    from spectra.sweeps.status import write_status
    from spectra.training.metrics_file import write_json as _write_json

    data = {"objective": math.nan, "nested": {"a": [1.0, math.inf, -math.inf]}, "ok": 0.5}
    _write_json(tmp_path / "m.json", data)

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    saved = json.loads((tmp_path / "m.json").read_text(), parse_constant=reject)
    assert saved == {"objective": None, "nested": {"a": [1.0, None, None]}, "ok": 0.5}
    path = write_status(tmp_path / "run", "completed", {"objective": math.nan})
    assert json.loads(path.read_text(), parse_constant=reject)["objective"] is None
