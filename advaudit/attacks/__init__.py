"""Adversarial attacks: one small module per attack, all built on :class:`~advaudit.attacks.base.Attack`.

Attacks are registered as ``attack`` plugins in the entry-point group ``advaudit.plugins``;
:func:`get_attack` builds one by name with keyword parameters.
"""

from __future__ import annotations

from typing import Any

from ..params import build
from .base import Attack, AttackContext, AttackOutput, lp_norm
from .geometry import project_delta

__all__ = ["Attack", "AttackContext", "AttackOutput", "get_attack", "lp_norm", "project_delta"]


def get_attack(name: str, **params: Any) -> Attack:
    """Build the registered attack ``name`` with ``params``."""
    return build("attack", name, Attack, params)
