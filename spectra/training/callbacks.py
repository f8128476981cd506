"""Training callbacks: throughput / step time / peak memory, DDP feature-sync check, NaN guard,
and a progress-bar factory (Rich on a terminal, TQDM otherwise)."""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar

from spectra.training.nan_guard import NaNGuard  # the NaN guard lives in its own module

__all__ = [
    "FeatureSyncCheck",
    "NaNGuard",
    "ThroughputMonitor",
    "peak_memory_mb",
    "progress_bar",
    "reset_peak_memory",
    "state_fingerprint",
]


def progress_bar(refresh_rate: int | None = None, rich: bool | None = None) -> Callback:
    """``RichProgressBar`` when stdout is a terminal (or ``rich=True``), else a TQDM bar.

    ``refresh_rate``: steps between refreshes; None = 1 on a terminal and 100 otherwise (keeps
    log files short); 0 hides the bar.
    """
    use_rich = sys.stdout.isatty() if rich is None else rich
    if refresh_rate is None:
        refresh_rate = 1 if use_rich else 100
    if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, int) or refresh_rate < 0:
        raise ValueError(f"refresh_rate must be an int >= 0 or null, got {refresh_rate!r}")
    if use_rich:
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=refresh_rate)


_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"


def reset_peak_memory(device: torch.device) -> bool:
    """Restart peak-memory accounting (so each job of an in-process multirun has its own peak).

    CUDA: ``torch.cuda.reset_peak_memory_stats``. CPU on Linux: writing ``5`` to
    ``/proc/self/clear_refs`` resets the process's high-water mark ``VmHWM``. Returns False where
    the platform cannot reset it (then the peak is the process's lifetime maximum RSS).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open(_PROC_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_kib() -> int | None:
    try:
        with open(_PROC_STATUS) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB since the last :func:`reset_peak_memory`: CUDA's max allocated on a
    GPU; on a CPU the process's RSS high-water mark (``VmHWM`` on Linux, else max RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm / 2**10
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _count_tokens(batch: Any) -> tuple[int, int]:
    """(real tokens, padded positions) in a batch of the LRA collator."""
    real = padded = 0
    for ids_key, mask_key in (("input_ids", "mask"), ("input_ids2", "mask2")):
        if isinstance(batch, dict) and ids_key in batch:
            padded += int(batch[ids_key].numel())
            mask = batch.get(mask_key)
            real += int(mask.sum()) if mask is not None else int(batch[ids_key].numel())
    return real, padded


class ThroughputMonitor(Callback):
    """Logs ``perf/step_time_s`` (wall time between the ends of consecutive training steps, data
    loading included), ``perf/tokens_per_s`` (real tokens, all ranks), ``perf/padded_tokens_per_s``
    and ``perf/peak_mem_mb``; ``summary()`` gives the run's means (first step excluded: warm-up).
    """

    def __init__(self) -> None:
        self._last: float | None = None
        self._times: list[float] = []
        self._tokens: list[int] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reset_peak_memory(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()  # do not count validation time as a step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._last is None:
            self._last = now
            return
        dt, self._last = now - self._last, now
        real, padded = _count_tokens(batch)
        world = max(trainer.world_size, 1)
        self._times.append(dt)
        self._tokens.append(real * world)
        metrics = {
            "perf/step_time_s": dt,
            "perf/tokens_per_s": real * world / max(dt, 1e-9),
            "perf/padded_tokens_per_s": padded * world / max(dt, 1e-9),
            "perf/peak_mem_mb": peak_memory_mb(pl_module.device),
        }
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    def summary(self) -> dict[str, float]:
        """Mean step time and tokens/s over the run (first step excluded when there are more)."""
        times, tokens = self._times, self._tokens
        if len(times) > 1:
            times, tokens = times[1:], tokens[1:]
        if not times:
            return {}
        return {
            "perf/mean_step_time_s": sum(times) / len(times),
            "perf/mean_tokens_per_s": sum(tokens) / max(sum(times), 1e-9),
        }


def state_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes, dtypes, bytes) of ``module``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _gather_strings(value: str) -> list[str]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return [str(v) for v in out]


class FeatureSyncCheck(Callback):
    """Asserts that every DDP rank holds the same model state — random-feature matrices included —
    before DDP wraps the model (``setup``: each rank drew its W from the seeded generator itself)
    and at every validation (after any redraws). A no-op on one process."""

    def __init__(self) -> None:
        self.ranks_checked = 0  # processes compared at the last check
        self.checks = 0

    def _check(self, pl_module: L.LightningModule, when: str) -> None:
        prints = _gather_strings(state_fingerprint(pl_module))
        self.ranks_checked = len(prints)
        self.checks += 1
        if len(set(prints)) > 1:
            ranks = ", ".join(f"rank {i}: {p[:12]}" for i, p in enumerate(prints))
            raise RuntimeError(
                f"model state differs across DDP ranks {when} ({ranks}); random features must be "
                "drawn from the same seed on every rank (set `seed=` and the attention's seed)"
            )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._check(pl_module, f"at {stage} setup")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._check(pl_module, f"at step {trainer.global_step}")
