"""Error types and the bad-row policy shared by every reader.

A reader either raises :class:`BadRowError` (naming the file and line) on the first malformed
row, or, when ``skip_bad_rows`` is on, counts the row, remembers the first few problems and
warns once at the end. Nothing is dropped without being counted.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field


class LRADataError(ValueError):
    """Base class of the data errors raised by :mod:`lra_data` (a ``ValueError``)."""


class BadRowError(LRADataError):
    """A malformed row: wrong column count, label out of range, non-UTF-8 text, bad token."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.problem = problem
        super().__init__(
            f"{self.path}, line {line}: {problem} (to skip and count malformed rows instead, "
            "pass skip_bad_rows=True to lra_data, or task.skip_bad_rows=true to train.py)"
        )


class MissingDataError(FileNotFoundError):
    """The data files of a task were not found; the message says where we looked and how to
    obtain them (the one such error of the project: ``spectra`` raises it too)."""

    def __init__(self, task: str, looked_in: list[str], how_to_obtain: str) -> None:
        self.task = task
        self.looked_in = list(looked_in)
        places = "\n".join(f"  - {p}" for p in looked_in)
        super().__init__(
            f"no data found for task {task!r}. Looked for:\n{places}\nHow to obtain it: "
            f"{how_to_obtain}"
        )


@dataclass
class RowPolicy:
    """Raise on the first malformed row, or (``skip=True``) count and collect them."""

    skip: bool = False
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def bad(self, path: str | os.PathLike, line: int, problem: str) -> None:
        """Report a malformed row: raises unless skipping is on."""
        error = BadRowError(path, line, problem)
        if not self.skip:
            raise error
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(f"{error.path}, line {line}: {problem}")

    def warn_if_skipped(self, what: str) -> None:
        """Emit one warning with the count of skipped rows (no-op when none were skipped)."""
        if self.skipped:
            shown = "; ".join(self.examples)
            warnings.warn(
                f"{what}: skipped {self.skipped} malformed row(s) (skip_bad_rows=True). "
                f"First: {shown}",
                stacklevel=3,
            )
