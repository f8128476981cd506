"""LRA text-task data: ListOps, byte-level IMDB text, AAN retrieval (+ an IMDB substitute).

Public API (imports nothing from ``spectra``): ``TASKS``, ``TaskSpec``, ``build_dataset``,
``Collator``, ``prepare``, ``write_fixture``, ``dataset_stats``; see ``lra_data/README.md``.
"""

from . import task_aan, task_listops, task_text  # noqa: F401  (register the tasks)
from .collate import Collator
from .dataset import LRADataset
from .errors import BadRowError, LRADataError, MissingDataError
from .registry import SPLITS, TASKS, TaskSpec, build_dataset, dataset_stats, prepare, write_fixture

__all__ = [
    "SPLITS",
    "TASKS",
    "BadRowError",
    "Collator",
    "LRADataError",
    "LRADataset",
    "MissingDataError",
    "TaskSpec",
    "build_dataset",
    "dataset_stats",
    "prepare",
    "write_fixture",
]
