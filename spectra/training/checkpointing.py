"""Crash-safe checkpoints: atomic, durable writes and a clear error for an unreadable file.

:class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin, installed by ``train``) writes a
checkpoint to a hidden temporary file *in the same directory*, ``fsync``s it, renames it over the
target with ``os.replace`` (atomic on POSIX and Windows) and ``fsync``s the directory. A process
killed at any moment leaves either the previous complete checkpoint or the new complete one —
never a truncated ``last.ckpt`` — plus at most a ``.partial-*.tmp`` file, removed by the next
save. (Lightning's default writes a temporary file in the system temp directory and moves it:
atomic only when that is on the same filesystem, never fsynced, and it fills ``/tmp``.)

Loading goes through :func:`load_checkpoint_file`: a truncated or corrupt file raises
:class:`CorruptCheckpointError` saying what is wrong and which other checkpoints sit next to it
(Lightning loads with ``torch.load``, which does not check the archive's CRCs: a flipped bit
loads silently).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = [
    "AtomicCheckpointIO",
    "CorruptCheckpointError",
    "atomic_save",
    "checkpoint_problem",
    "load_checkpoint_file",
    "with_atomic_checkpoint_io",
]

# ckpt_path=last looks at files named last*.ckpt only, so it never picks a partial file
_PARTIAL_PREFIX = ".partial-"
_PARTIAL_SUFFIX = ".tmp"


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a checkpoint)."""


def _is_local(path: str | os.PathLike) -> bool:
    protocol = get_filesystem(str(path)).protocol
    protocols = protocol if isinstance(protocol, tuple | list) else (protocol,)
    return bool({"file", "local"} & set(protocols))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _partial_name() -> str:
    """``.partial-<pid>-<random>-<host>.tmp``: whose temporary file it is."""
    host = socket.gethostname() or "host"
    return f"{_PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{host}{_PARTIAL_SUFFIX}"


def _remove_stale_partials(directory: Path) -> None:
    """Delete temporary files left by writers of this host that died (their process is gone)."""
    host = socket.gethostname() or "host"
    for partial in directory.glob(f"{_PARTIAL_PREFIX}*{_PARTIAL_SUFFIX}"):
        fields = partial.name[len(_PARTIAL_PREFIX) : -len(_PARTIAL_SUFFIX)].split("-", 2)
        if len(fields) != 3 or fields[2] != host or not fields[0].isdigit():
            continue  # another machine's writer (shared filesystem): not ours to judge
        pid = int(fields[0])
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                partial.unlink()


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike, *, fsync: bool = True) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    Writes ``<dir>/.partial-<pid>-<random>-<host>.tmp``, flushes and fsyncs it, ``os.replace``s it
    onto ``path`` and fsyncs the directory. On any error (or a signal) the temporary file is
    removed and ``path`` keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent)
    tmp = target.parent / _partial_name()
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(target.parent)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the file at ``path`` as a ``torch.save`` checkpoint, or None if its
    archive is intact (every member present with a matching CRC)."""
    p = Path(path)
    if not p.exists():
        return "the file does not exist"
    if not p.is_file():
        return "it is not a file"
    size = p.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    if not zipfile.is_zipfile(p):
        return (
            f"it is not a PyTorch checkpoint archive ({size} bytes without a complete zip "
            "directory: truncated, corrupt, or another kind of file)"
        )
    try:
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"its archive cannot be read ({exc})"
    if bad is not None:
        return f"archive member {bad!r} fails its CRC check (corrupt data)"
    return None


def _siblings(path: Path) -> list[str]:
    if not path.parent.is_dir():
        return []
    return sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)


def _corrupt(path: Path, problem: str, exc: BaseException | None) -> CorruptCheckpointError:
    others = _siblings(path)
    hint = (
        f"other checkpoints in {path.parent}: {', '.join(others)}"
        if others
        else f"no other checkpoint in {path.parent}"
    )
    cause = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})" if exc else ""
    return CorruptCheckpointError(
        f"checkpoint {path} cannot be loaded: {problem}. It was probably being written when the "
        f"process died, or was copied incompletely; {hint}. Resume from another checkpoint "
        f"with ckpt_path=<file>{cause}"
    )


def load_checkpoint_file(
    path: str | os.PathLike,
    load: Callable[..., Any] = torch.load,
    *,
    verify: bool = True,
    **kwargs: Any,
) -> Any:
    """``load(path, **kwargs)`` for a checkpoint file that is intact.

    ``verify``: check the archive first (every member present, CRC-32 matching: ``torch.load``
    itself does not check CRCs, so a flipped bit would load silently). A damaged file raises
    :class:`CorruptCheckpointError` naming the problem and the other checkpoints in the same
    directory; errors of intact files (e.g. a model mismatch) propagate unchanged.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if verify and (problem := checkpoint_problem(p)) is not None:
        raise _corrupt(p, problem, None)
    try:
        return load(str(p), **kwargs)
    except Exception as exc:
        problem = checkpoint_problem(p)
        if problem is None:
            raise
        raise _corrupt(p, problem, exc) from exc


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: :func:`atomic_save` for local paths (remote URLs use the
    default), :func:`load_checkpoint_file` for loading."""

    def __init__(self, fsync: bool = True) -> None:
        super().__init__()
        self.fsync = fsync

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, path, fsync=self.fsync)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(
                path, map_location=map_location, weights_only=weights_only
            )
        return load_checkpoint_file(
            path,
            lambda p, **kw: super(AtomicCheckpointIO, self).load_checkpoint(p, **kw),
            map_location=map_location,
            weights_only=weights_only,
        )


def with_atomic_checkpoint_io(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``trainer_kwargs`` with :class:`AtomicCheckpointIO` added to ``plugins`` (unless a
    ``CheckpointIO`` plugin is already given)."""
    from lightning.fabric.plugins.io import CheckpointIO

    plugins = trainer_kwargs.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return {**trainer_kwargs, "plugins": plugins}
