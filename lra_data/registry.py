"""Task specs, the task registry and the public entry points (``build_dataset``,
``prepare``, ``write_fixture``, ``dataset_stats``).

Each task is a :class:`TaskData` registered under its name; the entry points look the name up
(no dispatch on names). ``data_dir`` defaults to ``$LRA_DATA_DIR``, else ``./data``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .dataset import LRADataset

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task. Ids are in ``[0, vocab_size)``, 0 = pad. Image tasks set
    ``image_shape`` (height, width): a sequence is the image's pixels in row-major order."""

    name: str
    num_classes: int
    vocab_size: int
    max_length: int
    pair: bool
    description: str
    splits: tuple[str, ...] = SPLITS
    substitute_for: str | None = None
    image_shape: tuple[int, int] | None = None


class TaskData(ABC):
    """Loading, preparation and fixtures of one task."""

    spec: TaskSpec
    #: Options accepted by :meth:`load` (``build_dataset(**task_options)``) and defaults.
    load_options: ClassVar[dict[str, Any]] = {"cache_dir": None}
    #: Options accepted by :meth:`prepare` and defaults.
    prepare_options: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def load(self, split: str, data_dir: Path, max_length: int, skip_bad_rows: bool,
             **options: Any) -> LRADataset:
        """The dataset of ``split``."""

    @abstractmethod
    def prepare(self, out_dir: Path, seed: int, progress: bool, **options: Any) -> Path:
        """Write the task's files under ``out_dir``; return ``out_dir``."""

    @abstractmethod
    def write_fixture(self, data_dir: Path, rows_per_split: int, seed: int) -> Path:
        """Write a tiny valid dataset under ``data_dir``; return ``data_dir``."""


_TASK_DATA: dict[str, TaskData] = {}
TASKS: dict[str, TaskSpec] = {}


def register(data: TaskData) -> TaskData:
    """Register a task (its ``spec.name`` must be new)."""
    name = data.spec.name
    if name in _TASK_DATA:
        raise ValueError(f"task {name!r} is already registered")
    _TASK_DATA[name] = data
    TASKS[name] = data.spec
    return data


def get_task(task: str) -> TaskData:
    """The registered task ``task`` or a ``ValueError`` listing the valid names."""
    if task not in _TASK_DATA:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(_TASK_DATA))}")
    return _TASK_DATA[task]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else ``$LRA_DATA_DIR``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("LRA_DATA_DIR")
    return Path(env) if env else Path("data")


def _check_split(task: TaskData, split: str) -> None:
    if split not in task.spec.splits:
        raise ValueError(f"unknown split {split!r} for task {task.spec.name!r}; valid splits: "
                         f"{', '.join(task.spec.splits)}")


def _merge_options(allowed: dict[str, Any], given: dict[str, Any], what: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {what}; allowed: "
                         f"{', '.join(sorted(allowed)) or '(none)'}")
    return {**allowed, **given}


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def build_dataset(task: str, split: str, data_dir: str | os.PathLike | None = None, *,
                  max_length: int | None = None, skip_bad_rows: bool = False,
                  **task_options: Any) -> LRADataset:
    """The ``split`` ("train", "val" or "test") of ``task`` as a ``torch`` ``Dataset``.

    Items: ``{"input_ids": LongTensor (L,), "label": int}`` (pair tasks add
    ``"input_ids2"``), unpadded and cut to ``max_length`` (default: the task's); cut rows are
    counted in ``dataset.num_truncated``. Malformed rows raise a ``BadRowError`` naming the
    file and line, or are skipped and counted (``dataset.skipped_rows``, a warning) with
    ``skip_bad_rows=True``.
    """
    data = get_task(task)
    _check_split(data, split)
    length = data.spec.max_length if max_length is None else max_length
    _check_positive_int("max_length", length)
    options = _merge_options(data.load_options, task_options, f"build_dataset({task!r})")
    return data.load(split, resolve_data_dir(data_dir), length, bool(skip_bad_rows), **options)


def prepare(task: str, out_dir: str | os.PathLike, *, seed: int = 0, progress: bool = False,
            **options: Any) -> Path:
    """Write the files of ``task`` under ``out_dir`` (the layout ``build_dataset`` reads)."""
    data = get_task(task)
    opts = _merge_options(data.prepare_options, options, f"prepare({task!r})")
    return data.prepare(Path(out_dir), int(seed), progress, **opts)


def write_fixture(task: str, data_dir: str | os.PathLike, *, rows_per_split: int = 32,
                  seed: int = 0) -> Path:
    """Write a tiny valid dataset of ``task`` (every split) under ``data_dir``."""
    data = get_task(task)
    if isinstance(rows_per_split, bool) or not isinstance(rows_per_split, int) or (
            rows_per_split < 2):
        raise ValueError(f"rows_per_split must be an int >= 2, got {rows_per_split!r}")
    return data.write_fixture(Path(data_dir), rows_per_split, int(seed))


def dataset_stats(task: str, data_dir: str | os.PathLike | None = None, *,
                  max_length: int | None = None, skip_bad_rows: bool = False,
                  **task_options: Any) -> dict[str, dict[str, Any]]:
    """``dataset.stats`` of every split of ``task``."""
    spec = get_task(task).spec
    return {split: build_dataset(task, split, data_dir, max_length=max_length,
                                 skip_bad_rows=skip_bad_rows, **task_options).stats
            for split in spec.splits}
