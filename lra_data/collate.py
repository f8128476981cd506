"""Batch collation: pad id sequences and build real-token masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class Collator:
    """Stack items into ``{"input_ids": (B, L) long, "mask": (B, L) bool (True = real token),
    "labels": (B,) long}``; pair items also give ``"input_ids2"``/``"mask2"``.

    ``pad_to="longest"`` pads to the longest sequence of the batch (each side separately),
    an int pads to that fixed length (a longer sequence raises: nothing is cut silently).
    ``pad_to_multiple_of`` rounds the padded length up. Padding id is 0. Ids in
    ``extra_pad_ids`` are masked out like padding (the Skyformer/Spectraformer reference code
    masks every id 0, i.e. black pixels of the image tasks; here pixel 0 is id 1).
    """

    def __init__(self, pad_to: int | str = "longest", pad_to_multiple_of: int | None = None,
                 pad_id: int = 0, extra_pad_ids: Sequence[int] = ()) -> None:
        if isinstance(pad_to, str):
            if pad_to != "longest":
                raise ValueError(f"pad_to must be 'longest' or a positive int, got {pad_to!r}")
        elif isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1:
            raise ValueError(f"pad_to must be 'longest' or a positive int, got {pad_to!r}")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int)
            or pad_to_multiple_of < 1
        ):
            raise ValueError(
                f"pad_to_multiple_of must be None or a positive int, got {pad_to_multiple_of!r}"
            )
        self.pad_to = pad_to
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_id = pad_id
        self.extra_pad_ids = tuple(int(i) for i in extra_pad_ids)

    def _target_length(self, longest: int) -> int:
        if self.pad_to == "longest":
            length = max(longest, 1)
        else:
            if longest > self.pad_to:
                raise ValueError(
                    f"a sequence of length {longest} does not fit pad_to={self.pad_to}; build the "
                    "dataset with max_length <= pad_to or pad to 'longest'"
                )
            length = int(self.pad_to)
        m = self.pad_to_multiple_of
        if m:
            length = -(-length // m) * m
        return length

    def _pad(self, seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        length = self._target_length(max((int(s.shape[0]) for s in seqs), default=0))
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.bool)
        for row, s in enumerate(seqs):
            if s.dim() != 1:
                raise ValueError(f"input ids must be 1-D, got shape {tuple(s.shape)}")
            n = int(s.shape[0])
            ids[row, :n] = s
            mask[row, :n] = True
        if self.extra_pad_ids:
            mask &= ~torch.isin(ids, torch.tensor(self.extra_pad_ids, dtype=ids.dtype))
        return ids, mask

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise ValueError("cannot collate an empty batch")
        out: dict[str, torch.Tensor] = {}
        out["input_ids"], out["mask"] = self._pad([it["input_ids"] for it in items])
        if "input_ids2" in items[0]:
            out["input_ids2"], out["mask2"] = self._pad([it["input_ids2"] for it in items])
        out["labels"] = torch.tensor([int(it["label"]) for it in items], dtype=torch.long)
        return out

    def __repr__(self) -> str:
        extra = f", extra_pad_ids={list(self.extra_pad_ids)}" if self.extra_pad_ids else ""
        return (f"Collator(pad_to={self.pad_to!r}, pad_to_multiple_of={self.pad_to_multiple_of}"
                f"{extra})")
