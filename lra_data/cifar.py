"""CIFAR-10, python version (Krizhevsky 2009), for LRA Image.

The official ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html) unpacks
to ``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5`` (10,000 training images
each), ``test_batch`` (10,000) and ``batches.meta``. Each batch is a Python 2 pickle (protocol
2) of a dict with byte-string keys: ``b"data"`` a ``uint8`` array (10000, 3072) -- per row the
1,024 red, then green, then blue values of a 32 × 32 image, each plane row-major --,
``b"labels"`` a list of ints 0–9, ``b"batch_label"`` and ``b"filenames"``.

Batches are unpickled by :class:`SafeUnpickler`, which only builds numpy arrays and dtypes
(a pickle can run arbitrary code; a file that asks for anything else is refused).

Grayscale, as LRA does it (``tf.image.rgb_to_grayscale`` on ``uint8`` images in
``lra_benchmarks/image/input_pipeline.py``): ``x = float32(v) / 255`` per channel,
``g = 0.2989·R + 0.5870·G + 0.1140·B`` (float32), then ``uint8(trunc(g · 255.5))`` --
see :func:`lra_grayscale`.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FILES = (*TRAIN_FILES, TEST_FILE)
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
IMAGE_SIZE = 32
PIXELS = IMAGE_SIZE * IMAGE_SIZE


def lra_grayscale(rgb: np.ndarray) -> np.ndarray:
    """LRA's grayscale of ``uint8`` RGB pixels ``(..., 3)`` -> ``uint8`` ``(...)``:
    ``trunc((0.2989·R + 0.5870·G + 0.1140·B) / 255 · 255.5)`` in float32 (TF's
    ``rgb_to_grayscale``: ``convert_image_dtype`` to float, weighted sum, back to ``uint8``
    by multiplying with 255.5 and truncating)."""
    flt = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = flt @ GRAY_WEIGHTS
    return (gray * np.float32(255.5)).astype(np.uint8)


def batch_to_pixels(data: np.ndarray) -> np.ndarray:
    """CIFAR batch rows (N, 3072) -> grayscale pixel sequences (N, 1024), row-major."""
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * PIXELS:
        raise ValueError(f"expected CIFAR-10 data of shape (N, {3 * PIXELS}), got {data.shape}")
    rgb = data.reshape(-1, 3, PIXELS).transpose(0, 2, 1)  # (N, 1024, 3)
    return lra_grayscale(rgb)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays/dtypes and plain containers (the contents of CIFAR files)."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists and strings (is this file really a CIFAR-10 python batch?)"
            )
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 moved it; avoids the deprecation shim
        return super().find_class(module, name)


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale pixels (N, 1024) ``uint8`` and labels (N,) ``int64`` of one batch file.
    Raises ``ValueError`` naming the file when it is not a CIFAR-10 python batch."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, "
                         "expected a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (no {', '.join(missing)} "
                         f"entry; keys: {', '.join(map(str, batch))})")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    pixels = batch_to_pixels(batch["data"])
    if labels.shape != (pixels.shape[0],):
        raise ValueError(f"{path}: {pixels.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be 0-9, got {labels.min()}..{labels.max()}")
    return pixels, labels


# ------------------------------------------------------------------------------- writing
def _short_or_long_bytes(data: bytes) -> bytes:
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    return b"J" + struct.pack("<i", value)  # BININT


def _py2_array(array: np.ndarray) -> bytes:
    """A uint8 array pickled the way numpy 1.x under Python 2 did (``numpy.core.multiarray``
    ``_reconstruct``, byte strings as ``BINSTRING``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    shape = b"(" + b"".join(_int(int(s)) for s in array.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _short_or_long_bytes(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _short_or_long_bytes(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
             + b"K\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nK\x00\x85"
            + _short_or_long_bytes(b"b") + b"\x87R" + b"(K\x01" + shape + dtype + b"\x89"
            + _short_or_long_bytes(array.tobytes()) + b"tb")


def py2_batch_pickle(data: np.ndarray, labels: Sequence[int], batch_label: str,
                     filenames: Sequence[str]) -> bytes:
    """The bytes of a CIFAR-10 python batch as the original files hold them: a protocol-2
    pickle written by Python 2 (``str`` keys and file names are byte strings)."""
    out = [b"\x80\x02}q\x00(", _short_or_long_bytes(b"data"), _py2_array(data),
           _short_or_long_bytes(b"labels"), b"]q\x02(", *(_int(int(v)) for v in labels), b"e",
           _short_or_long_bytes(b"batch_label"), _short_or_long_bytes(batch_label.encode()),
           _short_or_long_bytes(b"filenames"), b"]q\x03(",
           *(_short_or_long_bytes(n.encode()) for n in filenames), b"eu."]
    return b"".join(out)


def write_batches(out_dir: str | os.PathLike, train_rgb: np.ndarray, train_labels: np.ndarray,
                  test_rgb: np.ndarray, test_labels: np.ndarray) -> Path:
    """Write ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` (the python-version
    layout) from RGB images (N, 32, 32, 3) ``uint8``; the training images are cut into five
    batches of (nearly) equal size, in order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def rows(rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb, dtype=np.uint8)
        if rgb.ndim != 4 or rgb.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected RGB images (N, 32, 32, 3), got {rgb.shape}")
        return rgb.transpose(0, 3, 1, 2).reshape(len(rgb), -1)  # planes R, G, B

    parts = np.array_split(np.arange(len(train_labels)), len(TRAIN_FILES))
    batches = [(name, idx) for name, idx in zip(TRAIN_FILES, parts)]
    train_rows = rows(train_rgb)
    for i, (name, idx) in enumerate(batches, 1):
        blob = py2_batch_pickle(train_rows[idx], np.asarray(train_labels)[idx],
                                f"training batch {i} of 5", [f"img_{j}.png" for j in idx])
        (out / name).write_bytes(blob)
    blob = py2_batch_pickle(rows(test_rgb), np.asarray(test_labels), "testing batch 1 of 1",
                            [f"test_{j}.png" for j in range(len(test_labels))])
    (out / TEST_FILE).write_bytes(blob)
    meta = {b"label_names": [n.encode() for n in LABEL_NAMES],
            b"num_cases_per_batch": max((len(p) for p in parts), default=0),
            b"num_vis": 3 * PIXELS}
    (out / META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return out
