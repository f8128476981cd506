"""Exact resumption: the seeded, DDP-sharded sampler, the loader, and the per-step random seed.

Lightning restores the loop counters, optimizer, LR scheduler and model buffers (random-feature
matrices W and their ``redraw_step``); a ``torchdata`` ``StatefulDataLoader`` (which Lightning
saves into and restores from the checkpoint) restores where the epoch stood. What is ours:

* :class:`ResumableSampler` orders epoch ``e`` by ``randperm(n, seed=hash(seed, e))`` (a pure
  function of (seed, epoch), so a resumed run draws the same order without storing it) and
  shards it over the DDP ranks (rank r takes positions r, r+R, …). Training pads the order (by
  repeating its head) to a multiple of R so every rank runs the same number of steps; evaluation
  does not pad, so every sample counts exactly once (ranks may get one sample more or less).
  torch's ``DistributedSampler`` pads evaluation sets and derives its order from ``seed + epoch``.
  Its state (epoch, samples yielded) goes into the loader's state.
* :class:`StepSeed` seeds torch's global generator at every training step from (seed, global
  step, rank), so dropout masks depend on the step, not on how many random numbers earlier code
  (validation, a restart) consumed. Lightning does not checkpoint the global RNG state.

With these, a run killed at any point and resumed from its last checkpoint on CPU computes the
same losses, bit for bit, as an uninterrupted run (``tests/test_reliability_resume.py``).

:func:`earlier_runs` lists the ``last.ckpt`` files of earlier runs in the places Hydra puts run
directories, for ``ckpt_path=last`` given from a fresh run directory.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from spectra.training.naming import saved_run_name
from spectra.training.signals import resume_command

__all__ = [
    "ResumableSampler", "StepSeed", "earlier_runs", "make_loader", "mix_seed", "resume_from",
    "run_roots",
]

log = logging.getLogger(__name__)
# torchdata 0.11 calls the deprecated torch.set_vital in every StatefulDataLoader.__init__
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SHA-256 of ``"a:b:…"``): distinct tuples give unrelated
    seeds, and the same tuple the same seed on every machine and rank."""
    key = ":".join(str(int(p)) for p in parts)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group, or (1, 0) outside DDP."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _SeededOrder(DistributedSampler):
    """The order of one pass; below ``StatefulDistributedSampler`` in the MRO of
    :class:`ResumableSampler`, whose ``__iter__`` skips the samples already yielded."""

    pad: bool
    size: int

    def order(self, epoch: int) -> list[int]:
        """This rank's indices of pass ``epoch``."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            full = torch.randperm(self.size, generator=gen).tolist()
        else:
            full = list(range(self.size))
        if self.pad and full:
            total = self.num_samples * self.num_replicas
            while len(full) < total:
                full += full[: total - len(full)]
        return full[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))


class ResumableSampler(StatefulDistributedSampler, _SeededOrder):
    """Seeded per-epoch order, sharded over ranks, resumable mid-epoch (see the module docstring).

    Pass ``e`` over n items: ``order = randperm(n, generator=mix_seed(seed, e))`` (``arange(n)``
    if ``shuffle=False``); with ``pad=True`` extended by its own head to ``R·⌈n/R⌉`` items; rank
    r takes ``order[r::R]``. ``state_dict`` holds the epoch and the samples yielded in it; after
    ``load_state_dict`` the next pass of that epoch starts where the saved one stood.
    """

    def __init__(
        self,
        data_source: Sized,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        world, me = _world()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        super().__init__(
            data_source,  # type: ignore[arg-type]
            num_replicas=world if num_replicas is None else num_replicas,
            rank=me if rank is None else rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.pad = bool(pad)
        self.size = len(data_source)
        if self.pad:
            self.num_samples = -(-self.size // self.num_replicas)
        else:
            self.num_samples = len(range(self.rank, self.size, self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a new epoch starts at its first sample."""
        if int(epoch) != self.epoch:
            self.next_yielded = None
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "epoch": self.epoch,
            "seed": self.seed,
            "size": self.size,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the epoch and position; a changed dataset size, seed or world size is warned
        about (the order then differs from the interrupted run's)."""
        mine = self.state_dict()
        changed = [k for k in ("seed", "size", "num_replicas", "shuffle") if state[k] != mine[k]]
        if changed:
            log.warning(
                "resuming with a different %s than the checkpoint (%s vs %s): the data order "
                "will differ from the interrupted run's",
                ", ".join(changed),
                {k: mine[k] for k in changed},
                {k: state[k] for k in changed},
            )
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
        log.info("resumed the training data at epoch %d, sample %d", self.epoch, state["yielded"])


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> StatefulDataLoader:
    """The loader of one split: training shuffles per (seed, epoch) and pads shards to equal
    length; evaluation keeps the order and counts every sample once across DDP ranks."""
    sampler = ResumableSampler(dataset, shuffle=train, seed=seed, pad=train)  # type: ignore[arg-type]
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),  # worker seeds
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


