"""Real queries and keys: captured with forward hooks from a trained ``train.py`` checkpoint.

The hooks sit on the ``attention`` child of every
:class:`spectra.training.models.MultiHeadAttention`: after the q/k/v projections and the split
into heads, before any scaling or feature map.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spectra.analysis.kernel_error import DATA_STREAM, Workload

__all__ = [
    "capture_attention_inputs",
    "load_checkpoint",
    "real_batch",
    "real_workload",
    "sample_positions",
]


def capture_attention_inputs(
    model: torch.nn.Module, run: Callable[[], Any]
) -> list[dict[str, torch.Tensor | None]]:
    """q, k, v (B, H, L, d) and mask (B, L) entering every attention module of ``model`` while
    ``run()`` executes, in layer order; the hooks are removed afterwards."""
    from spectra.training.models import MultiHeadAttention

    captured: list[dict[str, torch.Tensor | None]] = []

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        q, k, v = args[:3]
        mask = kwargs.get("mask", args[3] if len(args) > 3 else None)
        captured.append({"q": q.detach(), "k": k.detach(), "v": v.detach(), "mask": mask})

    handles = [
        module.attention.register_forward_pre_hook(hook, with_kwargs=True)
        for module in model.modules()
        if isinstance(module, MultiHeadAttention)
    ]
    if not handles:
        raise ValueError("the model has no spectra MultiHeadAttention layer to capture")
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def load_checkpoint(path: Path, task: str | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode) and task config stored in a ``train.py`` checkpoint."""
    from spectra.training.module import LRAModule

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    module = LRAModule.load_from_checkpoint(str(path), map_location="cpu")
    task_cfg = dict(module.cfg["task"])
    if task is not None and task != task_cfg["name"]:
        raise ValueError(
            f"--task {task!r} does not match the checkpoint's task {task_cfg['name']!r}: the "
            "model's vocabulary and positions belong to its own task; omit --task or pass "
            f"--task {task_cfg['name']}"
        )
    return module.model.eval(), task_cfg


def real_batch(
    task_cfg: dict[str, Any], *, sequences: int, min_length: int, data_dir: str | None, seed: int
) -> dict[str, torch.Tensor]:
    """The first ``sequences`` validation sequences with at least ``min_length`` real tokens."""
    from spectra.training.data import datamodule_for

    cfg = {**task_cfg, "prepare": None}  # never generate data from here
    if data_dir is not None:
        cfg["data_dir"] = data_dir
    dm = datamodule_for(cfg, seed=seed)
    dm.setup("validate")
    ids, masks = [], []
    for batch in dm.val_dataloader():
        keep = batch["mask"].sum(-1) >= min_length
        ids.extend(batch["input_ids"][keep])
        masks.extend(batch["mask"][keep])
        if len(ids) >= sequences:
            break
    if not ids:
        raise ValueError(f"no validation sequence has {min_length} real tokens; lower --length")
    return {"input_ids": torch.stack(ids[:sequences]), "mask": torch.stack(masks[:sequences])}


def sample_positions(mask: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """``length`` distinct real-token positions per row of ``mask`` (B, L), sorted: (B, length).
    A row with fewer real tokens raises ``ValueError``."""
    positions = []
    for row in mask:
        valid = row.nonzero().squeeze(-1)
        if valid.numel() < length:
            raise ValueError(
                f"a sequence has {valid.numel()} real tokens, fewer than --length={length}"
            )
        positions.append(valid[torch.randperm(valid.numel(), generator=gen)[:length].sort().values])
    return torch.stack(positions)


def real_workload(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, task: str, length: int, seed: int
) -> Workload:
    """Captured q, k, v of every layer → one workload with a group per layer; ``length`` real
    tokens per sequence (the same positions for q, k, v), x = q·d^(-1/4), y = k·d^(-1/4)."""
    encoder = getattr(model, "encoder", model)
    captured = capture_attention_inputs(model, lambda: encoder(batch["input_ids"], batch["mask"]))
    pos = sample_positions(batch["mask"], length, torch.Generator().manual_seed(DATA_STREAM + seed))

    def take(t: torch.Tensor) -> torch.Tensor:  # (B, H, L, d) → (B, H, length, d), float64
        index = pos[:, None, :, None].expand(t.shape[0], t.shape[1], length, t.shape[-1])
        return t.gather(2, index).to(torch.float64)

    xs, ys, vs, groups, labels = [], [], [], [], []
    for layer, c in enumerate(captured):
        q, k, v = (torch.as_tensor(c[name]) for name in ("q", "k", "v"))
        scale = q.shape[-1] ** -0.25
        xs.append(take(q) * scale)
        ys.append(take(k) * scale)
        vs.append(take(v))
        groups += [f"{task} layer {layer}"] * q.shape[0]
        labels.append({"group": groups[-1], "setting": task, "scale": "", "layer": layer})
    table = pd.DataFrame(labels).set_index("group")
    return Workload("real", torch.cat(xs), torch.cat(ys), torch.cat(vs), groups, table)
