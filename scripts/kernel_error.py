"""Kernel and attention error of every sampler × feature map (Spectraformer, arXiv 2405.15310).

Metrics, settings and the closed-form iid variance: :mod:`spectra.analysis.kernel_error`; real
queries and keys from a checkpoint: :mod:`spectra.analysis.capture`. Writes into ``--out``
``kernel_error.csv`` (one row per study/group × sampler × feature map × m), log-scale PNG plots
and ``summary.md`` (command, machine, parameters, a table of medians, skipped combinations).

Usage::

    python scripts/kernel_error.py                     # full synthetic study → docs/results/…
    python scripts/kernel_error.py --quick --out /tmp/kernel_error   # CI smoke (< 2 min)
    python scripts/kernel_error.py --checkpoint path/to.ckpt --task lra_listops
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from spectra.analysis import capture
from spectra.analysis.kernel_error import SETTINGS, run_study, synthetic_workload
from spectra.analysis.machine import describe, machine_info
from spectra.registry import FEATURE_MAPS, SAMPLERS, Registry

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "kernel_error"
CSV_NAME = "kernel_error.csv"
SUMMARY_NAME = "summary.md"
METRICS = {"kernel_rel_mse": "kernel relative MSE", "attn_rel_err": "attention relative error"}
LINE_SAMPLERS = {"orthogonal": "-", "gaussian": "--"}  # compared in the line plots


# -- plots -----------------------------------------------------------------------------------------
def _figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _positive(values: pd.Series) -> pd.Series:
    """Values for a log axis: non-positive or infinite → NaN (a gap in the line)."""
    return values.where((values > 0) & values.map(math.isfinite))


def _line_samplers(samplers: Sequence[str]) -> dict[str, str]:
    """Sampler → line style: orthogonal solid, gaussian dashed, else the first one solid."""
    return {s: st for s, st in LINE_SAMPLERS.items() if s in samplers} or {samplers[0]: "-"}


def _lines(ax, rows: pd.DataFrame, x: str, metric: str, samplers: dict[str, str], maps) -> None:
    """One line per (sampler, feature map) of ``metric`` median vs column ``x``; IQR band on
    solid lines; log y axis."""
    colors = {f: f"C{i % 10}" for i, f in enumerate(maps)}
    for (sampler, fmap), g in rows.groupby(["sampler", "feature_map"]):
        if sampler not in samplers or fmap not in colors:
            continue
        g = g.sort_values(x)
        solid = samplers[sampler] == "-"
        ax.plot(g[x], _positive(g[f"{metric}_median"]), samplers[sampler], color=colors[fmap],
                marker="o", markersize=3, label=fmap if solid else None)  # fmt: skip
        if solid:
            lo, hi = _positive(g[f"{metric}_q25"]), _positive(g[f"{metric}_q75"])
            ax.fill_between(g[x], lo, hi, color=colors[fmap], alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(METRICS[metric])
    ax.grid(True, which="both", alpha=0.3)


def _grid_of_lines(rows: pd.DataFrame, path: Path, column: str, x: str, args) -> Path:
    """Rows: metrics; columns: the values of ``column``; x axis ``x``."""
    values = sorted(rows[column].unique(), key=str)
    fig, axes = _figure(len(METRICS), len(values))
    samplers = _line_samplers(args.samplers)
    for col, value in enumerate(values):
        for i, metric in enumerate(METRICS):
            ax = axes[i][col]
            _lines(ax, rows[rows[column] == value], x, metric, samplers, args.feature_maps)
            if x == "m":
                ax.set_xscale("log", base=2)
            ax.set_title(f"{column} = {value}", fontsize=9)
    axes[0][0].legend(
        fontsize=7,
        ncol=2,
        title=" / ".join(f"{s} {'solid' if st == '-' else 'dashed'}" for s, st in samplers.items()),
    )
    return _save(fig, path)


def _sampler_grid(rows: pd.DataFrame, path: Path, title: str) -> Path:
    """Heat maps of log10 median error, samplers × feature maps."""
    samplers, maps = rows["sampler"].unique(), rows["feature_map"].unique()
    fig, axes = _figure(1, len(METRICS), 0.9 * len(maps) + 2.5, 0.45 * len(samplers) + 1.6)
    for ax, metric in zip(axes[0], METRICS):
        grid = rows.pivot(index="sampler", columns="feature_map", values=f"{metric}_median")
        grid = _positive(grid.stack()).unstack().reindex(index=samplers, columns=maps)
        image = ax.imshow(grid.map(math.log10).to_numpy(dtype=float), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(maps)), maps, rotation=45, ha="right")
        ax.set_yticks(range(len(samplers)), samplers)
        ax.set_title(f"log10 median {METRICS[metric]}\n{title}", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def _variance_vs_scale(rows: pd.DataFrame, path: Path, args) -> Path:
    """Closed-form iid relMSE (lines) and the gaussian sampler's empirical mean (circles)."""
    fig, axes = _figure(1, len(args.settings))
    for ax, setting in zip(axes[0], args.settings):
        sel = rows[(rows["setting"] == setting) & (rows["sampler"] == "gaussian")]
        for i, (fmap, g) in enumerate(sel.groupby("feature_map", sort=False)):
            g = g.sort_values("scale")
            ax.plot(g["scale"], _positive(g["kernel_rel_mse_iid_theory"]), "-", color=f"C{i}",
                    label=fmap)  # fmt: skip
            ax.plot(g["scale"], _positive(g["kernel_rel_mse_mean"]), "o", color=f"C{i}",
                    markersize=3, markerfacecolor="none")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("scale")
        ax.set_ylabel("kernel relative MSE")
        ax.set_title(f"{setting}: iid closed form (lines), gaussian mean (circles)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    return _save(fig, path)


def write_plots(rows: pd.DataFrame, out: Path, args: argparse.Namespace) -> list[Path]:
    """Error vs m (smallest and largest scale), error vs scale and the sampler grid (reference m,
    largest scale) per setting, the variance comparison, and error vs m per captured layer."""
    paths = []
    syn = rows[rows["study"] == "synthetic"]
    m_ref = reference_m(args.ms)
    for setting, g in syn.groupby("setting", sort=False):
        ends = g[g["scale"].isin([min(args.scales), max(args.scales)])]
        paths.append(_grid_of_lines(ends, out / f"error_vs_m_{setting}.png", "scale", "m", args))
        at_m = g[g["m"] == m_ref]
        paths.append(
            _grid_of_lines(at_m, out / f"error_vs_scale_{setting}.png", "m", "scale", args)
        )
        top = at_m[at_m["scale"] == max(args.scales)]
        title = f"{setting}, s={max(args.scales):g}, m={m_ref}"
        paths.append(_sampler_grid(top, out / f"sampler_grid_{setting}.png", title))
    if len(syn):
        paths.append(_variance_vs_scale(syn, out / "variance_vs_scale.png", args))
    real = rows[rows["study"] == "real"]
    if len(real):
        paths.append(_grid_of_lines(real, out / "real_error_vs_m.png", "layer", "m", args))
    return paths


# -- summary ---------------------------------------------------------------------------------------
def reference_m(ms: Sequence[int]) -> int:
    """m of single-m views: 128 (the paper's LRA setting) if studied, else the largest."""
    return 128 if 128 in ms else max(ms)


def write_summary(
    path: Path, rows: pd.DataFrame, args: argparse.Namespace, plots: list[Path], **facts: str
) -> None:
    """Command, machine, parameters, median kernel relMSE at the reference m per group ×
    feature map and sampler, the files, and the skipped combinations."""
    table = rows[rows["m"] == reference_m(args.ms)].pivot_table(
        index=["group", "sampler"], columns="feature_map", values="kernel_rel_mse_median",
        aggfunc="first", sort=False,
    )  # fmt: skip
    params = {k: v for k, v in vars(args).items() if k not in ("out", "quiet")}
    lines = [
        "# Kernel approximation quality: samplers × feature maps",
        "",
        *[f"- {key}: {value}" for key, value in facts.items()],
        *[f"- {key}: {value}" for key, value in params.items()],
        "",
        f"Median kernel relative MSE, m = {reference_m(args.ms)} (definitions: "
        "`spectra/analysis/kernel_error.py`; every statistic is in the CSV):",
        "",
        "```",
        table.to_string(float_format=lambda v: f"{v:.3g}"),
        "```",
        "",
        "Files: " + ", ".join(f"`{p.name}`" for p in [path.with_name(CSV_NAME), *plots]),
    ]
    path.write_text("\n".join(lines) + "\n")


# -- command line ----------------------------------------------------------------------------------
def _names(registry: Registry, chosen: Sequence[str] | None, what: str) -> list[str]:
    """Default: the built-in components (plugins excluded, so the study is reproducible);
    ``all`` adds plugins; named ones must be registered and distinct."""
    if chosen is None:
        return [n for n in registry.names() if registry.entry(n).provider == "spectra"]
    if list(chosen) == ["all"]:
        return registry.names()
    for name in chosen:
        registry.get(name)  # UnknownComponentError lists the registered names
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--{what} lists a name twice: {list(chosen)}")
    return list(chosen)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--quick", action="store_true", help="small smoke run: fewer m, scales, trials")
    p.add_argument("--samplers", nargs="+", help="sampler names (default: built-in; 'all')")
    p.add_argument("--feature-maps", nargs="+", help="feature maps (default: built-in; 'all')")
    p.add_argument("--ms", nargs="+", type=int, help="numbers of features m")
    p.add_argument("--scales", nargs="+", type=float, help="input norm scales s")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--trials", type=int, help="draws of W per cell")
    p.add_argument("--length", type=int, help="tokens Lx = Ly")
    p.add_argument("--dim", type=int, default=64, help="head dimension d (synthetic)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the W draws")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the inputs")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic study")
    p.add_argument("--checkpoint", type=Path, help="train.py checkpoint: study its q and k too")
    p.add_argument("--task", help="task of the real batches (must be the checkpoint's task)")
    p.add_argument("--data-dir", help="override the checkpoint's task.data_dir")
    p.add_argument("--sequences", type=int, help="validation sequences (real)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    defaults = {
        "ms": [16, 64] if args.quick else [16, 32, 64, 128, 256],
        "scales": [0.5, 1.5, 2.5] if args.quick else [0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        "trials": 4 if args.quick else 16,
        "length": 64 if args.quick else 128,
        "sequences": 2 if args.quick else 4,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.samplers = _names(SAMPLERS, args.samplers, "samplers")
    args.feature_maps = _names(FEATURE_MAPS, args.feature_maps, "feature-maps")
    for key in ("trials", "length", "dim", "sequences", "threads"):
        if getattr(args, key) <= 0:
            raise ValueError(f"--{key} must be a positive integer, got {getattr(args, key)}")
    if min(args.ms) <= 0:
        raise ValueError(f"--ms must be positive integers, got {args.ms}")
    if min(args.scales) <= 0:
        raise ValueError(f"--scales must be positive, got {args.scales}")
    args.ms, args.scales = sorted(set(args.ms)), sorted(set(args.scales))
    if args.no_synthetic and args.checkpoint is None:
        raise ValueError("--no-synthetic needs --checkpoint (otherwise there is nothing to do)")
    return args


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the study; writes the CSV, the plots and the summary; returns the CSV rows."""
    start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    study = dict(seed=args.seed, log=log)
    works = []
    if not args.no_synthetic:
        works.append(synthetic_workload(args.settings, args.scales, dim=args.dim,
                                        length=args.length, seed=args.data_seed))  # fmt: skip
    if args.checkpoint is not None:
        model, task_cfg = capture.load_checkpoint(args.checkpoint, args.task)
        batch = capture.real_batch(task_cfg, sequences=args.sequences, min_length=args.length,
                                   data_dir=args.data_dir, seed=args.data_seed)  # fmt: skip
        works.append(capture.real_workload(model, batch, task=task_cfg["name"],
                                           length=args.length, seed=args.data_seed))  # fmt: skip
    results = [run_study(w, args.samplers, args.feature_maps, args.ms, args.trials, **study)
               for w in works]  # fmt: skip
    rows = pd.concat([r for r, _ in results], ignore_index=True)
    rows.to_csv(args.out / CSV_NAME, index=False, float_format="%.6g")
    plots = write_plots(rows, args.out, args)
    given = list(sys.argv[1:] if argv is None else argv)
    write_summary(
        args.out / SUMMARY_NAME,
        rows,
        args,
        plots,
        command=f"`{shlex.join(['python', 'scripts/kernel_error.py', *given])}`",
        machine=describe(machine_info(cuda=False)),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        wall_time=f"{time.perf_counter() - start:.0f} s",
        skipped="; ".join(s for _, skipped in results for s in skipped) or "none",
    )
    log(f"wrote {args.out / CSV_NAME}, {len(plots)} plot(s), {args.out / SUMMARY_NAME}")
    return rows


if __name__ == "__main__":
    main()
