"""One test per row of the table in docs/errors.md: trigger the mistake as the row says, and
assert the raised type (or a warning) and the message text of the row (``…`` = varying part)."""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tiny import TINY_MODEL, compose_config

from spectra.registry import ATTENTIONS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"

FAST = [
    "task=lra_listops",
    "attention=favor_plus",
    "debug=fdr",
    "attention.num_features=16",
    *TINY_MODEL,
    "task.pad_to=longest",
    "task.batch_size=4",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar.refresh_rate=0",
]


# -- the table ------------------------------------------------------------------------------------
def _rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if not re.match(r"^\| E\d+ \|", line):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line
        rows[cells[0]] = dict(
            zip(("id", "mistake", "trigger", "raised", "message"), cells, strict=True)
        )
    return rows


def _fragments(message_cell: str) -> list[str]:
    quoted = re.findall(r"`([^`]*)`", message_cell)
    return [part.strip() for q in quoted for part in q.split("…") if part.strip()]


ROWS = _rows()


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory) -> Path:
    """A real checkpoint of a one-step run."""
    out = tmp_path_factory.mktemp("run")
    metrics = _train([*FAST, f"task.data_dir={data_dir}", "test=false"], out)
    return Path(metrics["last_model_path"])


def _train(overrides: list[str], out: Path) -> dict:
    from spectra.training import train

    return train(compose_config(overrides, out))


def _eval(overrides: list[str], out: Path) -> dict:
    from spectra.training import evaluate

    return evaluate(compose_config(overrides, out, name="eval"))


Outcome = tuple[list[str], str]  # (type names of the exception, or ["warning"]; the text)


def _raised(fn: Callable[[], object]) -> Outcome:
    try:
        fn()
    except Exception as exc:
        return [cls.__name__ for cls in type(exc).__mro__], str(exc)
    raise AssertionError("no error was raised")


def _warned(fn: Callable[[], object], capsys) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    text = "\n".join(str(w.message) for w in caught) + "\n" + capsys.readouterr().err
    return ["warning"], text


