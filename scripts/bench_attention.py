#!/usr/bin/env python
"""Speed and peak memory of attention: forward and forward + backward vs sequence length L, for
every registered attention at m = 256 (``random_features`` once per ``--feature-maps`` preset,
orthogonal W; landmark methods with m landmarks; linformer with projected length k = m and
max_length = L; reformer, bigbird, informer and kernelized with their defaults), performer-pytorch
``FastAttention`` and nystrom-attention's ``NystromAttention``, in one run.

Usage::

    python scripts/bench_attention.py              # L = 512 … 32768 into docs/results/speed
    python scripts/bench_attention.py --quick --out /tmp/speed   # tiny smoke run (CI)
    python scripts/bench_attention.py --lengths 16384 --methods softmax random_features:posrf
    python scripts/bench_attention.py --device cuda --dtype bfloat16 --out docs/results/gpu/speed

Shape B = 1, H = 8, d = 64 (``--batch``, ``--heads``, ``--head-dim``). Each (method, L) runs in
its own fresh subprocess. Times are medians over ``--reps`` timed repetitions (after one
warm-up) of ``attn(q, k, v)`` under ``torch.no_grad()`` (forward) and of
``attn(q, k, v).sum().backward()`` (forward + backward). The registered ``softmax`` attention is
``F.scaled_dot_product_attention`` (SDPA), the baseline of the "vs SDPA" ratios.

``--dtype`` sets the dtype of q, k, v (float32 by default; on CUDA, bfloat16 lets SDPA use its
FlashAttention kernel). Spectra's random-feature maps still compute in float32 internally and
cast the output back; nystrom-attention runs under autocast to that dtype (its module keeps
float32 weights and float32 internal constants); performer-pytorch casts its projection to the
input's dtype itself. Default lengths: 512 …
32768 on CPU, 512 … 65536 on CUDA.

nystrom-attention's ``NystromAttention(dim=H·d, heads=H, dim_head=d, num_landmarks=m)`` takes the
full (B, L, H·d) input and includes its own q/k/v and output projections and the depthwise
residual convolution (its defaults); its row therefore costs slightly more than the attention
kernel alone (the projections are O(L·(H·d)²)).

Peak memory, per subprocess: on CPU the process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) minus the resident size just before the first full-size
call (inputs, modules and libraries loaded, one tiny L = 16 call done so that one-off lazy
initialization is not counted): the extra memory at the worst point of forward + backward,
gradients of the inputs included. On CUDA ``torch.cuda.max_memory_allocated()`` minus the
allocated memory before the first call. The fitted exponent is the least-squares slope of
log(peak) vs log(L) over the lengths ≥ ``--fit-from``.

Budget: before a (method, L) runs, its wall time is estimated from the same method's largest
measured length as (1 + reps)·(t_fwd+bwd + t_fwd)·(L / L_prev)²; above ``--budget-s`` the row
is recorded as "skipped: over budget" (never silently dropped).

Ratios: "vs SDPA" = SDPA time / method time (> 1: faster than SDPA), "vs performer" likewise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.analysis.machine import describe, machine_info

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "speed"
BASELINE = "softmax"
PERFORMER = "performer-pytorch"
NYSTROM = "nystrom-attention"
EXTERNAL = (PERFORMER, NYSTROM)
RF = "random_features"
SIZE_KEYS = ("num_features", "num_landmarks", "proj_length")  # a preset's m, whichever it has
LABELS = {"fwd_s": "fwd (s)", "fwd_bwd_s": "fwd+bwd (s)", "peak_mib": "peak mem (MiB)",
          "fwd_bwd_vs_sdpa": "fwd+bwd vs SDPA", "fwd_bwd_vs_performer": "fwd+bwd vs performer"}


# -- worker (one method, one length, fresh process) ---------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(method: str, cfg: dict):
    """(callable on (q, k, v), input adapter) for a method name ``name`` or ``name:feature_map``."""
    import torch

    d, m, heads = cfg["head_dim"], cfg["num_features"], cfg["heads"]
    if method == PERFORMER:
        from performer_pytorch import FastAttention

        return FastAttention(dim_heads=d, nb_features=m), None
    if method == NYSTROM:
        from nystrom_attention import NystromAttention

        module = NystromAttention(dim=heads * d, heads=heads, dim_head=d, num_landmarks=m)

        def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # q is the (B, L, H·d) input here; its internal float32 constants (pinv
            # initialization) need autocast for a lower-precision input
            low = q.dtype != torch.float32
            with torch.autocast(q.device.type, dtype=q.dtype, enabled=low):
                return module(q)

        return call, module
    from spectra.registry import ATTENTIONS  # the worker stays light: no Hydra, no Lightning

    spec = cfg["attention"]
    return ATTENTIONS.build(spec["name"], layer_index=0, **spec["options"]), None


def attention_spec_of(method: str, cfg: dict) -> dict[str, Any] | None:
    """``{"name", "options"}`` that ``train.py`` builds layer 0 from (None for the external
    methods), composed here in the parent so each worker only calls ``ATTENTIONS.build``."""
    if method in EXTERNAL:
        return None
    from spectra.training.attention import attention_spec

    spec = attention_spec(attention_config(method, cfg))
    return {"name": spec.name, "options": spec.options}


def attention_config(method: str, cfg: dict) -> DictConfig:
    """The ``attention`` node ``train.py`` would build for ``method`` (``name`` or
    ``random_features:<feature map>``): preset ``conf/attention/<name>.yaml`` composed with
    head_dim = d, task.max_length = L and seed 0, and m on the preset's own size key."""
    from spectra.analysis.config import compose_train

    name, _, feature_map = method.partition(":")
    overrides = [f"attention={name}", f"model.head_dim={cfg['head_dim']}",
                 f"task.max_length={cfg['length']}", "seed=0"]  # fmt: skip
    if feature_map:
        overrides.append(f"attention/feature_map={feature_map}")
    node = compose_train(overrides).attention
    for key in SIZE_KEYS:
        if key in node:
            node[key] = cfg["num_features"]
    return node


