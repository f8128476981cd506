#!/usr/bin/env python
"""Training throughput of attention presets on the LRA paper protocol: steps/s, tokens/s and
peak memory of ``train.py`` runs stopped after a fixed wall-clock time (default: 2 minutes of
softmax vs FAVOR# on LRA Text).

Usage::

    python scripts/throughput.py                         # softmax vs favor_sharp, lra_text, 120 s
    python scripts/throughput.py --attentions softmax favor_sharp --task lra_text --seconds 120 \\
        --trainer gpu --precision bf16-mixed --synthetic-data 4096 \\
        --out "docs/results/gpu/<card>/throughput"
    python scripts/throughput.py --data-dir ../shared/data -- task.batch_size=16   # + overrides

Each attention preset (``conf/attention/<name>.yaml``) trains in a fresh subprocess of
``train.py experiment=lra_paper task=<task> attention=<name> trainer=<trainer>
trainer.precision=<precision>``: the paper protocol of docs/design.md §5 (Skyformer's LRA setup,
arXiv 2111.00035; FAVOR# is arXiv 2302.00787), training only — no validation
(``trainer.limit_val_batches=0``), no test (``test=false``), no checkpoints
(``trainer.enable_checkpointing=false callbacks.{model,periodic}_checkpoint=null``) — stopped
by Lightning's ``trainer.max_time`` after ``--seconds`` of training (setup and data loading are
not counted), CSV logger, run directory ``<out>/<name>``.
Everything after ``--`` is passed to every run as extra Hydra overrides (they come last, so
they win). The app's other callbacks stay on (NaN guard, throughput monitor, …): what is
measured is what a paper training run costs.

Measured per run (from Lightning's ``ThroughputMonitor``, via ``<run dir>/metrics.json``):

* ``steps``: optimizer steps done in the time limit (``global_step``);
* ``steps_per_s`` = 1 / ``perf/mean_step_time_s``: the mean training time per step (data
  loading, logging and callbacks included, validation not), the steps up to the first logged
  one (warm-up: lazy initialization, allocator growth) excluded; ``end_to_end_steps_per_s`` =
  ``global_step / wall_time_s`` counts process setup and data loading too;
* ``median_sampled_step_s``: median of ``1 / train/device/batches_per_sec`` as the CSV logger
  sampled it (every ``trainer.log_every_n_steps`` steps; each a mean over the monitor's window),
  a check against hiccups in the mean;
* ``tokens_per_s``: real (non-padding) tokens per second, warm-up excluded
  (``real_tokens_per_step``: their mean per step);
* ``peak_mem_mib``: on CUDA ``torch.cuda.max_memory_allocated`` since the start of fit (tensors
  only: no CUDA context, no cached-but-free blocks); on CPU the process's peak resident set
  size (``VmHWM``; includes the ~0.4 GiB of Python + torch, so CPU ratios understate);
* the device (``torch.cuda.get_device_name`` or the CPU model), torch version, precision, batch
  size and ``task.max_length``.

Outputs in ``--out``: ``throughput.csv`` (one row per attention), ``summary.md`` (command line,
machine, UTC date, a table and "<attention> vs softmax" ratios) and the run directories (with
``stdout.log`` / ``stderr.log``). A run that fails is recorded with its last error line and the
others still run; the script then exits with status 1.

``--synthetic-data N`` (for a machine without the IMDB copy) writes N synthetic reviews per split
(``lra_data.synthetic`` sentences, each review padded past ``task.max_length`` bytes) to
``<out>/data/imdb/{train,test}.jsonl.gz`` and trains on them: every batch is then padded to the
full ``max_length`` (real IMDB batches of 32 are padded to their longest review, 4000 bytes in
about two batches of three), so the step cost is that of the longest real batches; only lengths
matter for throughput. ``--data-dir DIR`` points at real data instead. Either way the run looks
only there (``task.search_dirs=[]``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from spectra.analysis.config import compose_train
from spectra.analysis.machine import describe
from spectra.training.config_store import group_options

REPO = Path(__file__).resolve().parents[1]
BASELINE = "softmax"
SYNTHETIC_TASKS = ("lra_text",)
MIN_SYNTHETIC_ROWS = 16
SETUP_ALLOWANCE_S = 600.0  # per-run timeout = seconds + this (imports, data loading, teardown)

SUMMARY_COLUMNS = ["attention", "status", "steps", "steps_per_s", "mean_step_s",
                   "median_sampled_step_s", "tokens_per_s", "peak_mem_mib", "batch_size",
                   "max_length", "precision"]
SUMMARY_FORMATS = ("", "", ",.0f", ".2f", ".4f", ".4f", ",.0f", ",.0f", ",.0f", ",.0f", "")
COLUMNS = [
    "attention",
    "status",
    "returncode",
    "steps",
    "steps_per_s",
    "mean_step_s",
    "median_sampled_step_s",
    "end_to_end_steps_per_s",
    "wall_time_s",
    "tokens_per_s",
    "real_tokens_per_step",
    "peak_mem_mib",
    "peak_mem_kind",
    "device",
    "torch",
    "precision",
    "batch_size",
    "max_length",
    "task",
    "trainer",
    "run_name",
    "params",
    "run_dir",
    "error",
]


# -- presets and arguments -------------------------------------------------------------------------
def _default_trainer() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def uses_cuda(trainer: str, overrides: list[str]) -> bool:
    """Whether the runs train on a GPU: the composed ``trainer.accelerator``."""
    return compose_train([f"trainer={trainer}", *overrides]).trainer.accelerator in ("gpu", "cuda")


def task_max_length(task: str, overrides: list[str]) -> int:
    """The composed ``task.max_length`` of the runs (overrides included)."""
    return int(compose_train([f"task={task}", *overrides]).task.max_length)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="throughput.py",
        description="Training throughput (steps/s, tokens/s, peak memory) of attention presets "
        "on the LRA paper protocol. Hydra overrides for every run go after `--`.",
    )
    parser.add_argument("--attentions", nargs="+", default=[BASELINE, "favor_sharp"],
                        metavar="NAME", help="conf/attention presets (default: softmax "
                        "favor_sharp)")
    parser.add_argument("--task", default="lra_text", help="conf/task preset (default: lra_text)")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="training wall-clock limit per run, trainer.max_time (default 120)")
    parser.add_argument("--trainer", default=None,
                        help="conf/trainer preset (default: gpu if CUDA is available, else cpu)")
    parser.add_argument("--precision", default=None,
                        help="trainer.precision (default: bf16-mixed on CUDA, else 32-true)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "throughput",
                        help="output directory (default: docs/results/throughput)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--synthetic-data", type=int, default=None, metavar="N",
                      help="train on N synthetic reviews per split (lra_text; written to "
                      "<out>/data)")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="task.data_dir: a directory with the task's data")
    parser.add_argument("--run-timeout", type=float, default=None, metavar="S",
                        help=f"kill a run after S seconds (default: --seconds + "
                        f"{SETUP_ALLOWANCE_S:.0f})")
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options, then the Hydra overrides after the first ``--``; checks every input."""
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    else:
        overrides = []
    parser = build_parser()
    args = parser.parse_args(argv)

    available = group_options("attention")
    for name in args.attentions:
        if name not in available:
            parser.error(f"unknown attention preset {name!r}; available (conf/attention/*.yaml): "
                         + ", ".join(available))
    duplicates = sorted({n for n in args.attentions if args.attentions.count(n) > 1})
    if duplicates:
        parser.error(f"attention preset(s) given twice: {', '.join(duplicates)}")
    tasks = group_options("task")
    if args.task not in tasks:
        parser.error(f"unknown task preset {args.task!r}; available (conf/task/*.yaml): "
                     + ", ".join(tasks))
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error(f"--seconds must be a positive number, got {args.seconds}")
    if args.trainer is None:
        args.trainer = _default_trainer()
    trainers = [t for t in group_options("trainer") if t != "default"]
    if args.trainer not in trainers:
        parser.error(f"unknown trainer preset {args.trainer!r}; available (conf/trainer/*.yaml): "
                     + ", ".join(trainers))
    try:
        args.cuda = uses_cuda(args.trainer, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        parser.error(f"the overrides after -- do not compose with train.py's config: {exc}")
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error(f"trainer={args.trainer} trains on a GPU, but torch.cuda.is_available() "
                         "is False here; use --trainer cpu")
    if args.precision is None:
        args.precision = "bf16-mixed" if args.cuda else "32-true"
    if args.synthetic_data is not None:
        if args.task not in SYNTHETIC_TASKS:
            parser.error(f"--synthetic-data supports {', '.join(SYNTHETIC_TASKS)}, not "
                         f"{args.task!r}; use --data-dir")
        if args.synthetic_data < MIN_SYNTHETIC_ROWS:
            parser.error(f"--synthetic-data needs at least {MIN_SYNTHETIC_ROWS} reviews, got "
                         f"{args.synthetic_data}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.run_timeout is None:
        args.run_timeout = args.seconds + SETUP_ALLOWANCE_S
    elif not math.isfinite(args.run_timeout) or args.run_timeout <= args.seconds:
        parser.error(f"--run-timeout must exceed --seconds ({args.seconds}), got "
                     f"{args.run_timeout}")
    args.out = args.out.expanduser().resolve()
    if args.data_dir is not None:
        args.data_dir = args.data_dir.expanduser().resolve()
    return args, overrides


# -- Hydra overrides ------------------------------------------------------------------------------
def hydra_value(value: str | Path) -> str:
    """``value`` as a Hydra override value: as is when plain, else single-quoted."""
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_overrides(args: argparse.Namespace, attention: str, run_dir: Path, data_dir: Path | None,
                  extra: list[str]) -> list[str]:
    """The ``train.py`` command-line overrides of one run."""
    overrides = [
        "experiment=lra_paper",
        f"task={args.task}",
        f"attention={attention}",
        f"trainer={args.trainer}",
        f"trainer.precision={hydra_value(args.precision)}",
        f"++trainer.max_time={{seconds:{args.seconds:g}}}",  # Lightning Timer(duration=dict)
        "trainer.limit_val_batches=0",  # no validation (and no sanity check)
        "test=false",
        "trainer.enable_checkpointing=false",
        "callbacks.model_checkpoint=null",
        "callbacks.periodic_checkpoint=null",
        "logger=csv",
        f"hydra.run.dir={hydra_value(run_dir)}",
    ]
    if data_dir is not None:
        overrides += [f"task.data_dir={hydra_value(data_dir)}", "task.search_dirs=[]"]
    return overrides + extra


# -- synthetic data -------------------------------------------------------------------------------
def synthetic_review(rng: random.Random, label: int, min_bytes: int, serial: int) -> str:
    """A synthetic review of at least ``min_bytes`` UTF-8 bytes (then a unique serial)."""
    from lra_data import synthetic

    parts: list[str] = []
    size = 0
    while size < min_bytes:
        part = synthetic.review(rng, label, sentences=4 + rng.randrange(5))
        parts.append(part)
        size += len(part.encode("utf-8")) + 1
    return " ".join(parts) + f" (review {serial})"


def write_synthetic_imdb(data_dir: Path, rows: int, min_bytes: int, seed: int = 0) -> Path:
    """``data_dir/imdb/{train,test}.jsonl.gz``, ``rows`` balanced reviews each, in the format the
    ``lra_text`` loader reads (``lra_data.task_text.write_jsonl_gz``)."""
    from lra_data.task_text import write_jsonl_gz

    rng = random.Random(seed)
    serial = 0
    for split in ("train", "test"):
        items = []
        for i in range(rows):
            label = i % 2
            items.append((synthetic_review(rng, label, min_bytes, serial), label))
            serial += 1
        rng.shuffle(items)
        write_jsonl_gz(data_dir / "imdb" / f"{split}.jsonl.gz", items)
    return data_dir


# -- machine --------------------------------------------------------------------------------------
def machine_info(cuda: bool) -> dict[str, Any]:
    """:func:`spectra.analysis.machine.machine_info`, probed in a subprocess (so this process,
    which launches the GPU runs, holds no CUDA context)."""
    cmd = [sys.executable, "-m", "spectra.analysis.machine", *(["--cuda"] if cuda else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"machine probe failed: {last_error_line(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one run --------------------------------------------------------------------------------------
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR"


def last_error_line(stderr: str) -> str:
    """The most telling line of a failed run's stderr: the last exception line (``XError: …``),
    else the last non-empty line (progress-bar redraws and Hydra's hint skipped)."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", stderr)]
    lines = [ln for ln in lines if ln and not ln.startswith(_HYDRA_HINT)]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else ""


def sampled_step_times(run_dir: Path) -> list[float]:
    """``1 / train/device/batches_per_sec`` of ``<run dir>/csv/metrics.csv`` (per logging step)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [1.0 / float(row["train/device/batches_per_sec"]) for row in csv.DictReader(fh)
                if row.get("train/device/batches_per_sec")]


def run_config(run_dir: Path) -> dict[str, Any]:
    """Batch size, max length and precision from the run's composed ``.hydra/config.yaml``."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    out: dict[str, Any] = {}
    for key, name in (("task.batch_size", "batch_size"), ("task.max_length", "max_length"),
                      ("trainer.precision", "precision")):
        try:
            out[name] = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # an interpolation that needs Hydra's resolvers
            pass
    return out


def collect(run_dir: Path) -> dict[str, Any]:
    """The measurements of a finished run (see the module docstring)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row: dict[str, Any] = {
        "steps": int(metrics.get("global_step", 0)),
        "wall_time_s": metrics.get("wall_time_s"),
        "tokens_per_s": metrics.get("perf/mean_tokens_per_s"),
        "peak_mem_mib": metrics.get("perf/peak_mem_mb"),
        "run_name": metrics.get("run_name", ""),
        "params": metrics.get("model/params_total"),
    }
    mean_step = metrics.get("perf/mean_step_time_s")
    if mean_step:
        row["mean_step_s"] = mean_step
        row["steps_per_s"] = 1.0 / mean_step
    if row["steps"] and row["wall_time_s"]:
        row["end_to_end_steps_per_s"] = row["steps"] / row["wall_time_s"]
    samples = sampled_step_times(run_dir)
    if samples:
        row["median_sampled_step_s"] = statistics.median(samples)
    row.update(run_config(run_dir))
    if mean_step and row["tokens_per_s"]:
        row["real_tokens_per_step"] = row["tokens_per_s"] * mean_step
    return row


def prepare_run_dir(run_dir: Path) -> None:
    """An empty run directory; a previous run of this script there (``.hydra``) is replaced."""
    if run_dir.exists():
        if (run_dir / ".hydra").is_dir() or (run_dir / "stderr.log").is_file():
            shutil.rmtree(run_dir)
        elif any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} exists and is not a run directory of this script; "
                                  "choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)


def run_one(args: argparse.Namespace, attention: str, data_dir: Path | None,
            extra: list[str]) -> dict[str, Any]:
    """Train one attention preset in a fresh ``train.py`` subprocess; its CSV row."""
    run_dir = args.out / attention
    prepare_run_dir(run_dir)
    cmd = [sys.executable, "train.py", *run_overrides(args, attention, run_dir, data_dir, extra)]
    (run_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    row: dict[str, Any] = {"attention": attention, "run_dir": str(run_dir)}
    with open(run_dir / "stdout.log", "w") as out, open(run_dir / "stderr.log", "w") as err:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=err,
                                  timeout=args.run_timeout, check=False)
            row["returncode"] = proc.returncode
        except subprocess.TimeoutExpired:
            row["returncode"] = -9
            row["error"] = f"killed after --run-timeout {args.run_timeout:g} s"
    if row["returncode"] == 0 and (run_dir / "metrics.json").is_file():
        row["status"] = "ok"
        row.update(collect(run_dir))
    else:
        row["status"] = "failed"
        if not row.get("error"):
            stderr = (run_dir / "stderr.log").read_text(errors="replace")
            row["error"] = last_error_line(stderr) or (
                f"exit status {row['returncode']}" if row["returncode"] else "no metrics.json")
    return row


# -- outputs --------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:,.{digits}f}"


def ratios(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Steps/s and peak-memory ratios against softmax (index ``<attention> vs softmax``), for
    every other ok run."""
    ok = pd.DataFrame(rows).query("status == 'ok'").set_index("attention")
    if BASELINE not in ok.index:
        return pd.DataFrame(columns=["steps/s", "peak memory"])
    ok = ok.reindex(columns=["steps_per_s", "peak_mem_mib"]).astype(float)
    out = (ok / ok.loc[BASELINE]).drop(index=BASELINE)
    out.index = [f"{name} vs {BASELINE}" for name in out.index]
    return out.set_axis(["steps/s", "peak memory"], axis=1)


def summary_markdown(args: argparse.Namespace, argv: list[str], extra: list[str],
                     info: dict[str, Any], rows: list[dict[str, Any]], data_note: str,
                     date: str) -> str:
    command = shlex.join(["python", "scripts/throughput.py", *argv])
    lines = [
        f"# Training throughput: {' vs '.join(args.attentions)} on {args.task}",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {date}",
        f"- machine: {describe(info)}",
        f"- protocol: `train.py experiment=lra_paper task={args.task} trainer={args.trainer} "
        f"trainer.precision={args.precision}` (docs/design.md §5; Skyformer arXiv 2111.00035), "
        f"training only (no validation, test or checkpoints), stopped after {args.seconds:g} s "
        "of training (`trainer.max_time`)",
        f"- extra overrides: {'`' + ' '.join(extra) + '`' if extra else 'none'}",
        f"- data: {data_note}",
        "",
    ]
    table = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    table["status"] = [r["status"] if r["status"] == "ok" else f"FAILED: {r.get('error', '')}"
                       for r in rows]
    lines.append(table.astype(object).where(table.notna(), None).to_markdown(
        index=False, floatfmt=SUMMARY_FORMATS, missingval="–"))
    pairs = ratios(rows)
    if len(pairs):
        lines += ["", pairs.to_markdown(floatfmt=".2f", headers=["comparison", *pairs.columns])]
    mem_kind = ("CUDA `max_memory_allocated` since the start of fit (tensors only)" if args.cuda
                else "the process's peak resident set size (VmHWM; Python + torch included)")
    lines += [
        "",
        "steps/s = 1 / mean training time per step (Lightning's ThroughputMonitor; data "
        "loading, logging and callbacks included, validation not; warm-up up to the first "
        "logged step excluded); the sampled median is over the windowed rates the CSV logger "
        "recorded. tokens/s counts real "
        f"(non-padding) tokens. Peak memory: {mem_kind}. Per-run logs, metrics.json and the "
        "exact command are in the run directories next to this file.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    data_dir: Path | None = args.data_dir
    if args.synthetic_data is not None:
        data_dir = args.out / "data"
        length = task_max_length(args.task, extra)
        write_synthetic_imdb(data_dir, args.synthetic_data, length)
        data_note = (f"SYNTHETIC reviews (`--synthetic-data {args.synthetic_data}`: lra_data."
                     f"synthetic sentences, each review ≥ {length} bytes, in {data_dir}). "
                     "Throughput depends only on the lengths: every batch is padded to the full "
                     "max length, as the longest real IMDB batches are; accuracy is meaningless")
    elif data_dir is not None:
        data_note = f"{data_dir} (`task.data_dir`, nothing else searched)"
    else:
        data_note = "the task's default search (task.data_dir, data/, ../shared/data)"

    info = machine_info(args.cuda)
    print(f"device: {info['device']}; torch {info['torch']}; trainer={args.trainer} "
          f"precision={args.precision}; {args.seconds:g} s per run", flush=True)
    rows: list[dict[str, Any]] = []
    for i, attention in enumerate(args.attentions, 1):
        print(f"[{i}/{len(args.attentions)}] {attention}: training for {args.seconds:g} s …",
              flush=True)
        row = run_one(args, attention, data_dir, extra)
        row.update({"device": info["device"], "torch": info["torch"],
                    "task": args.task, "trainer": args.trainer,
                    "peak_mem_kind": "cuda_max_allocated" if args.cuda else "cpu_peak_rss"})
        row.setdefault("precision", args.precision)
        rows.append(row)
        if row["status"] == "ok":
            print(f"    {row['steps']} steps, {_fmt(row.get('steps_per_s'))} steps/s, "
                  f"peak {_fmt(row.get('peak_mem_mib'), 0)} MiB", flush=True)
        else:
            print(f"    FAILED (exit {row['returncode']}): {row.get('error', '')}", flush=True)

    pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(args.out / "throughput.csv", index=False)
    (args.out / "summary.md").write_text(
        summary_markdown(args, argv, extra, info, rows, data_note, date))
    for name, (speed, memory) in ratios(rows).iterrows():
        print(f"{name}: steps/s {_fmt(speed)}×, peak memory {_fmt(memory)}×")
    print(f"wrote {args.out / 'throughput.csv'} and {args.out / 'summary.md'}")
    failed = [r["attention"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