def _qkv(d: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(2, 1, 5, d)
    return q, q.clone(), q.clone()


def _wandb_logger(out: Path, extra: list[str]):
    cfg = compose_config([*FAST, "logger=wandb", *extra], out)
    return instantiate(OmegaConf.to_container(cfg.logger.wandb, resolve=True))


# -- one trigger per row ---------------------------------------------------------------------
def _config(*overrides: str) -> Callable[..., Outcome]:
    """A training run with ``overrides`` (fails before loading data, or while loading it)."""

    def trigger(tmp_path: Path, data_dir: Path, **_: object) -> Outcome:
        return _raised(lambda: _train([*FAST, f"task.data_dir={data_dir}", *overrides], tmp_path))

    return trigger


def _with_val_file(content: Callable[[str], str]) -> Callable[..., Outcome]:
    def trigger(tmp_path: Path, data_dir: Path, **_: object) -> Outcome:
        copy = tmp_path / "data"
        shutil.copytree(data_dir, copy)
        val = copy / "listops" / "basic_val.tsv"
        val.write_text(content(val.read_text()))
        return _raised(lambda: _train([*FAST, f"task.data_dir={copy}"], tmp_path / "run"))

    return trigger


def _e55(tmp_path: Path, **_: object) -> Outcome:
    from lra_data.task_text import write_jsonl_gz

    for split in ("train", "test"):
        write_jsonl_gz(tmp_path / "imdb" / f"{split}.jsonl.gz",
                       [(f"review {i} " * 20, i % 2) for i in range(200)])
    path = tmp_path / "imdb" / "train.jsonl.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    import lra_data

    return _raised(lambda: lra_data.build_dataset("lra_text", "train", tmp_path))


def _e29(**_: object) -> Outcome:
    attention = ATTENTIONS.build("random_features", head_dim=8, num_features=8, feature_map="oprf")
    return _raised(lambda: attention(*_qkv(), causal=True))


def _e30(**_: object) -> Outcome:
    return _raised(lambda: ATTENTIONS.build("skyformer", head_dim=8)(*_qkv(), causal=True))


def _e31(**_: object) -> Outcome:
    return _raised(lambda: ATTENTIONS.build("softmax", head_dim=8)(*_qkv(), mask=torch.ones(2, 5)))


def _e32(**_: object) -> Outcome:
    return _raised(lambda: ATTENTIONS.build("softmax", head_dim=16)(*_qkv(8)))


def _e34(tmp_path: Path, **_: object) -> Outcome:
    from spectra.training.module import build_model

    cfg = OmegaConf.to_container(compose_config(FAST, tmp_path), resolve=True)
    model = build_model(cfg, max_positions=16)
    ids = torch.tensor([[3, 7, 300, 0]])
    return _raised(lambda: model({"input_ids": ids, "mask": ids > 0}))


def _e38(tmp_path: Path, data_dir: Path, **_: object) -> Outcome:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n" * 20)
    return _config(f"ckpt_path={notes}")(tmp_path=tmp_path / "run", data_dir=data_dir)


def _e39(tmp_path: Path, checkpoint: Path, **_: object) -> Outcome:
    half = tmp_path / "half.ckpt"
    data = checkpoint.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    return _raised(lambda: _eval([f"ckpt_path={half}"], tmp_path / "eval"))


def _e40(tmp_path: Path, checkpoint: Path, **_: object) -> Outcome:
    flipped = tmp_path / "flipped.ckpt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    return _raised(lambda: _eval([f"ckpt_path={flipped}"], tmp_path / "eval"))


def _e42(tmp_path: Path, data_dir: Path, **_: object) -> Outcome:
    overrides = [*FAST, f"task.data_dir={data_dir}", "ckpt_path=last", "test=false"]
    return _raised(lambda: _train(overrides, tmp_path))


def _e44(tmp_path: Path, checkpoint: Path, **_: object) -> Outcome:
    return _raised(lambda: _eval([f"ckpt_path={checkpoint}", "split=train"], tmp_path))


def _e47(tmp_path: Path, data_dir: Path, **_: object) -> Outcome:
    fault = [
        "+callbacks.fault._target_=faults.FaultInjector",
        "+callbacks.fault.kind=nan_output",
        "+callbacks.fault.step=2",
        "+callbacks.fault.module=model.encoder.blocks.1.attn.attention",
        "trainer.max_steps=3",
        "trainer.limit_train_batches=3",
    ]
    return _config(*fault)(tmp_path=tmp_path, data_dir=data_dir)


def _e48(tmp_path: Path, capsys, monkeypatch, **_: object) -> Outcome:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    extra = ["logger.wandb.mode=online", "logger.wandb.init_timeout=2"]
    return _warned(lambda: _wandb_logger(tmp_path, extra), capsys)


def _e49(tmp_path: Path, capsys, monkeypatch, **_: object) -> Outcome:
    monkeypatch.setenv("WANDB_API_KEY", "bad")
    return _warned(lambda: _wandb_logger(tmp_path, ["logger.wandb.mode=online"]), capsys)


def _e50(tmp_path: Path, capsys, monkeypatch, **_: object) -> Outcome:
    from spectra.training import logging_guard

    real = shutil.disk_usage
    monkeypatch.setattr(
        logging_guard.shutil,
        "disk_usage",
        lambda p: SimpleNamespace(total=real(p).total, used=real(p).total, free=3 * 2**20),
    )
    return _warned(lambda: _wandb_logger(tmp_path, ["logger.wandb.mode=offline"]), capsys)


TRIGGERS: dict[str, Callable[..., Outcome]] = {
    "E01": _config("attention=favor_plu"),
    "E02": _config("foo=1"),
    "E03": _config("logger=foo"),
    "E04": _config("attention.name=softmx"),
    "E05": _config("attention.sampler.name=orthogonl"),
    "E06": _config("attention.feature_map.name=posr"),
    "E07": _config("+attention.foo=1"),
    "E08": _config("+attention.sampler.foo=1"),
    "E09": _config("attention.sampler.scale=foo"),
    "E10": _config("task.name=lra_nope"),
    "E11": _config("+task.foo=1"),
    "E12": _config("+model.depth=3"),
    "E13": _config("+optim.momentum=0.9"),
    "E14": _config("+trainer.foo=1"),
    "E15": _config("attention.num_features=abc"),
    "E16": _config("attention.num_features=0"),
    "E17": _config("attention.num_features=-4"),
    "E18": _config("task.batch_size=abc"),
    "E19": _config("model.embed_dim=1.5"),
    "E20": _config("model.num_heads=0"),
    "E21": _config("model.dropout=1.5"),
    "E22": _config("attention.redraw_interval=0"),
    "E23": _config("attention/feature_map=gerf", "attention.feature_map.A=0.3"),
    "E24": _config("seed=abc"),
    "E25": _config("task.num_workers=-1"),
    "E26": _config("optim.lr=-1"),
    "E27": _config("trainer.precision=17"),
    "E28": _config("trainer=ddp"),
    "E29": _e29,
    "E30": _e30,
    "E31": _e31,
    "E32": _e32,
    "E33": _config("model.max_positions=8"),
    "E34": _e34,
    "E35": _config("task.data_dir=/nowhere/spectra-data", "task.prepare=null"),
    "E36": _with_val_file(lambda text: text.splitlines()[0] + "\n"),
    "E37": _with_val_file(lambda text: ""),
    "E38": _e38,
    "E39": _e39,
    "E40": _e40,
    "E41": _config("ckpt_path=/no/such.ckpt"),
    "E42": _e42,
    "E43": lambda tmp_path, **_: _raised(lambda: _eval([], tmp_path)),
    "E44": _e44,
    "E45": _config("train=false"),
    "E46": _config("train=false", "test=false"),
    "E47": _e47,
    "E48": _e48,
    "E49": _e49,
    "E50": _e50,
    "E51": _config("optim.lr=abc"),
    "E52": _config("trainer=gpu"),
    "E53": _config("attention.head_dim=64"),
    "E54": _config("+attention.layer_index=1"),
    "E55": _e55,
    "E56": _with_val_file(lambda text: text + "(MAX 1 2\t3\textra column\n"),
}
NEEDS_CHECKPOINT = {"E39", "E40", "E44"}


def test_every_row_has_a_test_and_every_test_a_row() -> None:
    assert sorted(ROWS) == sorted(TRIGGERS)
    for row in ROWS.values():
        assert _fragments(row["message"]), row["id"]


@pytest.fixture(autouse=True)
def _no_wandb_env(monkeypatch):
    for key in ("WANDB_MODE", "WANDB_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if wandb is not None:
        wandb.teardown()


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_error_message_of_row(row_id, tmp_path, data_dir, request, capsys, monkeypatch) -> None:
    row = ROWS[row_id]
    if row_id in ("E28", "E52") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=ddp / trainer=gpu is valid here")
    kwargs = {
        "tmp_path": tmp_path,
        "data_dir": data_dir,
        "capsys": capsys,
        "monkeypatch": monkeypatch,
    }
    if row_id in NEEDS_CHECKPOINT:
        kwargs["checkpoint"] = request.getfixturevalue("checkpoint")
    types, text = TRIGGERS[row_id](**kwargs)
    raised = row["raised"].strip("`")
    assert raised in types, f"{row_id}: expected {raised}, got {types[0]}: {text}"
    position = 0
    for fragment in _fragments(row["message"]):
        found = text.find(fragment, position)
        assert found >= 0, f"{row_id}: {fragment!r} not in (after position {position}):\n{text}"
        position = found + len(fragment)
