"""Hyperparameters shared by every configurable component (attacks, defences).

A component declares ``defaults`` (name -> default value) and, for type checkers, an annotation per
parameter (``steps: int``); ``Component(steps="40")`` takes keyword arguments only, checks the names,
casts strings from the command line (``NAME:key=value``) to the default's type, and sets each value as
an instance attribute (``self.steps``).  Errors are one-line :class:`PluginError` messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import PluginError, UsageError


class Parametrised:
    """Mixin: hyperparameters from ``defaults``, validated and cast, readable as attributes."""

    name: ClassVar[str] = "?"
    noun: ClassVar[str] = "component"  # how errors name the kind ("attack", "defence")
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            known = ", ".join(f"{k}={v}" for k, v in self.defaults.items()) or "none"
            raise PluginError(f"{self.noun} {self.name!r} has no parameter {sorted(unknown)[0]!r}",
                              f"parameters: {known}")
        self.params: dict[str, Any] = dict(self.defaults)
        for key, value in params.items():
            self.params[key] = coerce(f"{self.noun} {self.name!r}", key, value, self.defaults[key])
        for key, value in self.params.items():
            setattr(self, key, value)
        self.check_params()

    def check_params(self) -> None:
        """Override to validate hyperparameters (raise :class:`PluginError`)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def coerce(owner: str, key: str, value: Any, default: Any) -> Any:
    """Cast a CLI string (``steps=40``) to the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            return float(value)
    except ValueError:
        kind = "bool" if isinstance(default, bool) else type(default).__name__ if default is not None else "number"
        raise PluginError(f"{owner}: {key}={value!r} is not a valid {kind}") from None
    return value


def parse_spec(text: str, noun: str) -> tuple[str, dict[str, str]]:
    """``NAME:key=value,...`` (``pgd:steps=20``, ``tvm:drop=0.5``) -> (name, {key: value})."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"empty {noun} name in {text!r}", "write NAME or NAME:key=value,...")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{noun} parameter {item!r} in {text!r} is not key=value")
        params[key.strip()] = value.strip()
    return name, params


def build(kind: str, name: str, base: type, params: dict[str, Any]) -> Any:
    """Instantiate the registered component ``name`` of ``kind``, checking it derives from ``base``."""
    from .registry import get_registry

    noun = getattr(base, "noun", kind)
    cls = get_registry().get(kind, name)
    try:
        component = cls(**params)
    except TypeError as exc:
        raise PluginError(f"cannot build {noun} {name!r}: {exc}") from None
    if not isinstance(component, base):
        raise PluginError(f"plugin {name!r} is not an advaudit {base.__name__}")
    return component
