"""Registries: lookup, listing, errors, duplicate names, option checking, the CLI listing."""

from __future__ import annotations

import pytest

from spectra.__main__ import format_listing, main
from spectra.registry import (
    ATTENTIONS,
    FEATURE_MAPS,
    SAMPLERS,
    DuplicateComponentError,
    Registry,
    UnknownComponentError,
)

REQUIRED = {
    "samplers": (SAMPLERS, {"gaussian", "orthogonal", "sorf", "qmc", "mm", "fastfood",
                            "fastfood_learnable", "learnable", "gq", "sgq", "scrf", "rom"}),
    "feature_maps": (FEATURE_MAPS, {"trig", "posrf", "hyperbolic", "gerf", "oprf", "sderf",
                                    "saderf"}),
    "attentions": (ATTENTIONS, {"softmax", "random_features", "skyformer", "nystromformer",
                                "linear", "kernelized", "linformer", "reformer", "bigbird",
                                "informer"}),
}


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_required_names_registered(kind: str) -> None:
    registry, required = REQUIRED[kind]
    assert required <= set(registry.names())


def test_names_sorted_and_pattern() -> None:
    names = SAMPLERS.names()
    assert names == sorted(names)
    assert SAMPLERS.names("fastfood*") == ["fastfood", "fastfood_learnable"]
    assert SAMPLERS.names("nothing*") == []


def test_unknown_name_lists_registered_and_closest() -> None:
    with pytest.raises(UnknownComponentError) as info:
        SAMPLERS.get("gausian")
    message = str(info.value)
    assert "unknown sampler 'gausian'" in message
    assert "Did you mean 'gaussian'?" in message
    for name in SAMPLERS.names():
        assert name in message
    assert isinstance(info.value, KeyError)


def test_unknown_name_in_build() -> None:
    with pytest.raises(UnknownComponentError, match="Registered feature maps"):
        FEATURE_MAPS.build("favor")


def _toy_registry() -> Registry:
    reg = Registry("widget")
    reg._ensure_loaded = lambda: None  # type: ignore[method-assign]
    return reg


def test_register_build_and_option_check() -> None:
    reg = _toy_registry()

    @reg.register("box")
    class Box:
        """A box of a given size."""

        def __init__(self, size: int, *, colour: str = "red") -> None:
            self.size, self.colour = size, colour

    box = reg.build("box", size=3, colour="blue")
    assert (box.size, box.colour) == (3, "blue")
    assert reg.entry("box").description == "A box of a given size."
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'weight'; allowed: colour, size"):
        reg.build("box", size=1, weight=2)


def test_duplicate_name_names_both_providers() -> None:
    reg = _toy_registry()

    @reg.register("thing")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(DuplicateComponentError) as info:
        reg.register("thing")(Second)
    assert "First" in str(info.value) and "Second" in str(info.value)


@pytest.mark.parametrize("bad", ["", "has space", "dash-name", 3])
def test_invalid_names_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid widget name"):
        _toy_registry().register(bad)  # type: ignore[arg-type]


def test_listing_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "samplers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"samplers ({len(SAMPLERS.names())}):")
    for name in SAMPLERS.names():
        assert f"  {name} " in out
    text = format_listing(["samplers", "feature_maps", "attentions"])
    assert "feature_maps (" in text and "attentions (" in text and "spectra" in text


def test_component_without_options_rejects_any_option() -> None:
    """A map that inherits nn.Module.__init__ takes no options: an unknown one is a ValueError."""
    with pytest.raises(ValueError, match=r"feature map 'posrf' got unknown option\(s\) 'A'"):
        FEATURE_MAPS.build("posrf", A=0.1)
