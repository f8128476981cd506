"""Copy official LRA release files (from an extracted directory or the ``lra_release.gz``
tar archive) into our layout."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

from .errors import MissingDataError


def copy_official(task: str, source: Path, names: Sequence[str], subdirs: Sequence[str],
                  dest: Path, how_to_obtain: str) -> list[Path]:
    """Copy files ``names`` found in ``source`` (a directory searched at ``subdirs``, or a tar
    archive searched by base name) into ``dest``. Raises :class:`MissingDataError` when one is
    missing."""
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    if source.is_dir():
        looked = []
        for name in names:
            for sub in subdirs:
                path = source / sub / name
                looked.append(str(path))
                if path.is_file():
                    target = dest / name
                    if path.resolve() != target.resolve():
                        shutil.copyfile(path, target)
                    found[name] = target
                    break
        if len(found) < len(names):
            raise MissingDataError(task, looked, how_to_obtain)
        return [found[n] for n in names]
    if not source.is_file():
        raise MissingDataError(task, [str(source)], how_to_obtain)
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in found:
                    fobj = tar.extractfile(member)
                    if fobj is None:
                        continue
                    tmp = dest / f".{base}.partial"
                    with fobj, open(tmp, "wb") as out:
                        shutil.copyfileobj(fobj, out, 1 << 20)
                    tmp.replace(dest / base)
                    found[base] = dest / base
                    if len(found) == len(names):
                        break
    except tarfile.TarError as exc:
        raise ValueError(f"{source}: not a readable tar archive ({exc}); expected the LRA "
                         "release archive lra_release.gz or an extracted directory") from exc
    missing = [n for n in names if n not in found]
    if missing:
        raise MissingDataError(task, [f"{source} (archive member */{n})" for n in missing],
                               how_to_obtain)
    return [found[n] for n in names]
