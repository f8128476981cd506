"""Standard JSON for the files runs write (metrics.json, status.json).

Python's ``json`` writes NaN and ±inf as bare ``NaN`` / ``Infinity``, which strict parsers
(jq, JavaScript's JSON.parse, many dashboards) reject. :func:`dumps` writes them as ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "strict_json"]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (dicts, lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (``value``); other objects via ``str``."""
    kwargs.setdefault("default", str)
    return json.dumps(strict_json(value), allow_nan=False, **kwargs)
