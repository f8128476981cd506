"""Component registries: samplers, feature maps and attentions, looked up by name.

A registry maps a name to a class (or factory). Components register themselves with a decorator::

    from spectra.registry import SAMPLERS

    @SAMPLERS.register("halton")
    class HaltonSampler(Sampler): ...

and are built by name, never by if/else dispatch::

    SAMPLERS.build("halton", dim=64, num_features=128)

Third-party packages add components through the ``spectra.plugins`` entry-point group; those are
loaded lazily the first time a registry is read (see :mod:`spectra.plugins`).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ATTENTIONS",
    "FEATURE_MAPS",
    "SAMPLERS",
    "DuplicateComponentError",
    "Registry",
    "UnknownComponentError",
]


# What fills the registries before the first lookup, in order: ``spectra/__init__.py`` adds
# "import the built-in components" and "load the plugins". Injected, so that this module
# imports nothing from ``spectra``. Each loader must be idempotent (it runs on every lookup).
LOADERS: list[Callable[[], None]] = []


class UnknownComponentError(KeyError):
    """An unknown component name; the message lists the registered names and the closest match."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ValueError):
    """Two providers registered the same name in one registry."""


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    name: str
    obj: Callable[..., Any]
    provider: str  # top-level package that registered it (e.g. "spectra" or a plugin package)
    description: str


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _provider_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return module.split(".")[0]


class Registry:
    """A named collection of components of one kind (``"sampler"``, ``"feature map"``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str, *, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``obj`` as ``name``; a name taken by another object is an error."""
        if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
            raise ValueError(
                f"invalid {self.kind} name {name!r}: use letters, digits and underscores"
            )

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            entry = Entry(
                name=name,
                obj=obj,
                provider=_provider_of(obj),
                description=description or _first_doc_line(obj),
            )
            old = self._entries.get(name)
            if old is not None and old.obj is not obj:
                same_source = (
                    getattr(old.obj, "__module__", None) == getattr(obj, "__module__", None)
                    and getattr(old.obj, "__qualname__", None) == getattr(obj, "__qualname__", None)
                )
                if not same_source:  # re-importing the same module (e.g. importlib.reload) is fine
                    raise DuplicateComponentError(
                        f"{self.kind} {name!r} is registered twice: by "
                        f"{old.obj.__module__}.{old.obj.__qualname__} (package {old.provider!r}) "
                        f"and by {obj.__module__}.{obj.__qualname__} (package {entry.provider!r})"
                    )
            self._entries[name] = entry
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugin reloading)."""
        self._entries.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        for load in LOADERS:
            load()

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the shell-style ``pattern``."""
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` (object, provider, description) registered under ``name``."""
        self._ensure_loaded()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownComponentError(self._unknown_message(name)) from None

    def get(self, name: str) -> Callable[..., Any]:
        """The class or factory registered under ``name``."""
        return self.entry(name).obj

    def build(self, name: str, **options: Any) -> Any:
        """Instantiate ``name`` with ``options``; options the component does not accept raise."""
        obj = self.get(name)
        check_options(obj, options, what=f"{self.kind} {name!r}")
        return obj(**options)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

    def _unknown_message(self, name: object) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {', '.join(known)}"


_OPTIONLESS_INITS = {"Module.__init__", "object.__init__"}


def accepted_options(obj: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword names ``obj`` accepts, and whether it also takes ``**kwargs``."""
    if inspect.isclass(obj) and getattr(obj.__init__, "__qualname__", "") in _OPTIONLESS_INITS:
        return set(), False  # inherits nn.Module's / object's (*args, **kwargs): no options
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters.values()
    names = {
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_options(obj: Callable[..., Any], options: dict[str, Any], *, what: str) -> None:
    """Raise a ``ValueError`` naming any option that ``obj`` does not accept.

    Signatures are read only to reject options with the list of allowed ones, never to decide
    what to pass: every attention and sampler takes ``seed`` and ``layer_index`` (their base
    classes' contract), so callers pass them unconditionally."""
    names, var_kw = accepted_options(obj)
    unknown = sorted(set(options) - names)
    if unknown and not var_kw:
        raise ValueError(
            f"{what} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(names)) or '(none)'}"
        )


SAMPLERS = Registry("sampler")
FEATURE_MAPS = Registry("feature map")
ATTENTIONS = Registry("attention")
