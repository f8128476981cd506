"""``torch.utils.data.Dataset`` over encoded Arrow columns.

Every task stores a sequence as one binary value per row (ids are bytes: byte-level text is the
UTF-8 text itself, pixels are grey levels, ListOps ids are < 16) in an Arrow column, usually a
memory-mapped ``datasets`` table (:mod:`lra_data.arrow`); an item is that value cut to
``max_length``, converted to ``int64`` and shifted (byte-level text: id = byte + 1). No parsing
happens per item, so data-loader workers only copy slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass
class Ragged:
    """Sequences: the bytes of ``column[rows[i]]`` (all rows when ``rows`` is None), cut to
    ``limit`` and shifted by ``shift``; ``lengths`` are the untruncated lengths."""

    column: pa.ChunkedArray | pa.Array
    rows: np.ndarray | None = None
    shift: int = 0
    limit: int | None = None
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        full = pc.binary_length(self.column).to_numpy(zero_copy_only=False).astype(np.int64)
        self.lengths = full if self.rows is None else full[self.rows]

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def ids(self, i: int) -> torch.Tensor:
        j = i if self.rows is None else int(self.rows[i])
        data = np.frombuffer(self.column[j].as_buffer(), dtype=np.uint8)[: self.limit]
        out = torch.from_numpy(data.astype(np.int64))
        if self.shift:
            out += self.shift
        return out

    def take(self, index: np.ndarray) -> Ragged:
        """The rows ``index`` (no copy of the data)."""
        index = np.asarray(index, dtype=np.int64)
        rows = index if self.rows is None else self.rows[index]
        return replace(self, rows=rows)

    def cut(self, max_length: int) -> Ragged:
        """Every row cut to at most ``max_length`` ids (the full lengths are kept)."""
        return replace(self, limit=max_length)


def ragged_from_bytes(chunks: list[bytes], shift: int = 0) -> Ragged:
    """A ``Ragged`` over in-memory byte strings."""
    return Ragged(pa.array(chunks, type=pa.binary()), shift=shift)


def ragged_from_rows(rows: np.ndarray, shift: int = 0) -> Ragged:
    """A ``Ragged`` over the rows of an array of equal-length ``uint8`` sequences (no copy: a
    memory-mapped array stays memory-mapped), e.g. flattened images."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    n, length = rows.shape[0], int(np.prod(rows.shape[1:], dtype=np.int64))
    column = pa.Array.from_buffers(pa.binary(length), n, [None, pa.py_buffer(rows.reshape(-1))])
    return Ragged(column, shift=shift)


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
        self.sequences = [s.cut(max_length) for s in sequences]
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
