"""Run names, tags and the start-of-run summary, from the composed config.

``<task>.<attention>[.<component>…][.m<m>].s<seed>`` names a run (the W&B run name, the key that
``ckpt_path=last`` looks for in earlier run directories); tags carry the same choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from spectra.training.attention import attention_spec
from spectra.training.loggers import clean_tags

__all__ = ["fill_run_identity", "run_name", "run_summary", "run_tags", "saved_run_name"]


def run_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Tags from the composed config: task, attention and its components, m."""
    spec = attention_spec(cfg["attention"])
    tags = [f"task={cfg['task']['name']}"]
    tags += [f"{key}={value}" for key, value in spec.tags().items()]
    return clean_tags(tags)


def run_name(cfg: Mapping[str, Any]) -> str:
    """``<task>.<attention>[.<component>…][.m<m>].s<seed>``, e.g. ``lra_text.random_features.
    orthogonal.saderf.m128.s0``."""
    spec = attention_spec(cfg["attention"])
    parts = [str(cfg["task"]["name"]), *map(str, spec.tags().values())]
    if spec.options.get("num_features") is not None:
        parts[-1] = f"m{parts[-1]}"
    parts.append(f"s{cfg.get('seed', 0)}")
    return ".".join(parts)


def fill_run_identity(cfg: DictConfig) -> None:
    """Set ``run_name`` (if null) and prepend the automatic tags to ``tags`` (plus
    ``protocol=<name>`` when the run does not use the default recipe)."""
    with open_dict(cfg):
        if cfg.get("run_name") is None:
            cfg.run_name = run_name(cfg)
        protocol = (cfg.get("protocol") or {}).get("name", "default")
        extra = [] if protocol == "default" else [f"protocol={protocol}"]
        cfg.tags = clean_tags([*run_tags(cfg), *extra, *(cfg.get("tags") or [])])


def run_summary(cfg: DictConfig, saved: Path) -> str:
    """What a run prints at its start: its name and directory, the config-group choices and the
    command-line overrides (under Hydra), and ``saved``, the file with the whole resolved config."""
    from hydra.core.hydra_config import HydraConfig

    lines = [f"run {cfg.run_name} in {cfg.paths.output_dir}"]
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items()
                   if v is not None and not k.startswith("hydra/")}
        lines.append("  choices: " + " ".join(f"{k}={v}" for k, v in sorted(choices.items())))
        lines.append("  overrides: " + (" ".join(hydra_cfg.overrides.task) or "(none)"))
    return "\n".join([*lines, f"  resolved config: {saved}"])


def saved_run_name(run_dir: Path) -> str | None:
    """The run name of an earlier run directory (from its ``.hydra/config.yaml``), or None."""
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        return str(saved.get("run_name") or run_name(saved))
    except Exception:  # no config, or not a training run's: not a match
        return None
