"""Encoded splits as Arrow datasets (HF ``datasets``): written once, memory-mapped on load.

A reader is a generator of rows (``Dataset.from_generator``); rows it cannot use are kept as
rows with a ``problem`` (and the ``line`` they came from), so the bad-row policy
(:func:`apply_policy`) gives the same error or warning from a fresh read and from the cache.
The dataset is fingerprinted by the reader kind/version, every source file's resolved path,
size and modification time, and the reader's parameters, so a changed file or option reads
again; later steps (``Dataset.map``) are cached by ``datasets``' own fingerprints. Cache root:
the ``cache_dir`` argument, else ``$LRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/lra_data`` (default
``~/.cache/lra_data``); ``cache_dir=False`` keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, Value
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher

from .errors import RowPolicy

CacheDir = str | os.PathLike | bool | None
#: Columns every reader writes besides its own: the source line, the problem (None = a good
#: row) and the file of a bad row when it is not the dataset's source (e.g. one aclImdb review).
ROW_FEATURES = {"line": Value("int64"), "problem": Value("string"), "path": Value("string")}


def cache_root(cache_dir: CacheDir = None) -> Path | None:
    """Resolve the cache root (``None`` when caching is disabled)."""
    if cache_dir is False:
        return None
    if cache_dir is not None and cache_dir is not True:
        return Path(cache_dir)
    env = os.environ.get("LRA_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lra_data"


def fingerprint(kind: str, version: int, files: Sequence[Path], params: dict[str, Any]) -> str:
    """Hash of the reader kind/version, the source files' identity and the parameters."""
    ident = []
    for f in files:
        st = f.stat()
        ident.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return Hasher.hash({"kind": kind, "version": version, "files": ident, "params": params})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` progress bars while reading (restores the previous setting)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _rows(read: Callable[..., Iterator[dict[str, Any]]], placeholder: dict[str, Any],
          **kwargs: Any) -> Iterator[dict]:
    """The reader's rows; a source without rows gives one ``placeholder`` row with line 0
    (``datasets`` refuses an empty generator), which :func:`apply_policy` leaves out."""
    empty = True
    for row in read(**kwargs):
        empty = False
        yield row
    if empty:
        yield placeholder


def encoded(name: str, version: int, files: Sequence[Path], params: dict[str, Any],
            read: Callable[..., Iterator[dict[str, Any]]], features: dict[str, Any],
            cache_dir: CacheDir = None, **read_kwargs: Any) -> Dataset:
    """The Arrow dataset ``name`` of the rows ``read(**read_kwargs)`` yields (columns
    ``features`` plus :data:`ROW_FEATURES`), from the cache when present. An error the reader
    raises (a whole file that is unreadable) comes out as itself, not wrapped by
    ``datasets``."""
    key = fingerprint(name, version, files, params)
    feats = Features({**features, **ROW_FEATURES})
    root = cache_root(cache_dir)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet())
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lra_data-")))
        try:
            return Dataset.from_generator(
                _rows, features=feats, cache_dir=str(root), keep_in_memory=cache_dir is False,
                gen_kwargs={"read": read, "placeholder": _placeholder(feats), **read_kwargs},
                fingerprint=f"{name}-{key}")
        except DatasetGenerationError as exc:
            cause = exc.__cause__
            if isinstance(cause, Exception):
                raise cause.with_traceback(None) from None
            raise


def _placeholder(features: Features) -> dict[str, Any]:
    empty = {"binary": b"", "int64": -1}
    row = {name: empty.get(getattr(f, "dtype", ""), None) for name, f in features.items()}
    return {**row, "line": 0}


def map_cached(ds: Dataset, function: Callable[..., Any], **kwargs: Any) -> Dataset:
    """``ds.map(function, batched=True, **kwargs)`` without progress bars (cached by
    ``datasets``' fingerprint unless ``ds`` is in memory)."""
    with _quiet():
        return ds.map(function, batched=True, **kwargs)


def apply_policy(ds: Dataset, source: str, skip: bool) -> tuple[np.ndarray, int]:
    """``(good rows, skipped count)`` of a dataset of :func:`encoded`: raises
    :class:`~lra_data.errors.BadRowError` for the first row with a ``problem`` (by line) unless
    ``skip``, then warns once with the count."""
    problem = ds.data.column("problem")
    lines = np.asarray(ds.data.column("line").to_numpy())
    real = lines > 0  # line 0: the placeholder of an empty source
    bad = np.asarray(pc.is_valid(problem).to_numpy(zero_copy_only=False), dtype=bool) & real
    good = np.flatnonzero(~bad & real)
    if not bad.any():
        return good, 0
    rows = np.flatnonzero(bad)
    first = pa.array(rows[np.argsort(lines[rows], kind="stable")][:5])
    policy = RowPolicy(skip=skip)
    for path, line, text in zip(ds.data.column("path").take(first).to_pylist(),
                                lines[first.to_numpy()], problem.take(first).to_pylist()):
        policy.bad(path or source, int(line), text)
    policy.skipped = int(rows.size)
    policy.warn_if_skipped(source)
    return good, int(rows.size)
