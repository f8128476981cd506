"""Training recipes: the ``protocol`` config group (``conf/protocol/*.yaml``).

``default`` is this project's recipe and changes nothing. ``spectraformer_code`` reproduces the
Skyformer / Spectraformer reference code's recipe where it differs (each key of the YAML names
the reference file; ``docs/protocol.md`` has the table "default vs reference code, and why").

Two mechanisms, so that debug presets and the command line keep the last word:

* trainer and optimizer values (``grad_clip_algorithm`` and the per-task ``warmup_steps``,
  ``val_check_interval``, ``val_batches`` tables) are set by the protocol YAML itself through
  interpolation; the group sits after ``experiment`` and before ``debug`` in ``conf/train.yaml``;
* :func:`apply_protocol` turns the other keys into edits of the ``task`` and ``model`` nodes of
  the composed config before anything is built (they depend on the task's registry entry), so
  the run config saved with checkpoints already holds the effective values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["PROTOCOL_DEFAULTS", "apply_protocol", "check_protocol"]

#: Every key and its value in ``conf/protocol/default.yaml`` (the no-op recipe).
PROTOCOL_DEFAULTS: dict[str, Any] = {
    "name": "default",
    "val_on_test": [],
    "pooling": "real_tokens",
    "grad_clip_algorithm": None,
    "pad_to_power_of_two": False,
    "zero_padded_keys_in": [],
    "listops_close_bracket": True,
    "zero_pixel_is_padding": False,
    "warmup_steps": {},
    "val_check_interval": {},
    "val_batches": {},
    "gerf_A": "closed_form",
}
_CHOICES = {
    "pooling": ("real_tokens", "padded_length"),
    "grad_clip_algorithm": (None, "norm", "value"),
    "gerf_A": ("closed_form", "reference_random"),
}


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_protocol(node: Mapping[str, Any] | None) -> dict[str, Any]:
    """The protocol options with defaults filled in; unknown keys and bad values raise
    ``ValueError`` naming the key and what is allowed."""
    given = dict(_plain(node) or {})
    unknown = sorted(set(given) - set(PROTOCOL_DEFAULTS))
    if unknown:
        raise ValueError(f"protocol got unknown option(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(PROTOCOL_DEFAULTS))}")
    out = {**PROTOCOL_DEFAULTS, **given}
    for key, allowed in _CHOICES.items():
        if out[key] not in allowed:
            raise ValueError(f"protocol.{key} must be one of {', '.join(map(str, allowed))}, "
                             f"got {out[key]!r}")
    for key in ("val_on_test", "zero_padded_keys_in"):
        if not isinstance(out[key], list) or not all(isinstance(v, str) for v in out[key]):
            raise ValueError(f"protocol.{key} must be a list of names, got {out[key]!r}")
    for key in ("warmup_steps", "val_check_interval", "val_batches"):
        value = out[key] or {}
        if not isinstance(value, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
            raise ValueError(f"protocol.{key} must map task names to positive integers, got "
                             f"{out[key]!r}")
        out[key] = value
    for key in ("pad_to_power_of_two", "listops_close_bracket", "zero_pixel_is_padding"):
        if not isinstance(out[key], bool):
            raise ValueError(f"protocol.{key} must be true or false, got {out[key]!r}")
    if out["gerf_A"] == "reference_random":
        raise ValueError(
            "protocol.gerf_A=reference_random (A ~ U(-1/8, 1/8) per head and position, drawn "
            "once, as the reference code does) is not implemented: it needs a GERF/SADERF "
            "feature map with per-position parameters (spectra.features), which the training "
            "layer cannot add; see docs/protocol.md"
        )
    return out


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(int(n), 1))))


def apply_protocol(cfg: DictConfig) -> dict[str, Any]:
    """Check ``cfg.protocol`` and apply its task/model keys to ``cfg`` in place; returns
    ``{"key.path": new value}`` of what changed (empty for the default protocol). The
    trainer/optim keys are the YAML's (see the module docstring); ``grad_clip_algorithm`` is
    applied here too, so ``protocol.grad_clip_algorithm=value`` works with any protocol. A
    config without ``protocol`` is left alone."""
    import lra_data
    from lra_data.registry import get_task

    node = cfg.get("protocol")
    if node is None:
        return {}
    proto = check_protocol(node)
    task = str(cfg.task.name)
    spec = lra_data.TASKS.get(task)
    changes: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        OmegaConf.update(cfg, path, value, force_add=True)
        changes[path] = value

    with open_dict(cfg):
        if task in proto["val_on_test"]:
            put("task.val_split", "test")
        if proto["pooling"] != "real_tokens":
            put("model.pooling", proto["pooling"])
        clip = proto["grad_clip_algorithm"]
        if clip is not None and cfg.trainer.get("gradient_clip_algorithm") != clip:
            put("trainer.gradient_clip_algorithm", clip)
        if proto["pad_to_power_of_two"]:
            length = cfg.task.get("max_length") or (spec.max_length if spec else None)
            if length:
                put("task.pad_to", _next_power_of_two(length))
                put("task.pad_to_multiple_of", None)
        attention = cfg.get("attention") or {}
        if attention.get("name") in proto["zero_padded_keys_in"]:
            put("model.zero_padded_keys", True)
        if not proto["listops_close_bracket"] and spec is not None and (
                "close_bracket" in get_task(task).load_options):
            put("task.options.close_bracket", False)
        if proto["zero_pixel_is_padding"] and spec is not None and spec.image_shape:
            put("task.extra_pad_ids", [1])  # id of grey level 0
    return changes
