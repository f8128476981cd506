"""Fail-fast config validation (spectra.training.schema): bad values stop a run at startup, in a
few lines naming the key, before anything is built, printed or loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tiny import compose_config

from spectra.training.module import LRAModule, build_model, one_cycle
from spectra.training.schema import ConfigError, check_run_config, config_problems

ROOT = Path(__file__).resolve().parents[1]

CLI_CASES = [
    # (override, text the output must contain: the key and what to do)
    ("attention.num_features=-3", "num_features (m) must be a positive integer, got -3"),
    ("optim.lr=abc", "full_key: optim.lr"),
    ("trainer=gpu", "use trainer=cpu"),
]


def _cli(override: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), override, f"hydra.run.dir={tmp_path}/run",
         "logger=csv"],
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120,
    )
    return proc, time.perf_counter() - start


@pytest.mark.parametrize(("override", "expected"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_value_fails_fast_and_short_on_the_command_line(override, expected, tmp_path) -> None:
    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=gpu is valid here")
    proc, seconds = _cli(override, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert expected in output, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) <= 20, output
    assert seconds < 30, f"{override} took {seconds:.1f} s"
    assert not (tmp_path / "run" / "csv").exists()  # nothing was built (no logger, no run)


def test_full_error_env_gives_the_traceback(tmp_path) -> None:
    proc, _ = _cli("attention.num_features=-3", tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "num_features (m)" in proc.stderr


def test_every_problem_is_reported_by_key() -> None:
    cfg = compose_config(["attention.num_features=0", "model.num_heads=0", "optim.lr=-1",
                          "scheduler.anneal_strategy=sideways", "trainer=gpu"])
    problems = dict(config_problems(cfg))
    expected = {"attention", "model", "optim", "scheduler"}
    if not torch.cuda.is_available():
        expected.add("trainer")
        assert isinstance(problems["trainer"], ConfigError)
    assert set(problems) == expected
    assert "num_features (m)" in str(problems["attention"])
    assert "num_heads" in str(problems["model"])
    assert "Invalid learning rate" in str(problems["optim"])
    assert "anneal_strategy" in str(problems["scheduler"])


def test_outside_a_command_line_run_the_component_error_is_raised() -> None:
    with pytest.raises(ValueError, match=r"num_features \(m\) must be a positive integer"):
        check_run_config(compose_config(["attention.num_features=-3"]))
    check_run_config(compose_config([]))  # the defaults are valid


def test_unknown_optimizer_option_fails_at_startup() -> None:
    with pytest.raises(TypeError, match="momentum"):
        check_run_config(compose_config(["+optim.momentum=0.9"]))


def test_attention_head_dim_must_equal_model_head_dim() -> None:
    cfg = OmegaConf.to_container(compose_config(["attention.head_dim=64"]), resolve=True)
    with pytest.raises(ValueError, match=r"attention\.head_dim=64 differs from model\.head_dim=32"):
        build_model(cfg, max_positions=8)
    cfg = OmegaConf.to_container(compose_config(["model.head_dim=16"]), resolve=True)
    assert cfg["attention"]["head_dim"] == 16  # the preset reads ${model.head_dim}
    model = build_model(cfg, max_positions=8)
    assert model.encoder.blocks[0].attn.attention.head_dim == 16


def _module(overrides: list[str]) -> LRAModule:
    cfg = OmegaConf.to_container(compose_config(["trainer.max_steps=100", *overrides]),
                                 resolve=True)
    module = LRAModule(cfg, max_positions=8)
    module.total_steps = lambda: 100  # no Trainer attached
    return module


def test_optimizer_and_schedule_are_instantiated_from_their_groups() -> None:
    out = _module(["optim.lr=0.01", "optim.weight_decay=0.1", "scheduler.warmup_steps=10"])
    optimizer, scheduler = out.configure_optimizers().values()
    scheduler = scheduler["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["weight_decay"] == 0.1 and optimizer.defaults["eps"] == 1e-6
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 100
    assert optimizer.param_groups[0]["max_lr"] == 0.01
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 / 25)


def test_another_optimizer_is_a_config_change() -> None:
    module = _module([])
    module.cfg["optim"] = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["max_lr"] == 0.5


def test_one_cycle_caps_the_warmup() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    schedule = one_cycle(torch.optim.SGD([param], lr=1.0), total_steps=10, warmup_steps=1000)
    lrs = []
    for _ in range(10):
        lrs.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    # warm-up capped at half the run: 5 steps, peak at step 5 - 1 (OneCycleLR's phase end)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 4


def test_task_and_seed_problems_are_reported_under_their_keys() -> None:
    problems = dict(config_problems(compose_config(["task.name=lra_nope"])))
    assert set(problems) == {"task"}  # the model check waits for a known task
    assert "unknown task 'lra_nope'" in str(problems["task"])
    problems = dict(config_problems(compose_config(["seed=abc"])))
    assert "seed must be an int" in str(problems["seed"])  # (attention.seed reads ${seed} too)


@pytest.mark.parametrize(("override", "error", "text"), [
    ("trainer.precision=17", ValueError, "Precision 17 is invalid"),
    ("+trainer.foo=1", TypeError, "unexpected keyword argument 'foo'"),
])  # fmt: skip
def test_trainer_arguments_are_checked_at_startup(override, error, text) -> None:
    """What Lightning's Trainer refuses, refused before anything is built (docs/errors.md E14,
    E27), under the key ``trainer``; the valid default builds."""
    problems = dict(config_problems(compose_config([override])))
    assert set(problems) == {"trainer"} and isinstance(problems["trainer"], error)
    assert text in str(problems["trainer"])
    assert not dict(config_problems(compose_config([])))