def worker(cfg: dict) -> dict:
    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    torch.manual_seed(0)
    b, h, n, d = cfg["batch"], cfg["heads"], cfg["length"], cfg["head_dim"]
    attn, module = _build(cfg["method"], cfg)
    module = module if module is not None else attn
    if isinstance(module, torch.nn.Module):
        module.to(device)
    whole = cfg["method"] == NYSTROM  # takes one (B, L, H·d) input

    def inputs(length: int) -> tuple[torch.Tensor, ...]:
        if whole:
            x = torch.randn((b, length, h * d), device=device, dtype=dtype, requires_grad=True)
            return (x, x, x)
        shape = (b, h, length, d)
        return tuple(
            torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
        )

    q, k, v = inputs(n)
    cuda = device.type == "cuda"

    def timed(backward: bool) -> float:
        for t in (q, k, v):
            t.grad = None
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        if backward:
            attn(q, k, v).sum().backward()
        else:
            with torch.no_grad():
                attn(q, k, v)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    tiny = inputs(16)
    attn(*tiny).sum().backward()
    del tiny
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    timed(True)  # warm-up
    fwd_bwd = [timed(True) for _ in range(cfg["reps"])]
    timed(False)
    fwd = [timed(False) for _ in range(cfg["reps"])]
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "fwd_bwd_s": statistics.median(fwd_bwd),
        "fwd_s": statistics.median(fwd),
        "fwd_bwd_times": fwd_bwd,
        "fwd_times": fwd,
        "peak_bytes": max(peak, 0),
    }


