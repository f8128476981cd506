"""Command line: ``python -m spectra list [samplers|feature_maps|attentions|plugins]``.

Lists every registered component (core and plugins) with the package that provides it and the
first line of its docstring; ``plugins`` lists the installed ``spectra.plugins`` entry points
(loaded, or skipped as broken). A plugin that fails to load is reported in one line on stderr
(exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spectra.plugins import PluginLoadError, broken_plugins, describe, load_plugins
from spectra.registry import ATTENTIONS, FEATURE_MAPS, SAMPLERS, DuplicateComponentError, Registry

KINDS: dict[str, Registry] = {
    "samplers": SAMPLERS,
    "feature_maps": FEATURE_MAPS,
    "attentions": ATTENTIONS,
}


def format_listing(kinds: Sequence[str]) -> str:
    """A plain-text table of the registered components of each kind."""
    lines: list[str] = []
    for kind in kinds:
        registry = KINDS[kind]
        entries = [registry.entry(name) for name in registry.names()]
        width = max((len(e.name) for e in entries), default=4)
        pwidth = max((len(e.provider) for e in entries), default=7)
        lines.append(f"{kind} ({len(entries)}):")
        for e in entries:
            lines.append(f"  {e.name:<{width}}  {e.provider:<{pwidth}}  {e.description}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def format_plugins() -> str:
    """The installed plugins: name, package and entry point; broken ones with their error."""
    loaded = load_plugins()
    broken = broken_plugins()
    lines = [f"plugins ({len(loaded)} loaded, {len(broken)} skipped):"]
    lines += [f"  {describe(ep)}" for ep in loaded.values()]
    lines += [f"  SKIPPED {message}" for message in broken.values()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spectra", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    list_parser = sub.add_parser("list", help="list registered components")
    list_parser.add_argument(
        "kind",
        nargs="?",
        choices=[*sorted(KINDS), "plugins"],
        help="one kind of component, or the installed plugins (default: all components)",
    )
    args = parser.parse_args(argv)
    try:
        if args.kind == "plugins":
            sys.stdout.write(format_plugins())
        else:
            sys.stdout.write(format_listing([args.kind] if args.kind else list(KINDS)))
    except (PluginLoadError, DuplicateComponentError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
