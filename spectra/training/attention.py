"""Turn an ``attention`` config node into ``ATTENTIONS.build(name, **options)`` calls.

The rule is generic, so a new registered component needs only a YAML file, never code here:

* ``name`` is the registered attention name;
* a sub-mapping that has its own ``name`` (e.g. ``sampler: {name: qmc, scramble: true}``)
  selects a component of another registry: it becomes ``sampler="qmc"`` and
  ``sampler_options={"scramble": True}`` (the options only when there are any);
* every other key is passed through unchanged (``head_dim``, ``num_features``, ``seed`` ...).

Every attention takes ``seed`` and ``layer_index`` (the base contract of
:class:`spectra.attention.Attention`): layer i is built with the config's ``seed`` and
``layer_index=i``, and seeds whatever it draws from (seed, i). So layers draw independently
while every DDP rank draws the same. ``layer_index`` is therefore not a config option.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from spectra.attention.base import layer_seed
from spectra.checks import positive_int
from spectra.registry import ATTENTIONS

__all__ = ["AttentionSpec", "attention_spec", "layer_seed"]


def _plain(value: Any) -> Any:
    """OmegaConf containers → plain dicts/lists (other values unchanged)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency of the training layer
        return value
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


@dataclass(frozen=True)
class AttentionSpec:
    """A registered attention name and the keyword options it is built with."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)  # e.g. {"sampler": "qmc"}

    @property
    def head_dim(self) -> int:
        """The head dimension d the attention works on (``options["head_dim"]``)."""
        if "head_dim" not in self.options:
            raise ValueError(
                f"attention {self.name!r} config has no 'head_dim'; every attention preset must "
                "set it (usually head_dim: ${model.head_dim})"
            )
        return positive_int(self.options["head_dim"], "attention.head_dim")

    def options_for_layer(self, layer: int) -> dict[str, Any]:
        """Options of layer ``layer``: the config's options plus ``layer_index=layer``."""
        return {**self.options, "layer_index": int(layer)}

    def build(self, layer: int = 0) -> nn.Module:
        """``ATTENTIONS.build(name, **options)`` for layer ``layer``."""
        return ATTENTIONS.build(self.name, **self.options_for_layer(layer))

    def factory(self) -> Callable[[int], nn.Module]:
        """A ``layer -> module`` callable for :class:`spectra.training.models.LRAEncoder`."""
        return self.build

    def validate(self) -> None:
        """Fail fast (before any data is loaded): unknown names raise the registry's
        ``UnknownComponentError`` listing the valid ones; bad options raise ``ValueError``."""
        self.build(0)

    def tags(self) -> dict[str, Any]:
        """Component choices for run names and tags: attention, its parts, and m if set."""
        out: dict[str, Any] = {"attention": self.name, **self.components}
        if self.options.get("num_features") is not None:
            out["m"] = self.options["num_features"]
        return out


def attention_spec(cfg: Mapping[str, Any]) -> AttentionSpec:
    """Parse an ``attention`` config node (rules in the module docstring) into a spec."""
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the attention config must be a mapping, got {type(cfg).__name__}")
    if "layer_index" in cfg:
        raise ValueError(
            "attention.layer_index is not a config option: the model sets it for each layer "
            "(layer i gets layer_index=i); remove it"
        )
    if not cfg.get("name"):
        raise ValueError(
            "the attention config has no 'name'; set it to a registered attention: "
            + ", ".join(ATTENTIONS.names())
        )
    options: dict[str, Any] = {}
    components: dict[str, str] = {}
    for key, value in cfg.items():
        if key == "name":
            continue
        if isinstance(value, Mapping) and "name" in value:
            rest = {k: v for k, v in value.items() if k != "name"}
            options[key] = components[key] = str(value["name"])
            if rest:
                options[f"{key}_options"] = rest
        else:
            options[key] = value
    return AttentionSpec(name=str(cfg["name"]), options=options, components=components)
