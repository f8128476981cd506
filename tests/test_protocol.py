"""The ``protocol`` config group: ``default`` changes nothing; ``spectraformer_code`` composes,
applies each reference-code recipe difference (checked one by one) and trains end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tiny import TINY_MODEL

import lra_data
from spectra.registry import ATTENTIONS
from spectra.training.models import MultiHeadAttention, masked_mean
from spectra.training.protocol import PROTOCOL_DEFAULTS, apply_protocol, check_protocol

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REFERENCE = ["experiment=lra_paper", "protocol=spectraformer_code"]


def test_default_protocol_is_a_no_op(compose_config):
    cfg = compose_config(["experiment=lra_paper", "task=lra_text"])
    assert cfg.protocol.name == "default"
    assert set(cfg.protocol) == set(PROTOCOL_DEFAULTS)
    before = OmegaConf.to_container(cfg, resolve=True)
    assert apply_protocol(cfg) == {}
    assert OmegaConf.to_container(cfg, resolve=True) == before
    assert (cfg.trainer.gradient_clip_algorithm, cfg.trainer.val_check_interval,
            cfg.scheduler.warmup_steps) == ("norm", 1000, 1000)


def test_spectraformer_code_on_text_sets_every_difference(compose_config):
    cfg = compose_config([*REFERENCE, "task=lra_text"])
    assert cfg.trainer.gradient_clip_algorithm == "value"  # clip_grad_value_
    assert cfg.trainer.gradient_clip_val == 1.0
    assert cfg.trainer.val_check_interval == 500 and cfg.trainer.limit_val_batches == 200
    assert cfg.scheduler.warmup_steps == 80
    changes = apply_protocol(cfg)
    assert changes == {"task.val_split": "test", "model.pooling": "padded_length",
                       "task.pad_to": 4096, "task.pad_to_multiple_of": None,
                       "model.zero_padded_keys": True}
    assert cfg.task.val_split == "test" and cfg.task.pad_to == 4096


def test_per_task_values_and_what_does_not_apply(compose_config):
    listops = compose_config([*REFERENCE, "task=lra_listops"])
    assert listops.scheduler.warmup_steps == 1000 and listops.trainer.limit_val_batches == 62
    changes = apply_protocol(listops)
    assert changes["task.options.close_bracket"] is False and changes["task.pad_to"] == 2048
    assert "task.val_split" not in changes  # only Text validates on test
    image = compose_config([*REFERENCE, "task=lra_image", "attention=softmax"])
    assert image.trainer.val_check_interval == 50 and image.scheduler.warmup_steps == 175
    changes = apply_protocol(image)
    assert changes["task.extra_pad_ids"] == [1] and changes["task.pad_to"] == 1024
    assert "model.zero_padded_keys" not in changes  # softmax masks padding in the reference too
    substitute = compose_config([*REFERENCE, "task=imdb_retrieval"])  # not in the tables
    assert substitute.scheduler.warmup_steps == 1000
    assert substitute.trainer.limit_val_batches is None


def test_debug_presets_and_the_command_line_still_win(compose_config):
    cfg = compose_config([*REFERENCE, "task=lra_text", "debug=fdr"])
    assert cfg.trainer.val_check_interval == 1 and cfg.trainer.limit_val_batches == 1
    cfg = compose_config([*REFERENCE, "task=lra_text", "scheduler.warmup_steps=7",
                    "protocol.grad_clip_algorithm=norm"])
    assert cfg.scheduler.warmup_steps == 7
    assert cfg.trainer.gradient_clip_algorithm == "norm"


def test_bad_protocol_options():
    with pytest.raises(ValueError, match=r"protocol got unknown option.*foo; allowed: "):
        check_protocol({"foo": 1})
    with pytest.raises(ValueError, match=r"protocol\.pooling must be one of real_tokens"):
        check_protocol({"pooling": "cls"})
    with pytest.raises(ValueError, match="warmup_steps must map task names to positive"):
        check_protocol({"warmup_steps": {"lra_text": 0}})
    with pytest.raises(ValueError, match="is not implemented"):
        check_protocol({"gerf_A": "reference_random"})


# ----------------------------------------------------------------------- the pieces themselves
def test_padded_length_pooling_is_the_reference_mean():
    x = torch.randn(3, 10, 4)
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [4], [1]])
    reference = (x * mask[..., None]).mean(dim=1)  # model_LRA.py: (LN(x) * mask).mean(dim=1)
    padded = masked_mean(x, mask) * (mask.sum(1, keepdim=True) / 10)
    assert torch.allclose(padded, reference, atol=1e-6)


def test_zero_padded_keys_reproduces_the_reference_wrapper():
    torch.manual_seed(0)
    attention = ATTENTIONS.build("random_features", head_dim=8, num_features=16,
                                 feature_map="posrf", seed=0)
    ours = MultiHeadAttention(16, 2, 8, attention)
    ref = MultiHeadAttention(16, 2, 8, attention, zero_padded_keys=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    q, k, v = (ref._heads(p(x)) for p in (ref.q_proj, ref.k_proj, ref.v_proj))
    keep = mask[:, None, :, None].float()
    expected = attention(q, k * keep, v * keep, mask=None).transpose(1, 2).reshape(2, 6, 16)
    assert torch.allclose(ref(x, mask), ref.out_proj(expected), atol=1e-6)
    # full rows agree; with padding the zeroed keys still add φ(0) to the normalizer
    assert torch.allclose(ref(x, mask)[0], ours(x, mask)[0], atol=1e-6)
    assert not torch.allclose(ref(x, mask)[1, :3], ours(x, mask)[1, :3], atol=1e-4)


def test_listops_without_close_bracket_and_masked_black_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_CACHE_DIR", str(tmp_path / "cache"))
    root = lra_data.write_fixture("lra_listops", tmp_path / "l", rows_per_split=8)
    keep = lra_data.build_dataset("lra_listops", "test", root)
    drop = lra_data.build_dataset("lra_listops", "test", root, close_bracket=False)
    for i in range(len(keep)):
        ids = keep[i]["input_ids"]
        assert drop[i]["input_ids"].tolist() == ids[ids != 15].tolist()
    collate = lra_data.Collator(pad_to=4, extra_pad_ids=[1])
    batch = collate([{"input_ids": torch.tensor([1, 5, 1]), "label": 0}])
    assert batch["mask"].tolist() == [[False, True, False, False]]


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_cli_lra_paper_with_the_reference_recipe_on_text(tmp_path):
    """``python train.py experiment=lra_paper protocol=spectraformer_code task=lra_text`` as a
    user runs it (debug=fdr on the text fixture, tiny model): it composes and trains; Text's
    validation is its test split, batches are padded to 4096."""
    data = lra_data.write_fixture("lra_text", tmp_path / "data", rows_per_split=16)
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "LRA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LOCAL_RANK", None)
    args = [*REFERENCE, "task=lra_text", "debug=fdr", f"task.data_dir={data}",
            "task.search_dirs=[]", f"hydra.run.dir={run_dir}", *TINY_MODEL,
            "attention.num_features=16", "task.batch_size=8",
            "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=0"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and 0 <= metrics["test/acc"] <= 1
    assert metrics["data/val_size"] == metrics["data/test_size"] == 16  # val = the test split
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.protocol.name == "spectraformer_code"
    hparams = (run_dir / "csv" / "hparams.yaml").read_text()
    assert "protocol=spectraformer_code" in hparams and "padded_length" in hparams
    assert "pad_to: 4096" in hparams and "val_split: test" in hparams
