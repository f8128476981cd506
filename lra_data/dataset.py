"""``torch.utils.data.Dataset`` over pre-encoded ragged id arrays.

Every task stores its sequences as one flat ``uint8`` array plus row offsets (already cut to
``max_length``) and the untruncated lengths; an item is a slice, converted to ``int64`` and
shifted (byte-level text: id = byte + 1). No parsing happens per item, so data-loader workers
only copy slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass
class Ragged:
    """Sequences ``data[offsets[i]:offsets[i+1]] + shift`` with untruncated ``lengths``."""

    data: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    shift: int = 0

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def ids(self, i: int) -> torch.Tensor:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        out = torch.from_numpy(np.array(self.data[a:b], dtype=np.int64))
        if self.shift:
            out += self.shift
        return out

    def take(self, index: np.ndarray) -> Ragged:
        """A new ``Ragged`` with rows ``index`` (copied)."""
        index = np.asarray(index, dtype=np.int64)
        starts, stops = self.offsets[index], self.offsets[index + 1]
        sizes = stops - starts
        new_off = np.zeros(index.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=new_off[1:])
        data = np.empty(int(new_off[-1]), dtype=self.data.dtype)
        for j, (a, b) in enumerate(zip(starts.tolist(), stops.tolist())):
            data[new_off[j] : new_off[j + 1]] = self.data[a:b]
        return Ragged(data, new_off, np.asarray(self.lengths)[index], self.shift)


def ragged_from_chunks(chunks: list[bytes] | list[np.ndarray], max_length: int,
                       shift: int = 0) -> Ragged:
    """Build a ``Ragged`` from per-row byte strings/arrays, cutting each to ``max_length``."""
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    kept = np.minimum(lengths, max_length)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for i, c in enumerate(chunks):
        n = int(kept[i])
        if n:
            buf = np.frombuffer(c, dtype=np.uint8) if isinstance(c, bytes | bytearray) else c
            data[offsets[i] : offsets[i] + n] = buf[:n]
    return Ragged(data, offsets, lengths, shift)


def ragged_from_rows(rows: np.ndarray, shift: int = 0) -> Ragged:
    """A ``Ragged`` over the rows of a 2-D array of equal-length sequences (no copy: a view of
    a memory-mapped array stays memory-mapped), e.g. flattened images."""
    rows = np.asarray(rows) if not isinstance(rows, np.ndarray) else rows
    n, length = rows.shape[0], int(np.prod(rows.shape[1:], dtype=np.int64))
    data = rows.reshape(-1) if n else np.zeros(0, dtype=np.uint8)
    offsets = np.arange(n + 1, dtype=np.int64) * length
    return Ragged(data, offsets, np.full(n, length, dtype=np.int64), shift)


def cut_ragged(r: Ragged, max_length: int) -> Ragged:
    """Cut every row of ``r`` to at most ``max_length`` tokens (keeps the full lengths)."""
    sizes = np.diff(r.offsets)
    if sizes.size == 0 or int(sizes.max()) <= max_length:
        return r
    kept = np.minimum(sizes, max_length)
    new_off = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(kept, out=new_off[1:])
    data = np.empty(int(new_off[-1]), dtype=r.data.dtype)
    for j, (a, n) in enumerate(zip(r.offsets[:-1].tolist(), kept.tolist())):
        data[new_off[j] : new_off[j] + n] = r.data[a : a + n]
    return Ragged(data, new_off, r.lengths, r.shift)


def length_summary(lengths: np.ndarray) -> dict[str, float]:
    """Percentiles and mean of a length array."""
    if lengths.size == 0:
        return {}
    pct = np.percentile(lengths, PERCENTILES)
    out = {f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)}
    out["mean"] = float(lengths.mean())
    return out


class LRADataset(Dataset):
    """Items ``{"input_ids": LongTensor (L,), "label": int}`` (pair tasks add
    ``"input_ids2"``). Attributes: ``task``, ``split``, ``max_length``, ``num_truncated``
    (rows cut to ``max_length``, summed over both sides for pair tasks), ``skipped_rows``,
    ``source`` (where the data came from), ``stats`` (a summary dict)."""

    def __init__(self, task: str, split: str, sequences: list[Ragged], labels: np.ndarray,
                 max_length: int, *, num_classes: int, skipped_rows: int = 0,
                 source: str = "", info: dict[str, Any] | None = None) -> None:
        if len(sequences) not in (1, 2):
            raise ValueError(f"a dataset has 1 or 2 sequences per item, got {len(sequences)}")
        n = int(np.asarray(labels).shape[0])
        for seq in sequences:
            if len(seq) != n:
                raise ValueError(f"{len(seq)} sequences for {n} labels")
        self.task = task
        self.split = split
        self.sequences = [cut_ragged(s, max_length) for s in sequences]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_length = int(max_length)
        self.num_classes = num_classes
        self.skipped_rows = int(skipped_rows)
        self.source = source
        self.info = dict(info or {})
        self.truncated_per_side = [int((np.asarray(s.lengths) > max_length).sum())
                                   for s in sequences]
        self.num_truncated = sum(self.truncated_per_side)

    @property
    def pair(self) -> bool:
        return len(self.sequences) == 2

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} rows")
        i = i % len(self)
        item: dict[str, Any] = {"input_ids": self.sequences[0].ids(i),
                                "label": int(self.labels[i])}
        if self.pair:
            item["input_ids2"] = self.sequences[1].ids(i)
        return item

    def lengths(self, side: int = 0) -> np.ndarray:
        """Untruncated lengths of side ``side`` (0, or 1 for pair tasks)."""
        return np.asarray(self.sequences[side].lengths)

    @property
    def stats(self) -> dict[str, Any]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        out: dict[str, Any] = {
            "task": self.task, "split": self.split, "rows": len(self),
            "label_counts": counts.tolist(), "max_length": self.max_length,
            "truncated": self.truncated_per_side, "skipped_rows": self.skipped_rows,
            "source": self.source,
        }
        for side in range(len(self.sequences)):
            key = "lengths" if side == 0 else "lengths2"
            out[key] = length_summary(self.lengths(side))
        out.update(self.info)
        return out

    def __repr__(self) -> str:
        return (f"LRADataset(task={self.task!r}, split={self.split!r}, rows={len(self)}, "
                f"max_length={self.max_length}, truncated={self.num_truncated}, "
                f"skipped_rows={self.skipped_rows})")
