"""The input specification of a model: value range, normalisation and layout.

advaudit always hands a model its inputs as float32 NCHW tensors in the model's *natural* value range
(``range``, for example [0, 1] or [0, 255]).  The model wrapper applies ``(x - mean) / std`` and the
layout change (NCHW -> NHWC) itself, so attacks never see normalised or channels-last tensors.

Sources, highest priority first:

1. CLI flags (``--range 0,1 --mean ... --std ... --layout nchw|nhwc``);
2. a YAML file (``--spec spec.yaml``) with keys ``range``, ``mean``, ``std``, ``layout``, ``class_names``;
3. metadata embedded in the model: ONNX ``metadata_props`` keys ``advaudit.range`` ("0,1"),
   ``advaudit.mean`` and ``advaudit.std`` (comma-separated, one value or one per channel),
   ``advaudit.layout`` ("nchw" or "nhwc"), ``advaudit.class_names`` (a JSON list) and
   ``advaudit.input_shape`` ("C,H,W", needed only by TorchScript models); for TorchScript an
   extra file ``advaudit.json`` in the archive with the same keys without the prefix;
4. defaults: range [0, 1], mean 0, std 1, layout inferred from the input shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import SpecError, first_line

LAYOUTS = ("nchw", "nhwc")
SPEC_KEYS = ("range", "mean", "std", "layout", "class_names", "input_shape")


@dataclass(frozen=True)
class InputSpec:
    """Resolved input specification.

    ``mean`` and ``std`` hold one value or one per channel; ``source`` records where each field came
    from (``flag``, ``yaml``, ``metadata`` or ``default``), which ``advaudit info`` prints.
    """

    range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nchw"
    class_names: tuple[str, ...] | None = None
    input_shape: tuple[int, ...] | None = None
    source: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def lo(self) -> float:
        return self.range[0]

    @property
    def hi(self) -> float:
        return self.range[1]

    @property
    def normalises(self) -> bool:
        return any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "range": list(self.range),
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
            "class_names": list(self.class_names) if self.class_names else None,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "source": dict(self.source),
        }


def _floats(value: Any, key: str) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, (int, float)):
        parts = [str(value)]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        raise SpecError(f"{key} must be a number or a comma-separated list, got {_short(value)}")
    try:
        out = tuple(float(p) for p in parts)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{key} must be numbers, got {_short(value)}") from None
    if not out:
        raise SpecError(f"{key} is empty")
    if not all(math.isfinite(v) for v in out):
        raise SpecError(f"{key} must be finite numbers, got {_short(value)}")
    return out


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile file can hold anything)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalise_field(key: str, value: Any) -> Any:
    """Check one spec field and convert it to its canonical type."""
    if key == "range":
        lo_hi = _floats(value, "range")
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            raise SpecError(f"range must be two numbers LO,HI with LO < HI, got {_short(value)}",
                            "for example --range 0,1")
        return lo_hi
    if key in ("mean", "std"):
        vals = _floats(value, key)
        if key == "std" and any(v <= 0 for v in vals):
            raise SpecError(f"std must be positive, got {_short(value)}")
        return vals
    if key == "layout":
        layout = str(value).lower()
        if layout not in LAYOUTS:
            raise SpecError(f"layout must be one of {', '.join(LAYOUTS)}, got {_short(value)}")
        return layout
    if key == "class_names":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:  # not JSON (or an integer too long for Python to read): a comma list
                value = [v.strip() for v in value.split(",")]
            except RecursionError:
                raise SpecError("class_names is nested too deeply to be a list of names") from None
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise SpecError(f"class_names must be a list, got {_short(value)}")
        if not all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
            raise SpecError("class_names must be a list of names (strings or numbers)")
        return tuple(str(v) for v in value)
    if key == "input_shape":
        dims = _floats(value, "input_shape")
        if not 1 <= len(dims) <= 3 or any(d < 1 or d != int(d) for d in dims):
            raise SpecError(f"input_shape must be C,H,W positive integers, got {_short(value)}",
                            "for example --input-shape 1,28,28")
        return tuple(int(d) for d in dims)
    raise SpecError(f"unknown spec key {key!r}", f"valid keys: {', '.join(SPEC_KEYS)}")


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML spec file into a dict of raw fields."""
    from .safeio import parse_yaml, read_text

    p = Path(path)
    text = read_text(p, "spec file", error=SpecError, max_bytes=2**20)
    try:
        data = parse_yaml(text, f"spec file {p}", error=SpecError)
    except yaml.YAMLError as exc:
        raise SpecError(f"cannot read spec file {p}: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {p} must hold a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(map(str, set(data) - set(SPEC_KEYS)))
    if unknown:
        raise SpecError(f"spec file {p}: unknown key {_short(unknown[0])}", f"valid keys: {', '.join(SPEC_KEYS)}")
    return data


def infer_layout(input_shape: Sequence[Any]) -> str:
    """Guess NCHW vs NHWC from a 4-d input shape (dims may be symbolic strings or None)."""
    if len(input_shape) != 4:
        return "nchw"
    c_first, c_last = input_shape[1], input_shape[3]
    if isinstance(c_last, int) and c_last in (1, 3, 4) and not (isinstance(c_first, int) and c_first in (1, 3, 4)):
        return "nhwc"
    return "nchw"


def resolve_spec(
    flags: Mapping[str, Any] | None = None,
    yaml_fields: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    input_shape: Sequence[Any] = (),
) -> InputSpec:
    """Merge the spec sources, highest priority first: flags, YAML, model metadata, defaults."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for origin, fields in (("flag", flags), ("yaml", yaml_fields), ("metadata", metadata)):
        for key, value in (fields or {}).items():
            if value is None or key in values:
                continue
            try:
                values[key] = _normalise_field(key, value)
            except SpecError as exc:
                raise SpecError(f"{origin} {exc.message}", exc.hint) from None
            source[key] = origin
    if "layout" not in values:
        values["layout"] = infer_layout(input_shape)
        source["layout"] = "inferred from input shape"
    for key in ("range", "mean", "std"):
        source.setdefault(key, "default")
    spec = replace(InputSpec(), **values, source=source)
    channels = _channels(input_shape, spec.layout)
    for key in ("mean", "std"):
        n = len(getattr(spec, key))
        if n != 1 and channels is not None and n != channels:
            raise SpecError(f"{key} has {n} values but the model has {channels} input channels")
    return spec


def _channels(input_shape: Sequence[Any], layout: str) -> int | None:
    if len(input_shape) != 4:
        return None
    c = input_shape[1] if layout == "nchw" else input_shape[3]
    return c if isinstance(c, int) else None
