"""Exact resumption: a seeded, resumable, DDP-sharded sampler and the callback that restores the
data position and the per-step random state after ``ckpt_path=…``.

Lightning 2.x restores the loop counters, optimizer, LR scheduler and model buffers (random-feature
matrices W and their ``redraw_step``), but not where the shuffled epoch stood: on a mid-epoch
resume a plain ``RandomSampler`` starts its permutation again. Here:

* :class:`ResumableSampler` orders epoch ``e`` by ``randperm(n, seed=hash(seed, e))`` (a pure
  function of (seed, epoch)), shards it over the DDP ranks (rank r takes positions r, r+R, …) and
  can start a pass ``start`` samples into the rank's share. Training pads the permutation (by
  repeating its head) to a multiple of R so every rank runs the same number of steps; evaluation
  does not pad, so every sample is counted exactly once (ranks may get one sample more or less).
* :class:`ResumableDataLoader` makes Lightning treat the loader as resumable
  (``state_dict``/``load_state_dict``: seed and epoch).
* :class:`ExactResume` (a callback) seeds torch's global generator at every training step from
  (seed, global step, rank) — so dropout masks depend on the step, not on how many random numbers
  earlier code (validation, a restart) consumed — and, after a restore, moves the sampler to the
  restored (epoch, batches done in that epoch) before the first batch is drawn.

With these, a run killed at any point and resumed from its last checkpoint on CPU computes the
same losses, bit for bit, as an uninterrupted run (``tests/test_reliability_resume.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sized
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ExactResume", "ResumableDataLoader", "ResumableSampler", "make_loader", "mix_seed"]

log = logging.getLogger(__name__)


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


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch order, sharded over ranks, resumable mid-epoch.

    Pass ``e`` over a dataset of n items: ``order = randperm(n, generator=mix_seed(seed, e))``
    (``arange(n)`` if ``shuffle=False``); with ``pad=True`` the order is extended by its own head
    to ``R·⌈n/R⌉`` items; rank r takes ``order[r::R]`` and yields it from position ``start``.
    ``start`` applies to the next pass only (see :meth:`resume`); ``len()`` is always the full
    share, so step counts do not change on resume. A ``DistributedSampler`` subclass, so
    Lightning keeps it instead of injecting its own (which pads evaluation sets).
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
        num_replicas = world if num_replicas is None else num_replicas
        rank = me if rank is None else rank
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        super().__init__(
            data_source,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.pad = bool(pad)
        self.size = len(data_source)
        self.start = 0
        if self.pad:
            self.num_samples = -(-self.size // self.num_replicas)
        else:
            self.num_samples = len(range(self.rank, self.size, self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def order(self, epoch: int) -> list[int]:
        """This rank's indices of pass ``epoch`` (all of them, ignoring ``start``)."""
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
        start, self.start = self.start, 0  # one pass only
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Pass number (Lightning calls this at every epoch start); a new epoch starts at 0."""
        if int(epoch) != self.epoch:
            self.start = 0
        self.epoch = int(epoch)

    def resume(self, epoch: int, start: int) -> None:
        """Make the next pass epoch ``epoch`` from this rank's ``start``-th sample."""
        if start < 0 or start > self.num_samples:
            raise ValueError(
                f"cannot resume at sample {start} of a shard of {self.num_samples} samples"
            )
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "size": self.size,
            "num_replicas": self.num_replicas,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the epoch; a changed dataset size, seed or world size is warned about (the
        order then differs from the interrupted run's)."""
        mine = self.state_dict()
        keys = ("seed", "size", "num_replicas", "shuffle")
        changed = [k for k in keys if state.get(k) != mine[k]]
        if changed:
            log.warning(
                "resuming with a different %s than the checkpoint (%s vs %s): the data order "
                "will differ from the interrupted run's",
                ", ".join(changed),
                {k: mine[k] for k in changed},
                {k: state.get(k) for k in changed},
            )
        self.epoch = int(state.get("epoch", self.epoch))


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning saves and restores with the fit loop (its sampler's
    seed and epoch), so it does not warn that a mid-epoch resume is unreliable."""

    @property
    def resumable_sampler(self) -> ResumableSampler | None:
        sampler = self.sampler
        return sampler if isinstance(sampler, ResumableSampler) else None

    def state_dict(self) -> dict[str, Any]:
        sampler = self.resumable_sampler
        return {"sampler": sampler.state_dict()} if sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.resumable_sampler
        if sampler is not None and "sampler" in state:
            sampler.load_state_dict(state["sampler"])


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> ResumableDataLoader:
    """The loader of one split: training shuffles per (seed, epoch) and pads shards to equal
    length; evaluation keeps the order and counts every sample once across DDP ranks."""
    sampler = ResumableSampler(dataset, shuffle=train, seed=seed, pad=train)  # type: ignore[arg-type]
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),  # worker seeds
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


def _train_loaders(trainer: L.Trainer) -> list[DataLoader]:
    combined = getattr(trainer.fit_loop, "_combined_loader", None)
    if combined is None:
        return []
    return [dl for dl in combined.flattened if isinstance(dl, DataLoader)]


class ExactResume(Callback):
    """Bit-exact resumption (see the module docstring).

    ``seed``: the run's seed (``${seed}``). Every training step ``s`` on rank r starts with
    ``torch.manual_seed(mix_seed(seed, s, r))``. After a checkpoint restore, the training
    sampler is moved to the restored epoch and to the batches already done in it, and the
    loader's iterator is recreated before the first batch is used.
    """

    def __init__(self, seed: int = 0, seed_every_step: bool = True) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"ExactResume seed must be an int, got {seed!r}")
        self.seed = seed
        self.seed_every_step = seed_every_step
        self.resumed_at: tuple[int, int] | None = None  # (epoch, batches done) after a restore

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fit_loop.restarting:
            return
        loaders = [dl for dl in _train_loaders(trainer) if isinstance(dl.sampler, ResumableSampler)]
        if not loaders:
            return
        epoch = int(trainer.current_epoch)
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        boundary = done >= trainer.num_training_batches
        if boundary:
            done = 0  # the checkpoint closed its epoch: Lightning starts the next one afresh
        for dl in loaders:
            sampler = dl.sampler
            assert isinstance(sampler, ResumableSampler) and dl.batch_size is not None
            sampler.resume(epoch, min(done * dl.batch_size, len(sampler)))
        fetcher = trainer.fit_loop._data_fetcher
        if fetcher is not None:
            iter(fetcher)  # new iterator: the first batch comes from the restored position
        self.resumed_at = (epoch, done)
        where = (
            "an epoch boundary (the next epoch starts at its first batch)"
            if boundary
            else f"epoch {epoch}, batch {done}"
        )
        log.info("resumed the training data at step %d: %s", trainer.global_step, where)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.seed_every_step:
            torch.manual_seed(mix_seed(self.seed, trainer.global_step, trainer.global_rank))
