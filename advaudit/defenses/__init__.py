"""Input-purification defences and their honest (adaptive) evaluation.

Defences are ``defense`` plugins in the entry-point group ``advaudit.plugins`` built on
:class:`~advaudit.defenses.base.Defense`; :func:`parse_defense` reads ``NAME[:key=value,...]`` and
:func:`get_defense` builds one by name.
"""

from __future__ import annotations

from typing import Any

from ..params import build, parse_spec
from .base import Defense

__all__ = ["Defense", "get_defense", "parse_defense", "build_stack"]


def parse_defense(text: str) -> tuple[str, dict[str, str]]:
    """``tvm:drop=0.5,weight=0.03`` -> ("tvm", {"drop": "0.5", "weight": "0.03"})."""
    return parse_spec(text, "defence")


def get_defense(name: str, **params: Any) -> Defense:
    """Build the registered defence ``name`` with ``params``."""
    return build("defense", name, Defense, params)


def build_stack(specs: list[str] | tuple[str, ...]) -> list[Defense]:
    """Defences from ``--defense`` texts, applied in the order given."""
    return [get_defense(name, **params) for name, params in map(parse_defense, specs)]
