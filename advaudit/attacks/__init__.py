"""Adversarial attacks: one small module per attack, all built on :class:`~advaudit.attacks.base.Attack`.

Attacks are registered as ``attack`` plugins in the entry-point group ``advaudit.plugins``;
:func:`get_attack` builds one by name with keyword parameters.
"""

from __future__ import annotations

from typing import Any

from ..errors import PluginError
from ..registry import get_registry
from .base import Attack, AttackContext, AttackOutput, lp_norm, project_delta

__all__ = ["Attack", "AttackContext", "AttackOutput", "get_attack", "lp_norm", "project_delta"]


def get_attack(name: str, **params: Any) -> Attack:
    """Build the registered attack ``name`` with ``params``."""
    cls = get_registry().get("attack", name)
    try:
        attack = cls(**params)
    except TypeError as exc:
        raise PluginError(f"cannot build attack {name!r}: {exc}") from None
    if not isinstance(attack, Attack):
        raise PluginError(f"plugin {name!r} is not an advaudit Attack")
    return attack