class StepSeed(Callback):
    """Every training step ``s`` on rank r starts with ``torch.manual_seed(mix_seed(seed, s, r))``
    (``seed``: the run's seed, ``${seed}``)."""

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"StepSeed seed must be an int, got {seed!r}")
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(mix_seed(self.seed, trainer.global_step, trainer.global_rank))


def run_roots() -> list[tuple[Path, str]]:
    """``(root, glob)`` of every ``last.ckpt`` Hydra's run and sweep directory patterns can hold:
    ``outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}`` gives ``(outputs, */*/checkpoints/last.ckpt)``.
    A pattern without an interpolation (one fixed directory) has no siblings to search; outside
    Hydra the list is empty."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    raw = OmegaConf.to_container(hc, resolve=False)
    assert isinstance(raw, dict)
    patterns = [str(raw["run"]["dir"]), f"{raw['sweep']['dir']}/{raw['sweep']['subdir']}"]
    out = []
    for pattern in patterns:
        root, _, _ = pattern.split("${", 1)[0].rpartition("/")
        if "${" not in pattern or not root:
            continue
        depth = pattern[len(root) + 1 :].count("/") + 1
        out.append((Path(hc.runtime.cwd, root), "*/" * depth + "checkpoints/last.ckpt"))
    return out


def earlier_runs(name: str, name_of: Callable[[Path], str | None]) -> list[Path]:
    """``last.ckpt`` files of the runs under :func:`run_roots` whose run directory's
    ``name_of`` is ``name``, newest first."""
    found = {
        ckpt
        for root, pattern in run_roots()
        for ckpt in root.glob(pattern)
        if name_of(ckpt.parent.parent) == name
    }
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resume_from(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``, where ``last`` without a ``last*.ckpt`` in this run directory means the
    newest ``last.ckpt`` of an earlier run with the same name (said in the log); with none, a
    ``FileNotFoundError`` with the resume command: never a silent fresh start. ``auto`` (studies
    run in slices, fixed run directories) resumes this directory's ``last.ckpt`` if there is one
    and starts afresh otherwise, saying which."""
    path = cfg.get("ckpt_path")
    own = Path(cfg.paths.output_dir) / "checkpoints"
    mine = any(own.glob("last*.ckpt"))
    if path == "auto":
        log.info("ckpt_path=auto: %s", f"resuming {own}/last.ckpt" if mine else
                 f"no checkpoint in {own}; starting afresh")
        return "last" if mine else None
    if path != "last" or mine:
        return path
    found = earlier_runs(cfg.run_name, saved_run_name)
    if found:
        log.warning("ckpt_path=last: no checkpoint in %s; resuming the latest run named %s: %s",
                    own, cfg.run_name, found[0])
        return str(found[0])
    roots = ", ".join(str(root) for root, _ in run_roots())
    command = resume_command("<its run directory>")
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint in {own} and no earlier run named {cfg.run_name} "
        f"{f'in {roots}' if roots else '(no Hydra run directories to search)'}. Resume a run "
        f"from its own directory: {command}; or leave out ckpt_path to start afresh"
    )
