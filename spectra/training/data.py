"""Lightning data modules for the LRA tasks (built on :mod:`lra_data`).

Two task families: single-sequence classification (ListOps, Text, Image, Pathfinder) and
paired-sequence retrieval (AAN, and the IMDB substitute), chosen by the task's ``TaskSpec.pair``
flag — never by name.

Where the data is looked for: an explicit ``task.data_dir`` (a command-line value, or
``$LRA_DATA_DIR`` through the default ``${oc.env:LRA_DATA_DIR,null}``) is the only place; it must
exist, else :class:`~lra_data.MissingDataError` names the key and the path before anything else
runs. With ``task.data_dir=null`` (the default when ``LRA_DATA_DIR`` is unset) each of
``task.search_dirs`` is tried in order, first hit wins. Relative paths are tried against the
working directory, then against the repository root. If nothing is found and ``task.prepare`` is
set, ``lra_data.prepare(task, dir, seed=…, **task.prepare)`` writes the data (rank zero only; e.g.
the quickstart's small generated ListOps) into ``task.data_dir``, or into the first search
directory (relative to the working directory) when ``task.data_dir`` is null. Otherwise a
:class:`~lra_data.MissingDataError` says where we looked and how to get the data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

import lra_data
from lra_data import SPLITS, MissingDataError
from spectra.registry import check_options
from spectra.training.resume import make_loader

__all__ = [
    "ClassificationDataModule",
    "LRADataModule",
    "MissingDataError",
    "RetrievalDataModule",
    "datamodule_for",
    "find_data",
    "task_spec",
]

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
HOW_TO_PREPARE = (
    "Prepare it with `python -m lra_data prepare {task} --out data` (see lra_data/README.md), "
    "then point task.data_dir=… (or LRA_DATA_DIR) at the directory that has it."
)


def task_spec(name: str) -> Any:
    """``lra_data.TASKS[name]``; an unknown task raises ``ValueError`` listing the known ones."""
    try:
        return lra_data.TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(lra_data.TASKS))}"
        ) from None


def _options(raw: str | os.PathLike) -> list[Path]:
    """Where a configured path may be: itself if absolute, else cwd / path, repo root / path."""
    path = Path(os.path.expanduser(str(raw)))
    return [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path]


def explicit_dir(task: str, data_dir: str | os.PathLike) -> Path:
    """The existing directory ``task.data_dir`` names, else :class:`MissingDataError` naming the
    key, the path (and ``LRA_DATA_DIR`` when the value came from it) and what to do."""
    for option in _options(data_dir):
        if option.is_dir():
            return option.resolve()
    env = os.environ.get("LRA_DATA_DIR")
    origin = " (from LRA_DATA_DIR)" if env is not None and str(data_dir) == env else ""
    raise MissingDataError(
        task,
        [f"{p} (task.data_dir={data_dir}{origin}: directory does not exist)"
         for p in _options(data_dir)],
        "an explicit task.data_dir must be an existing directory: fix the path (or "
        "LRA_DATA_DIR), or pass task.data_dir=null to search task.search_dirs (where "
        "task.prepare may write the data).",
    )


def candidate_dirs(
    data_dir: str | os.PathLike | None, search_dirs: Sequence[str] = ()
) -> list[Path]:
    """The directories to look in, in order, without duplicates: ``data_dir`` alone when given,
    else ``search_dirs`` (relative paths: cwd, then the repository root)."""
    out: list[Path] = []
    explicit = data_dir is not None and str(data_dir) != ""
    for raw in [data_dir] if explicit else search_dirs:
        for option in _options(raw):
            resolved = option.resolve()
            if resolved not in out:
                out.append(resolved)
    return out


def find_data(
    task: str,
    data_dir: str | os.PathLike | None,
    search_dirs: Sequence[str] = (),
    **dataset_options: Any,
) -> tuple[Path, Dataset]:
    """The first of :func:`candidate_dirs` from which ``task``'s train split loads, with that
    split (``dataset_options`` go to ``lra_data.build_dataset``); else :class:`MissingDataError`."""
    if data_dir is not None and str(data_dir) != "":
        explicit_dir(task, data_dir)  # names the task in the error
    tried: list[str] = []
    for directory in candidate_dirs(data_dir, search_dirs):
        if not directory.is_dir():
            tried.append(f"{directory} (directory does not exist)")
            continue
        try:
            dataset = lra_data.build_dataset(task, "train", directory, **dataset_options)
        except MissingDataError as exc:
            tried.extend(exc.looked_in)
            continue
        if tried:  # not the first place: say so, a fallback must never go unnoticed
            log.warning(
                "task %r: no data in the first search directories, using %s. Looked for:\n%s",
                task,
                directory,
                "\n".join(f"  - {place}" for place in tried),
            )
        return directory, dataset
    if not tried:
        tried.append("(nowhere: task.data_dir is null and task.search_dirs is empty)")
    raise MissingDataError(task, tried, HOW_TO_PREPARE.format(task=task))


class LRADataModule(L.LightningDataModule):
    """Datasets, collation and loaders of one LRA task (one family per subclass).

    ``collator`` pads a batch to the longest sequence, rounded up to ``pad_to_multiple_of``
    (or to the fixed ``pad_to``). ``max_positions`` is the longest padded length a batch can have,
    which the model's learned positions must cover.

    ``val_split`` is the split validated on (``val``; ``test`` reproduces reference code that
    selects checkpoints on the test set, see ``conf/protocol``). ``extra_pad_ids`` are ids the
    mask treats as padding besides 0 (the collator's option).
    """

    pair: bool = False

    def __init__(
        self,
        *,
        name: str,
        data_dir: str | None = None,
        search_dirs: Sequence[str] = (),
        max_length: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to: int | str = "longest",
        pad_to_multiple_of: int | None = None,
        prepare: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        skip_bad_rows: bool = False,
        val_split: str = "val",
        extra_pad_ids: Sequence[int] = (),
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = task_spec(name)
        if bool(self.spec.pair) != self.pair:
            raise ValueError(
                f"{type(self).__name__} is for {'paired' if self.pair else 'single'}-sequence "
                f"tasks; task {name!r} has pair={self.spec.pair}. Use datamodule_for(...)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"task.batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"task.num_workers must be an integer >= 0, got {num_workers!r}")
        if val_split not in ("val", "test"):
            raise ValueError(f"task.val_split must be 'val' or 'test', got {val_split!r}")
        self.name = name
        self.val_split = val_split
        self.data_dir = data_dir or None
        self.search_dirs = list(search_dirs or ())
        if self.data_dir is not None:
            explicit_dir(name, self.data_dir)  # fail now, not after the model is built
        self.max_length = int(max_length or self.spec.max_length)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pad_to = pad_to
        self.pad_to_multiple_of = pad_to_multiple_of
        self.prepare_options = dict(prepare) if prepare is not None else None
        self.options = dict(options or {})
        self.skip_bad_rows = skip_bad_rows
        self.seed = seed
        self.resolved_dir: Path | None = None
        self.datasets: dict[str, Dataset] = {}
        self.collator = lra_data.Collator(
            pad_to=pad_to,
            pad_to_multiple_of=pad_to_multiple_of,
            extra_pad_ids=list(extra_pad_ids or ()),
        )

    # -- shapes the model needs -------------------------------------------------------------
    @property
    def max_positions(self) -> int:
        """Longest padded batch length: ``pad_to`` if fixed, else max_length rounded up."""
        if isinstance(self.pad_to, int):
            return max(self.pad_to, self.max_length)
        multiple = self.pad_to_multiple_of or 1
        return -(-self.max_length // multiple) * multiple

    # -- data location ------------------------------------------------------------------------
    def _find(self) -> Path:
        directory, train = find_data(
            self.name,
            self.data_dir,
            self.search_dirs,
            max_length=self.max_length,
            skip_bad_rows=self.skip_bad_rows,
            **self.options,
        )
        self.datasets["train"] = train
        self.resolved_dir = directory
        return directory

    def prepare_data(self) -> None:
        """Rank zero: write the data with ``lra_data.prepare`` if it is missing and allowed."""
        if self.prepare_options is None:
            return
        try:
            self._find()
        except MissingDataError:
            target = self._prepare_target()
            log.info("task %r: no data found; preparing it in %s", self.name, target)
            lra_data.prepare(
                self.name, target, seed=self.seed, progress=True, **self.prepare_options
            )

    def _prepare_target(self) -> Path:
        """``task.data_dir``, else the first search directory (relative: to the cwd)."""
        if self.data_dir is not None:
            return explicit_dir(self.name, self.data_dir)
        if not self.search_dirs:
            raise MissingDataError(
                self.name,
                ["(nowhere: task.data_dir is null and task.search_dirs is empty)"],
                "set task.data_dir to an existing directory or list one in task.search_dirs",
            )
        return _options(self.search_dirs[0])[0]

    def setup(self, stage: str | None = None) -> None:
        if self.resolved_dir is None:
            self._find()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", SPLITS
        )
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = lra_data.build_dataset(
                    self.name,
                    self.val_split if split == "val" else split,
                    self.resolved_dir,
                    max_length=self.max_length,
                    skip_bad_rows=self.skip_bad_rows,
                    **self.options,
                )
            if len(self.datasets[split]) == 0:  # type: ignore[arg-type]
                raise ValueError(
                    f"the {split} split of task {self.name!r} in {self.resolved_dir} is empty "
                    "(0 rows); check the data files (or the row filters in task.options)"
                )

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool, batch_size: int) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        # Seeded (seed, epoch) order, resumable mid-epoch, sharded over DDP ranks; evaluation
        # splits are not padded, so every sample counts once (spectra.training.resume).
        return make_loader(
            self.datasets[split],
            batch_size=batch_size,
            train=shuffle,
            seed=self.seed,
            num_workers=self.num_workers,
            collate_fn=self.collator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def dataset_stats(self) -> dict[str, Any]:
        """Sizes (and truncation counts when the dataset reports them) of the loaded splits."""
        out: dict[str, Any] = {}
        for split, ds in self.datasets.items():
            out[f"data/{split}_size"] = len(ds)  # type: ignore[arg-type]
            stats = getattr(ds, "stats", None)
            if callable(stats):
                stats = stats()
            if isinstance(stats, Mapping):
                for key, value in stats.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        out[f"data/{split}_{key}"] = value
        return out


class ClassificationDataModule(LRADataModule):
    """Single-sequence tasks (ListOps, Text, Image, Pathfinder): batches ``input_ids``, ``mask``,
    ``labels``."""

    pair = False


class RetrievalDataModule(LRADataModule):
    """Paired-sequence tasks (AAN retrieval, IMDB substitute): adds ``input_ids2``, ``mask2``."""

    pair = True


_FAMILIES: dict[bool, type[LRADataModule]] = {
    False: ClassificationDataModule,
    True: RetrievalDataModule,
}

# ``task`` config keys read by the optimizer, not by the data module.
TRAINING_KEYS = frozenset({"lr"})


def datamodule_for(task_cfg: Mapping[str, Any], *, seed: int = 0) -> LRADataModule:
    """The data module of the task family of ``task_cfg["name"]`` (by ``TaskSpec.pair``).

    Unknown keys in ``task_cfg`` raise ``ValueError`` listing the allowed ones.
    """
    if "name" not in task_cfg:
        raise ValueError("the task config has no 'name'; known tasks: " + ", ".join(lra_data.TASKS))
    spec = task_spec(task_cfg["name"])
    cls = _FAMILIES[bool(spec.pair)]
    options = {k: v for k, v in task_cfg.items() if k not in TRAINING_KEYS}
    check_options(cls, options, what="task config")
    return cls(**options, seed=seed)
