"""Atomic checkpoints: a crash or SIGKILL while a checkpoint is being written never damages the
previous one; a damaged file is reported as such, with the checkpoints next to it."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from spectra.training import checkpointing as ck
from spectra.training.checkpointing import (
    AtomicCheckpointIO,
    CorruptCheckpointError,
    checkpoint_problem,
    load_checkpoint_file,
    with_atomic_checkpoint_io,
)


def _checkpoint(value: float, size: int = 200_000) -> dict:
    return {"global_step": int(value), "state_dict": {"w": torch.full((size,), value)}}


def _same(a: dict, b: dict) -> bool:
    return a["global_step"] == b["global_step"] and torch.equal(
        a["state_dict"]["w"], b["state_dict"]["w"]
    )


def _half_then(action):
    """A torch.save that writes the first half of the real bytes, then calls ``action()``."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        if hasattr(f, "write"):
            f.write(data[: len(data) // 2])
            f.flush()
        else:
            with open(f, "wb") as out:
                out.write(data[: len(data) // 2])
        action()

    return save


def test_exception_inside_the_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint(_checkpoint(1.0), path)

    def crash() -> None:
        raise RuntimeError("disk went away")

    monkeypatch.setattr(torch, "save", _half_then(crash))
    with pytest.raises(RuntimeError, match="disk went away"):
        io_plugin.save_checkpoint(_checkpoint(2.0), path)
    monkeypatch.undo()
    assert _same(io_plugin.load_checkpoint(path), _checkpoint(1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left


def _killed_writer(path: str, checkpoint: dict, naive: bool) -> None:
    """Child process: start writing ``checkpoint`` to ``path``, SIGKILL itself halfway."""
    torch.save = _half_then(lambda: os.kill(os.getpid(), signal.SIGKILL))  # type: ignore[assignment]
    if naive:
        torch.save(checkpoint, path)  # what a plain torch.save(path) would do
    else:
        AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def _kill_during_write(path: Path, naive: bool) -> int:
    # The checkpoint is made here: a forked child must not start torch's thread pools.
    checkpoint = _checkpoint(2.0)
    context = multiprocessing.get_context("fork")
    process = context.Process(target=_killed_writer, args=(str(path), checkpoint, naive))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        pytest.fail("the writer process hung")
    return process.exitcode


def test_sigkill_during_the_write_keeps_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1.0), path)
    assert _kill_during_write(path, naive=False) == -signal.SIGKILL
    assert _same(load_checkpoint_file(path, weights_only=False), _checkpoint(1.0))
    partial = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(partial) == 1 and partial[0].startswith(".partial-")
    # `ckpt_path=last` only considers files named last*.ckpt
    assert not partial[0].startswith("last") and not partial[0].endswith(".ckpt")
    # the next save (a new process) completes and removes the dead writer's temporary file
    AtomicCheckpointIO().save_checkpoint(_checkpoint(3.0), path)
    assert _same(load_checkpoint_file(path, weights_only=False), _checkpoint(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_without_atomic_writes_the_same_kill_destroys_the_checkpoint(tmp_path) -> None:
    """The fault the test above survives is real: a plain write leaves a truncated file."""
    path = tmp_path / "last.ckpt"
    torch.save(_checkpoint(1.0), path)
    assert _kill_during_write(path, naive=True) == -signal.SIGKILL
    assert "not a PyTorch checkpoint archive" in str(checkpoint_problem(path))
    with pytest.raises(CorruptCheckpointError, match="cannot be loaded"):
        load_checkpoint_file(path, weights_only=False)


def test_checkpoint_problem_diagnoses(tmp_path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save(_checkpoint(1.0), good)
    assert checkpoint_problem(good) is None
    assert checkpoint_problem(tmp_path / "missing.ckpt") == "the file does not exist"
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert checkpoint_problem(empty) == "the file is empty (0 bytes)"
    flipped = tmp_path / "flipped.ckpt"
    data = bytearray(good.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one corrupted byte inside the tensor data
    flipped.write_bytes(bytes(data))
    assert "fails its CRC check" in str(checkpoint_problem(flipped))
    with pytest.raises(CorruptCheckpointError) as err:
        load_checkpoint_file(flipped, weights_only=False)
    assert "other checkpoints in" in str(err.value) and "good.ckpt" in str(err.value)


def test_trainer_writes_periodic_last_checkpoints_atomically(tmp_path) -> None:
    """The periodic checkpoint of conf/callbacks (a second ModelCheckpoint) goes through
    AtomicCheckpointIO."""
    kwargs = with_atomic_checkpoint_io({"max_steps": 5})
    assert any(isinstance(p, AtomicCheckpointIO) for p in kwargs["plugins"])
    custom = AtomicCheckpointIO(fsync=False)
    assert with_atomic_checkpoint_io({"plugins": [custom]})["plugins"] == [custom]

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    saves: list[str] = []
    original = ck.atomic_save
    data = torch.utils.data.TensorDataset(torch.randn(16, 2))
    trainer = L.Trainer(
        **kwargs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(tmp_path, filename="last", every_n_train_steps=2)],
    )
    try:
        ck.atomic_save = lambda obj, path, **kw: (
            saves.append(Path(path).name),
            original(obj, path, **kw),
        )
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    finally:
        ck.atomic_save = original
    assert saves == ["last.ckpt", "last.ckpt"]  # steps 2 and 4, atomically
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 4
