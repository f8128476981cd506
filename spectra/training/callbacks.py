"""Training callbacks and helpers: the NaN guard, the DDP feature-sync check, peak memory, the
batch measures for Lightning's ``ThroughputMonitor``, the speed/ETA line, and a progress bar over
the run's steps (Rich on a terminal, TQDM otherwise)."""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from torch import nn

__all__ = [
    "FeatureSyncCheck",
    "NaNGuard",
    "NonFiniteError",
    "SpeedEstimate",
    "WallClock",
    "batch_size",
    "first_nonfinite_module",
    "format_duration",
    "nonfinite_names",
    "peak_memory_mb",
    "progress_bar",
    "real_tokens",
    "reset_peak_memory",
    "state_fingerprint",
]

log = logging.getLogger(__name__)


class _RunSteps:
    """Progress-bar mixin: the training bar counts the run's optimizer steps (``global_step`` of
    ``Trainer.estimated_stepping_batches``) across epochs, not one epoch's batches; it is made
    at the first epoch and only renamed at the next ones (its rate and time left run on)."""

    trainer: L.Trainer
    _bar_made = False

    def on_train_start(self, *args: Any) -> None:
        super().on_train_start(*args)  # type: ignore[misc]
        self._bar_made = False

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.estimated_stepping_batches

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(  # type: ignore[misc]
            trainer, pl_module, outputs, batch, int(trainer.global_step) - 1)

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch}"  # Rich's default appends /max_epochs-1: "0/-2"


class StepTQDMProgressBar(_RunSteps, TQDMProgressBar):
    """``TQDMProgressBar`` whose training bar runs from 0 to the run's last step."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self._bar_made:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.initial = self.train_progress_bar.n = trainer.global_step
            self._bar_made = True
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")


class StepRichProgressBar(_RunSteps, RichProgressBar):
    """``RichProgressBar`` whose training bar runs from 0 to the run's last step."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar_made and self.progress is not None and self.train_progress_bar_id is not None:
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
            return
        super().on_train_epoch_start(trainer, pl_module)
        self._bar_made = True


def progress_bar(refresh_rate: int | None = None, rich: bool | None = None) -> Callback:
    """A bar over the run's steps: Rich when stdout is a terminal (or ``rich=True``), else TQDM.

    ``refresh_rate``: steps between refreshes; None = 1 on a terminal and 100 otherwise (keeps
    log files short); 0 hides the bar.
    """
    use_rich = sys.stdout.isatty() if rich is None else rich
    if refresh_rate is None:
        refresh_rate = 1 if use_rich else 100
    if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, int) or refresh_rate < 0:
        raise ValueError(f"refresh_rate must be an int >= 0 or null, got {refresh_rate!r}")
    if use_rich:
        return StepRichProgressBar(refresh_rate=refresh_rate)
    return StepTQDMProgressBar(refresh_rate=refresh_rate)


def format_duration(seconds: float) -> str:
    """``3 h 05 min``, ``4 min 10 s`` or ``12 s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class SpeedEstimate(Callback):
    """One log line once ``steps`` training steps have been timed (after ``skip`` warm-up steps):
    steps per second and the estimated time to the run's last step
    (``Trainer.estimated_stepping_batches``). Validation time is left out of the timing and of
    the estimate."""

    def __init__(self, skip: int = 5, steps: int = 20) -> None:
        for name, value, low in (("skip", skip, 0), ("steps", steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SpeedEstimate {name} must be an int >= {low}, got {value!r}")
        self.skip, self.steps = skip, steps
        self.line: str | None = None  # the logged line
        self._first, self._seconds, self._timed = 0, 0.0, 0
        self._mark: float | None = None  # end of the last timed step (None: not training yet)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first, self._mark = int(trainer.global_step), None
        self._seconds, self._timed = 0.0, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._mark is not None and trainer.state.fn == "fit":
            self._mark = time.perf_counter()  # the next interval starts after validation

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.line is not None:
            return
        now, done = time.perf_counter(), int(trainer.global_step) - self._first
        if self._mark is not None and done > self.skip:
            self._seconds += now - self._mark
            self._timed += 1
        self._mark = now
        if self._timed < self.steps:
            return
        rate = self._timed / self._seconds
        total = trainer.estimated_stepping_batches
        line = f"speed: {rate:.3g} steps/s ({1 / rate:.3g} s/step over {self._timed} steps)"
        if math.isfinite(total):
            left = (total - trainer.global_step) / rate
            finish = datetime.datetime.now() + datetime.timedelta(seconds=left)
            line += (f"; {int(total)} steps: about {format_duration(left)} left, done around "
                     f"{finish:%H:%M} (validation not included)")
        self.line = line
        if trainer.is_global_zero:
            log.info("%s", line)


class WallClock(Callback):
    """Logs ``time/elapsed_s`` with every validation: wall-clock seconds since training started
    (validation included, like ``trainer.max_time``), carried across resumes in the checkpoint,
    so that accuracy can be drawn against time as well as against steps."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier sessions of this run (from the checkpoint)
        self._start: float | None = None

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", self.elapsed(), sync_dist=False)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict["elapsed_s"])


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


