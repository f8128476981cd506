"""Byte-level text encoding of the LRA text and retrieval tasks (arXiv 2011.04006).

id = UTF-8 byte + 1 (ids 1..256), 0 = pad, vocabulary size 257. ``max_length`` counts bytes,
so a cut can fall inside a multi-byte character; :func:`decode` replaces such a partial
character unless ``errors="strict"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PAD_ID = 0
BYTE_SHIFT = 1
VOCAB_SIZE = 256 + BYTE_SHIFT


def encode(text: str, max_length: int | None = None) -> torch.Tensor:
    """Ids of ``text`` (UTF-8 bytes + 1), optionally cut to ``max_length`` bytes."""
    data = text.encode("utf-8")
    if max_length is not None:
        data = data[:max_length]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64) + BYTE_SHIFT)


def decode(ids: Sequence[int] | torch.Tensor | np.ndarray, errors: str = "replace") -> str:
    """Text of an id sequence; pad ids (0) are skipped, ids must be < 257."""
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"byte-level ids must be in [0, {VOCAB_SIZE}), got {arr.min()}..."
                         f"{arr.max()}")
    arr = arr[arr != PAD_ID] - BYTE_SHIFT
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors=errors)
