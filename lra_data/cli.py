"""Command line: ``python -m lra_data {prepare,stats,fixture} TASK ...``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import LRADataError, MissingDataError
from .registry import TASKS, dataset_stats, prepare, resolve_data_dir, write_fixture


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _fmt_stats(task: str, stats: dict[str, dict[str, Any]]) -> str:
    spec = TASKS[task]
    lines = [f"task {task}: {spec.description}"]
    for split, st in stats.items():
        counts = st["label_counts"]
        total = max(st["rows"], 1)
        labels = ", ".join(f"{k}: {c:,} ({100 * c / total:.1f}%)" for k, c in enumerate(counts))
        lines.append(f"[{split}] rows {st['rows']:,}  source {st['source']}")
        if "source_rows" in st:
            lines.append(f"    source file ({st['source_split']}): {st['source_rows']:,} rows")
        lines.append(f"    labels  {labels}")
        for key, name in (("lengths", "length"), ("lengths2", "length2")):
            if st.get(key):
                ls = st[key]
                pct = "  ".join(f"{p} {ls[p]:.0f}" for p in ("p0", "p5", "p25", "p50", "p75",
                                                               "p95", "p100"))
                lines.append(f"    {name}  {pct}  mean {ls['mean']:.1f}")
        lines.append(f"    truncated at {st['max_length']}: {st['truncated']}  "
                     f"skipped rows: {st['skipped_rows']}")
        extra = {k: v for k, v in st.items() if k not in {
            "task", "split", "rows", "label_counts", "max_length", "truncated", "skipped_rows",
            "source", "lengths", "lengths2", "source_rows", "source_split"}}
        if extra:
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lra_data",
                                     description="LRA text-task data (ListOps, IMDB, AAN).")
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = sorted(TASKS)

    p = sub.add_parser("prepare", help="write a task's files under --out")
    p.add_argument("task", choices=tasks)
    p.add_argument("--out", required=True, help="data directory to write (e.g. data/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", default=None,
                   help="lra_text/imdb_retrieval: a directory with {train,test}.jsonl.gz or "
                        "aclImdb, or 'hf'; lra_retrieval/lra_listops: the official "
                        "lra_release.gz archive or an extracted directory")
    p.add_argument("--workers", type=int, default=None, help="lra_listops: processes")
    p.add_argument("--force", action="store_true", help="lra_listops: regenerate")
    p.add_argument("--link", action="store_true", help="lra_text: symlink instead of copy")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="other task options, e.g. num_train=1000 (JSON values)")

    s = sub.add_parser("stats", help="counts, label balance, length percentiles")
    s.add_argument("task", choices=tasks)
    s.add_argument("--data-dir", default=None, help="default: $LRA_DATA_DIR, else ./data")
    s.add_argument("--max-length", type=int, default=None)
    s.add_argument("--skip-bad-rows", action="store_true")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--json", action="store_true", help="print JSON")

    f = sub.add_parser("fixture", help="write a tiny synthetic dataset (for tests)")
    f.add_argument("task", choices=tasks)
    f.add_argument("--out", required=True)
    f.add_argument("--rows", type=int, default=32)
    f.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            options = _parse_options(args.option)
            for name in ("source", "workers"):
                if getattr(args, name) is not None:
                    options[name] = getattr(args, name)
            for name in ("force", "link"):
                if getattr(args, name):
                    options[name] = True
            start = time.perf_counter()
            out = prepare(args.task, args.out, seed=args.seed, progress=True, **options)
            print(f"prepared {args.task} in {out} ({time.perf_counter() - start:.1f} s)")
        elif args.command == "stats":
            stats = dataset_stats(args.task, args.data_dir, max_length=args.max_length,
                                  skip_bad_rows=args.skip_bad_rows,
                                  **_parse_options(args.option))
            if args.json:
                print(json.dumps(stats, indent=2))
            else:
                print(f"data dir: {resolve_data_dir(args.data_dir)}")
                print(_fmt_stats(args.task, stats))
        else:
            out = write_fixture(args.task, args.out, rows_per_split=args.rows, seed=args.seed)
            print(f"wrote a {args.task} fixture in {out}")
    except (MissingDataError, LRADataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
