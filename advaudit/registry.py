"""The plugin registry: attacks, defences, detectors and backdoor scanners.

Every component, built-in or third-party, is an entry point in the group ``advaudit.plugins``::

    [project.entry-points."advaudit.plugins"]
    my-attack = "my_package.attack:MyAttack"

The entry point's name is the component's name; the object it points to declares its ``kind``
(``attack``, ``defense``, ``detector`` or ``backdoor-scanner``) and documents itself in its
docstring (first line = summary).  advaudit registers its own components in its own
``pyproject.toml`` exactly this way.

Nothing is loaded at import time: :func:`get_registry` loads on first use.  A plugin that fails to
import, or declares no valid kind, is listed as broken and never stops advaudit.  Set
``ADVAUDIT_LOAD_PLUGINS`` to a comma-separated list of distribution names to load only those
third-party plugins (empty: none); built-ins always load.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

from .errors import PluginError, first_line

GROUP = "advaudit.plugins"
KINDS = ("attack", "defense", "detector", "backdoor-scanner")
BUILTIN_DIST = "advaudit"


@dataclass
class PluginInfo:
    """One registered component (or a broken one, with ``error`` set)."""

    name: str
    kind: str
    origin: str
    summary: str
    target: str
    obj: Any = None
    error: str | None = None

    @property
    def builtin(self) -> bool:
        return self.origin.startswith(BUILTIN_DIST + " ")


def _summary(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _canonical(dist_name: str) -> str:
    """PEP 503 normalisation: ``My_Plugin`` and ``my-plugin`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", dist_name.strip()).lower()


def _origin(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown"
    return f"{dist.metadata['Name']} {dist.version}"


class Registry:
    """Components found through entry points, by kind and name."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        self.plugins: list[PluginInfo] = []
        self.broken: list[PluginInfo] = []
        self._load(entry_points if entry_points is not None else metadata.entry_points(group=GROUP))

    def _load(self, entry_points: Iterable[metadata.EntryPoint]) -> None:
        allow = os.environ.get("ADVAUDIT_LOAD_PLUGINS")
        allowed = None if allow is None else {_canonical(a) for a in allow.split(",") if a.strip()}
        seen: set[tuple[str, str]] = set()
        eps = sorted(entry_points, key=lambda e: (not _origin(e).startswith(BUILTIN_DIST + " "), e.name))
        for ep in eps:
            origin = _origin(ep)
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            builtin = origin.startswith(BUILTIN_DIST + " ")
            if not builtin and allowed is not None and _canonical(origin.split(" ")[0]) not in allowed:
                continue
            info = PluginInfo(ep.name, "?", origin, "", ep.value)
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must never break advaudit
                info.error = f"import failed: {type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}"
                self.broken.append(info)
                continue
            kind = getattr(obj, "kind", None)
            info.obj, info.summary = obj, _summary(obj)
            if kind not in KINDS:
                info.error = f"declares kind {kind!r}; expected one of {', '.join(KINDS)}"
                self.broken.append(info)
                continue
            info.kind = kind
            if any(p.name == ep.name and p.kind == kind for p in self.plugins):
                info.error = f"the {kind} name {ep.name!r} is already taken"
                self.broken.append(info)
                continue
            self.plugins.append(info)

    def names(self, kind: str) -> list[str]:
        return [p.name for p in self.plugins if p.kind == kind]

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name`` of ``kind``; a one-line error lists the choices."""
        for p in self.plugins:
            if p.kind == kind and p.name == name:
                return p.obj
        for p in self.broken:
            if p.name == name:
                raise PluginError(f"the {kind} {name!r} is broken: {p.error}")
        available = ", ".join(self.names(kind)) or "none installed"
        raise PluginError(f"unknown {kind} {name!r}", f"available: {available}")


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry()
    return _REGISTRY
