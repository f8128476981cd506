"""LRA task data: ListOps, byte-level IMDB text, AAN retrieval (+ an IMDB substitute), Image
(CIFAR-10 grayscale) and Pathfinder-32.

Public API (imports nothing from ``spectra``): ``TASKS``, ``TaskSpec``, ``build_dataset``,
``Collator``, ``prepare``, ``write_fixture``, ``dataset_stats``; see ``lra_data/README.md``.
"""

from . import (  # noqa: F401  (register the tasks)
    task_aan,
    task_image,
    task_listops,
    task_pathfinder,
    task_text,
)
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
