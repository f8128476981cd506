#!/usr/bin/env python
"""Speed and peak memory of attention forward + backward: softmax (SDPA), Spectra random
features (posrf + orthogonal, m = 256) and performer-pytorch's ``FastAttention`` (same m).

Usage::

    python scripts/bench_attention.py                      # L = 1024, 4096, 16384
    python scripts/bench_attention.py --quick              # L = 1024, 4096, 2 reps
    python scripts/bench_attention.py --lengths 2048 8192 --reps 5 --methods random_features sdpa

Shape B = 1, H = 8, d = 64 (``--batch``, ``--heads``, ``--head-dim``). Each (method, L) runs in
its own fresh subprocess; the time is the median over ``--reps`` timed repetitions (after one
warm-up) of ``out = attn(q, k, v); out.sum().backward()``.

Peak memory, measured honestly per subprocess: on CPU, the process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``, which sees every allocation including PyTorch's) minus
the resident size just before the first full-size forward (inputs, modules and libraries
already loaded, and one tiny L = 16 call done so one-off lazy initialization is not counted);
so it is the extra memory the attention needs at its worst point, warm-up included. It
includes the gradients of q, k, v (3·B·H·L·d floats, 96 MiB at L = 16384) and whatever the
allocator keeps resident after frees. On CUDA,
``torch.cuda.max_memory_allocated()`` minus the allocated memory before the first forward.

Ratios: "vs SDPA" = SDPA time / method time (> 1: faster than SDPA), "vs performer" likewise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("sdpa", "random_features", "performer")
LABELS = {
    "sdpa": "softmax (SDPA)",
    "random_features": "random_features (posrf + orthogonal)",
    "performer": "performer-pytorch FastAttention",
}


# -- worker (one method, one length, fresh process) ---------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(method: str, head_dim: int, num_features: int):
    import torch.nn.functional as F

    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
    if method == "random_features":
        from spectra.registry import ATTENTIONS

        return ATTENTIONS.build(
            "random_features",
            head_dim=head_dim,
            num_features=num_features,
            sampler="orthogonal",
            feature_map="posrf",
            redraw_interval=None,
            seed=0,
        )
    if method == "performer":
        from performer_pytorch import FastAttention

        return FastAttention(dim_heads=head_dim, nb_features=num_features)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def worker(cfg: dict) -> dict:
    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    shape = (cfg["batch"], cfg["heads"], cfg["length"], cfg["head_dim"])
    q, k, v = (torch.randn(shape, device=device, requires_grad=True) for _ in range(3))
    attn = _build(cfg["method"], cfg["head_dim"], cfg["num_features"])
    if isinstance(attn, torch.nn.Module):
        attn = attn.to(device)
    cuda = device.type == "cuda"

    def step() -> float:
        for t in (q, k, v):
            t.grad = None
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = attn(q, k, v)
        out.sum().backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    # one tiny call first, so one-off lazy initialization (kernels, autograd engine threads,
    # lazily imported modules) is not counted as the attention's memory
    tiny = torch.randn((*shape[:2], 16, shape[3]), device=device, requires_grad=True)
    attn(tiny, tiny, tiny).sum().backward()
    del tiny
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    step()  # warm-up
    times = [step() for _ in range(cfg["reps"])]
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"median_s": statistics.median(times), "times_s": times, "peak_bytes": max(peak, 0)}


# -- driver -------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def run_one(cfg: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_ratio(base: dict | None, res: dict) -> str:
    if not base or "error" in base or "error" in res:
        return "–"
    return f"{base['median_s'] / res['median_s']:.2f}×"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths L")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--quick", action="store_true", help="L = 1024 4096 and 2 reps")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--num-features", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    lengths = args.lengths or ([1024, 4096] if args.quick else [1024, 4096, 16384])
    reps = args.reps or (2 if args.quick else 3)
    if reps < 1 or any(n < 1 for n in lengths):
        p.error("--reps and --lengths must be positive")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = args.threads or torch.get_num_threads()
    where = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name()
    print(
        f"# attention forward+backward: B={args.batch} H={args.heads} d={args.head_dim} "
        f"m={args.num_features}, median of {reps} reps; device={device} ({where}), "
        f"torch {torch.__version__}, {threads} threads, load avg {os.getloadavg()[0]:.2f}\n"
    )
    results: dict[tuple[str, int], dict] = {}
    for length in lengths:
        for method in args.methods:
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
            }
            results[method, length] = run_one(cfg)
            print(f"  done: {method} L={length}", file=sys.stderr, flush=True)

    print("| method | L | fwd+bwd (s) | vs SDPA | vs performer | peak mem (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for length in lengths:
        for method in args.methods:
            res = results[method, length]
            if "error" in res:
                print(f"| {LABELS[method]} | {length} | error: {res['error']} | | | |")
                continue
            print(
                f"| {LABELS[method]} | {length} | {res['median_s']:.3f} "
                f"| {_fmt_ratio(results.get(('sdpa', length)), res)} "
                f"| {_fmt_ratio(results.get(('performer', length)), res)} "
                f"| {res['peak_bytes'] / 2**20:.0f} |"
            )


if __name__ == "__main__":
    main()
