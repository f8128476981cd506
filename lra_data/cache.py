"""On-disk cache of encoded datasets (numpy arrays, memory-mapped on load).

Readers parse a source file once and store the encoded arrays under
``<cache root>/<kind>-<key>/``; ``key`` hashes the reader version, every source file's resolved
path, size and modification time, and the reader's parameters, so a changed file or option
re-encodes. Cache root: the ``cache_dir`` argument, else ``$LRA_CACHE_DIR``, else
``$XDG_CACHE_HOME/lra_data`` (default ``~/.cache/lra_data``). ``cache_dir=False`` disables it.
Sources smaller than ``MIN_CACHED_BYTES`` in total (e.g. test fixtures) are parsed directly:
they take milliseconds and would only fill the cache with entries keyed by temporary paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CacheDir = str | os.PathLike | bool | None
MIN_CACHED_BYTES = 8 << 20


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


def _total_size(files: Sequence[Path]) -> float:
    """Total bytes of the source files; a directory (many files) always counts as large."""
    return sum(float("inf") if f.is_dir() else f.stat().st_size for f in files)


def cache_key(kind: str, version: int, files: Sequence[Path], params: dict[str, Any]) -> str:
    """Hash of the reader kind/version, the source files' identity and the parameters."""
    ident = []
    for f in files:
        st = f.stat()
        ident.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"kind": kind, "version": version, "files": ident, "params": params},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached(kind: str, version: int, files: Sequence[Path], params: dict[str, Any],
           build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
           cache_dir: CacheDir = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return ``build()``'s ``(arrays, meta)``, from the cache when present.

    ``meta`` must be JSON-serializable. Arrays come back memory-mapped (read-only).
    """
    root = cache_root(cache_dir)
    if root is None or _total_size(files) < MIN_CACHED_BYTES:
        return build()
    target = root / f"{kind}-{cache_key(kind, version, files, params)}"
    meta_path = target / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(target / f"{name}.npy", mmap_mode="r")
                  for name in meta["__arrays__"]}
        return arrays, meta["meta"]
    arrays, meta = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        (tmp / "meta.json").write_text(json.dumps({"__arrays__": list(arrays), "meta": meta}))
        try:
            os.replace(tmp, target)
        except OSError:  # another process wrote the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:  # read-only or full cache location: work without the cache
        pass
    return arrays, meta
