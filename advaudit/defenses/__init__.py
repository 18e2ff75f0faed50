"""Input-purification defences and their honest (adaptive) evaluation.

Defences are ``defense`` plugins in the entry-point group ``advaudit.plugins`` built on
:class:`~advaudit.defenses.base.Defense`; :func:`parse_defense` reads ``NAME[:key=value,...]`` and
:func:`get_defense` builds one by name.
"""

from __future__ import annotations

from typing import Any

from ..errors import PluginError, UsageError
from ..registry import get_registry
from .base import Defense

__all__ = ["Defense", "get_defense", "parse_defense", "build_stack"]


def parse_defense(text: str) -> tuple[str, dict[str, str]]:
    """``tvm:drop=0.5,weight=0.03`` -> ("tvm", {"drop": "0.5", "weight": "0.03"})."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"empty defence name in {text!r}", "write NAME or NAME:key=value,...")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"defence parameter {item!r} in {text!r} is not key=value")
        params[key.strip()] = value.strip()
    return name, params


def get_defense(name: str, **params: Any) -> Defense:
    """Build the registered defence ``name`` with ``params``."""
    cls = get_registry().get("defense", name)
    try:
        defense = cls(**params)
    except TypeError as exc:
        raise PluginError(f"cannot build defence {name!r}: {exc}") from None
    if not isinstance(defense, Defense):
        raise PluginError(f"plugin {name!r} is not an advaudit Defense")
    return defense


def build_stack(specs: list[str] | tuple[str, ...]) -> list[Defense]:
    """Defences from ``--defense`` texts, applied in the order given."""
    return [get_defense(name, **params) for name, params in map(parse_defense, specs)]
