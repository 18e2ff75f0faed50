"""The published JSON Schema of ``advaudit.report/1`` (advaudit/schemas/report.schema.json) and its check."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from ..errors import DataError
from .writer import SCHEMA

@lru_cache(maxsize=None)
def load_schema(name: str = "report") -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) shipped as package data: ``advaudit/schemas/<name>.schema.json``
    (``report``, or ``audit-config`` for audit.yaml files)."""
    text = (resources.files("advaudit") / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def json_path(path: Iterable[Any]) -> str:
    """``deque(['steps', 0, 'metrics', 'auroc'])`` -> ``steps[0].metrics.auroc`` (``$`` for the root)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "$"


def report_errors(report: Any) -> list[str]:
    """Every schema violation as ``PATH: message``, the most relevant first."""
    from jsonschema.exceptions import best_match, relevance

    errors = list(_validator().iter_errors(report))
    if not errors:
        return []
    best = best_match(errors)
    ordered = [best] + sorted((e for e in errors if e is not best), key=relevance)
    return [f"{json_path(e.absolute_path)}: {_short(e.message)}" for e in ordered]


def validate_report(report: Any) -> None:
    """Raise :class:`DataError` naming the offending JSON path if ``report`` breaks the schema."""
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else type(report).__name__
        shown = repr(found) if isinstance(found, str) and len(found) < 80 else f"a {type(found).__name__}"
        raise DataError(f"not an advaudit report (schema {shown}, expected {SCHEMA!r})",
                        "give a JSON file written by an advaudit command's --report or by advaudit audit")
    errors = report_errors(report)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"report does not match the {SCHEMA} schema: {errors[0]}{more}")
    huge = _huge_number(report)
    if huge is not None:  # JSON allows any integer; every figure of a report is computed as a float
        raise DataError(f"report does not match the {SCHEMA} schema: {huge}: a number too large for a float")


def _huge_number(report: Any) -> str | None:
    """The JSON path of the first integer beyond the float range in ``report``, or None (no recursion)."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), report)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > 1000:
            return json_path(path)
    return None


def _short(message: str, limit: int = 160) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