# -- driver -------------------------------------------------------------------------------------
def run_one(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_methods(feature_maps: list[str]) -> list[str]:
    """Every registered attention (random_features once per feature map), then the externals."""
    from spectra.registry import ATTENTIONS

    methods = []
    for name in ATTENTIONS.names():
        methods += [f"{name}:{fm}" for fm in feature_maps] if name == RF else [name]
    methods.remove(BASELINE)
    return [BASELINE, *methods, *EXTERNAL]


def fit_exponent(lengths: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) vs log(L); None with fewer than 2 positive points."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(lengths, values, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else None


def _ratio(base: dict | None, res: dict, key: str) -> float | None:
    if not base or key not in base or key not in res:
        return None
    return base[key] / res[key]


def results_table(results: dict, methods: list[str], lengths: list[int]) -> pd.DataFrame:
    """One row per (L, method): times, peak MiB, fwd+bwd ratios vs SDPA and performer-pytorch
    (baseline time / method time), and the status (``ok``, the error, or why it was skipped)."""
    import pandas as pd  # here, not at the top: each measurement's worker stays light

    rows = []
    for n in lengths:
        for m in methods:
            r = results[m, n]
            rows.append({
                "method": m, "L": n, "fwd_s": r.get("fwd_s"), "fwd_bwd_s": r.get("fwd_bwd_s"),
                "peak_mib": r["peak_bytes"] / 2**20 if "peak_bytes" in r else None,
                "fwd_bwd_vs_sdpa": _ratio(results.get((BASELINE, n)), r, "fwd_bwd_s"),
                "fwd_bwd_vs_performer": _ratio(results.get((PERFORMER, n)), r, "fwd_bwd_s"),
                "status": "ok" if "fwd_bwd_s" in r else (
                    f"error: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"),
            })
    return pd.DataFrame(rows)


def write_outputs(
    out: Path, results: dict, methods: list[str], lengths: list[int], meta: dict, fit_from: int
) -> str:
    """bench.csv, speed_fwd_bwd.png, speed_fwd.png, memory.png, summary.md; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(results, methods, lengths)
    table.to_csv(out / "bench.csv", index=False, float_format="%.6g")

    exponents = {}
    for m in methods:
        ok = [n for n in lengths if n >= fit_from and "peak_bytes" in results[m, n]]
        exponents[m] = fit_exponent(ok, [results[m, n]["peak_bytes"] for n in ok])

    _plots(out, results, methods, lengths)

    lines = [
        "# Attention speed and memory",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; {meta['threads']} threads; "
        f"load average {meta['load_before']} before, {meta['load_after']} after; "
        f"started {meta['started']}, {meta['wall_min']:.1f} min wall.",
        "",
        f"B = {meta['batch']}, H = {meta['heads']}, d = {meta['head_dim']}, m = "
        f"{meta['num_features']} (features or landmarks), q/k/v in {meta.get('dtype', 'float32')}, "
        f"medians of {meta['reps']} reps after "
        "one warm-up, each (method, L) in a fresh process. Ratios: baseline time / method time "
        f"(> 1: faster). Peak memory: {_peak_what(meta.get('device', 'cpu'))} "
        "(forward + backward, input gradients included). nystrom-attention includes its own "
        "q/k/v/output projections and residual convolution.",
        "",
        "![forward + backward time](speed_fwd_bwd.png) ![forward time](speed_fwd.png) "
        "![peak memory](memory.png)",
        "",
    ]
    import pandas as pd

    shown = table.astype(object).where(table.notna(), None).rename(columns=LABELS)
    lines += [shown.to_markdown(index=False, floatfmt=".3f", missingval="–"), ""]
    lines.append(f"Fitted peak-memory exponent (slope of log peak vs log L, L ≥ {fit_from}):")
    exponent = pd.DataFrame({"method": methods, "exponent": [exponents[m] for m in methods]})
    lines += ["", exponent.to_markdown(index=False, floatfmt=".2f", missingval="–")]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _peak_what(device: str) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the first call"
    return "peak RSS above the RSS before the first full-size call"


def _plots(out: Path, results: dict, methods: list[str], lengths: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, fname, ylabel, scale in (
        ("fwd_bwd_s", "speed_fwd_bwd.png", "forward + backward time (s)", 1.0),
        ("fwd_s", "speed_fwd.png", "forward time (s)", 1.0),
        ("peak_bytes", "memory.png", "peak memory above baseline (MiB)", 2.0**-20),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        for m in methods:
            ok = [n for n in lengths if key in results[m, n] and results[m, n][key] > 0]
            if ok:
                ax.plot(ok, [results[m, n][key] * scale for n in ok], marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths L")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--quick", action="store_true", help="L = 256 512, 1 rep (smoke test)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="registered names (random_features:<feature map>), performer-pytorch, "
        "nystrom-attention; default: all",
    )
    p.add_argument(
        "--feature-maps",
        nargs="+",
        default=["posrf", "oprf", "saderf"],
        help="random_features presets (orthogonal W)",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--num-features", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of q, k, v (bfloat16 on CUDA: SDPA uses FlashAttention)",
    )
    p.add_argument("--budget-s", type=float, default=90.0, help="per-(method, L) wall budget")
    p.add_argument(
        "--fit-from",
        type=int,
        default=None,
        help="smallest L in the exponent fit (default 4096, or all L if fewer than 2 are ≥ 4096)",
    )
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    full = [512, 1024, 2048, 4096, 8192, 16384, 32768] + ([65536] if device == "cuda" else [])
    lengths = sorted(args.lengths or ([256, 512] if args.quick else full))
    reps = args.reps or (1 if args.quick else 3)
    if reps < 1 or any(n < 1 for n in lengths):
        p.error("--reps and --lengths must be positive")
    methods = args.methods or default_methods(args.feature_maps)
    fit_from = args.fit_from or (4096 if sum(n >= 4096 for n in lengths) >= 2 else lengths[0])
    threads = args.threads or torch.get_num_threads()
    where = describe(machine_info(cuda=device == "cuda"))
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()
    print(
        f"# {device}: {where}; {threads} threads, load {load_before}",
        file=sys.stderr,
        flush=True,
    )
    results: dict[tuple[str, int], dict] = {}
    last: dict[str, tuple[int, dict]] = {}
    for length in lengths:
        for method in methods:
            if method in last:
                n0, r0 = last[method]
                est = (1 + reps) * (r0["fwd_bwd_s"] + r0["fwd_s"]) * (length / n0) ** 2
                if est > args.budget_s:
                    results[method, length] = {
                        "skipped": f"over budget (estimated {est:.0f} s > {args.budget_s:.0f} s)"
                    }
                    print(f"  skipped: {method} L={length}", file=sys.stderr, flush=True)
                    continue
            cfg = {
                "method": method,
                "length": length,
                "batch": args.batch,
                "heads": args.heads,
                "head_dim": args.head_dim,
                "num_features": args.num_features,
                "reps": reps,
                "threads": args.threads,
                "device": device,
                "dtype": args.dtype,
            }
            cfg["attention"] = attention_spec_of(method, cfg)
            res = run_one(cfg)
            results[method, length] = res
            if "fwd_bwd_s" in res:
                last[method] = (length, res)
            print(
                f"  done: {method} L={length} {res.get('fwd_bwd_s', res)}",
                file=sys.stderr,
                flush=True,
            )
    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "machine": f"{where} (measured on {device})",
        "device": device,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": threads,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "started": started,
        "wall_min": (time.perf_counter() - t0) / 60,
        "batch": args.batch,
        "heads": args.heads,
        "head_dim": args.head_dim,
        "num_features": args.num_features,
        "reps": reps,
    }
    print(write_outputs(args.out or DEFAULT_OUT, results, methods, lengths, meta, fit_from))


if __name__ == "__main__":
    main()