def batch_size(batch: Any) -> int:
    """Samples in a batch of the LRA collator (``batch_size_fn`` of ``ThroughputMonitor``)."""
    return int(batch["labels"].shape[0])


def real_tokens(batch: Any) -> int:
    """Real (unpadded) tokens in a batch of the LRA collator, both sequences of a pair
    (``length_fn`` of ``ThroughputMonitor``: its ``items_per_sec`` are tokens per second)."""
    real = 0
    for ids_key, mask_key in (("input_ids", "mask"), ("input_ids2", "mask2")):
        if ids_key in batch:
            mask = batch.get(mask_key)
            real += int(mask.sum()) if mask is not None else int(batch[ids_key].numel())
    return real


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


# -- NaN guard ------------------------------------------------------------------------------------
_ADVICE = (
    "try a lower optim.lr, gradient clipping (trainer.gradient_clip_val), "
    "trainer.precision=32-true, or a positive feature map (posrf, oprf, saderf); "
    "debug=anomaly names the backward operation"
)


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in the gradients; the message names the step and the layer."""


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor | None]]) -> list[str]:
    """Names of the tensors that hold a NaN or Inf.

    Fast path: one fused norm per tensor (``torch._foreach_norm``, as gradient clipping uses) and
    one device sync — a finite norm proves every element finite. Only tensors whose norm is not
    finite (a NaN/Inf, or a finite tensor whose norm overflows) get the exact element check.
    """
    items = [(n, t.detach()) for n, t in named if t is not None and t.is_floating_point()]
    if not items:
        return []
    tensors = [t for _, t in items]
    foreach_norm = getattr(torch, "_foreach_norm", None)
    norms = foreach_norm(tensors) if foreach_norm is not None else [t.norm() for t in tensors]
    suspicious = ~torch.isfinite(torch.stack([n.float() for n in norms]))
    if not bool(suspicious.any()):
        return []
    return [
        name
        for (name, t), flag in zip(items, suspicious.tolist(), strict=True)
        if flag and not bool(torch.isfinite(t).all())
    ]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


def first_nonfinite_module(model: nn.Module, run: Callable[[], Any]) -> tuple[str, str] | None:
    """Call ``run()`` (a forward pass of ``model``) with hooks on every submodule; return the
    (qualified name, class name) of the first module — in completion order, so the innermost —
    whose output holds a NaN or Inf, or None if every output is finite."""
    found: list[tuple[str, str]] = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not found and any(
                t.is_floating_point() and not bool(torch.isfinite(t).all())
                for t in _tensors(output)
            ):
                found.append((name, type(module).__name__))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


class NaNGuard(Callback):
    """Stop before the optimizer applies a non-finite gradient, naming the step and the layer.

    What Lightning lacks: ``Trainer(detect_anomaly=True)`` (the ``debug=anomaly`` preset) names
    the backward operation that produced a NaN, at a large cost on every step, and neither it nor
    anything else in Lightning says which layer's output went non-finite or keeps the update from
    being applied. Here, in ``on_before_optimizer_step`` (before clipping and the update), one
    fused check of all gradients; on a failure the batch is replayed once (eval mode, no grad,
    forward hooks on every submodule) to find the first module whose output is non-finite, and
    :class:`NonFiniteError` is raised. A non-finite loss gives non-finite gradients, so it is
    caught here too. Under an active fp16 ``GradScaler`` overflowing gradients are the scaler's:
    it skips those updates by design. Step N is the N-th optimizer step (counted from 1).
    """

    def __init__(self, locate: bool = True) -> None:
        self.locate = locate
        self._batch: Any = None
        self._batch_idx: int | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def _locate(self, pl_module: L.LightningModule) -> str:
        if not self.locate or self._batch is None:
            return ""
        was_training = pl_module.training
        pl_module.eval()  # no redraws, no dropout: the replay changes no state
        try:
            with torch.no_grad():
                hit = first_nonfinite_module(pl_module, lambda: pl_module(self._batch))
        except Exception as exc:  # the replay is a diagnosis, never a second failure
            return f" (could not replay the batch to locate the layer: {exc})"
        finally:
            pl_module.train(was_training)
        if hit is None:
            return (
                " Replaying the batch gives finite activations everywhere: the NaN/Inf arises "
                "in the backward pass."
            )
        return f" First non-finite activation: output of layer {hit[0]} ({hit[1]})."

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is not None and scaler.is_enabled():
            return
        bad = nonfinite_names((n, p.grad) for n, p in pl_module.named_parameters())
        if not bad:
            return
        layers = list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else n for n in bad))
        shown = f"layer {layers[0]}"
        if len(layers) > 1:
            more = ", …" if len(layers) > 4 else ""
            shown = f"{len(layers)} layers: {', '.join(layers[:4])}{more}"
        where = f"step {int(trainer.global_step) + 1}"
        if self._batch_idx is not None:
            where += f" (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        raise NonFiniteError(
            f"non-finite gradients at {where} in {shown}.{self._locate(pl_module)} "
            f"Stopped (the update was not applied); {_ADVICE}"
        )
