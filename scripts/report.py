"""Report of a sweep: ``python scripts/report.py SOURCE [--out DIR]``.

SOURCE is a Hydra multirun directory (``multirun/spectraformer_grid_…``; a folder of several
works too) or a W&B project ``entity/project`` (read through the W&B public API; ``--group``
picks one sweep; offline runs: ``wandb sync`` them first). Writes into DIR (default
``SOURCE/report`` for a directory, ``report/<project>`` otherwise):

* ``report.md`` — the cross-task LRA table of the Spectraformer paper (rows component function
  × sampler, columns ListOps, Text, Retrieval, Image, Pathfinder and their average), then one
  table per task (rows samplers, columns component functions, best in bold, mean ± std over
  seeds), failed runs;
* ``<task>_accuracy.png``, ``<task>_step_time.png``, ``<task>_peak_memory.png`` — heatmaps;
* ``<task>_pareto.png`` — accuracy vs time per step with the Pareto frontier;
* ``dashboard.html`` — one self-contained page with all of the above; ``runs.csv`` — every run
  (the pandas DataFrame the tables are made from).

Exit status 0 when a report was written (even if some runs failed: they are in it), 2 when the
source holds no runs (the message says what it found).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="multirun directory or W&B entity/project")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--group", default=None, help="W&B group (sweep) to report")
    parser.add_argument("--accuracy", choices=("test", "val"), default="test",
                        help="accuracy shown: test (default) or best validation")
    parser.add_argument("--command", default=None,
                        help="the command that produced the runs (shown in the report; default: "
                        "read from the sweep's multirun.yaml)")
    parser.add_argument("--title", default="Spectraformer grid")
    args = parser.parse_args(argv)

    from spectra.sweeps.report import build_report
    from spectra.sweeps.results import ReportSourceError

    source = Path(args.source)
    out = args.out
    if out is None:
        out = source / "report" if source.is_dir() else Path("report") / args.source.replace(
            "/", "_")
    try:
        report = build_report(args.source, out, group=args.group, accuracy=args.accuracy,
                              command=args.command, title=args.title)
    except ReportSourceError as exc:
        print(f"report.py: {exc}", file=sys.stderr)
        return 2
    counts = report.status_counts()
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{sum(counts.values())} runs ({statuses}) in {len(report.blocks)} block(s) → "
          f"{report.out_dir}")
    for path in (report.markdown, report.html, report.csv,
                 *[p for pngs in report.figures.values() for p in pngs]):
        print(f"  {path}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
