"""Reading the text documents a user hands advaudit without trusting them.

Audit configurations and input specs (YAML), calibrations, reports and baselines (JSON) may come from
anywhere.  :func:`read_text` reads only a regular file of bounded size (never a device such as
``/dev/zero`` or a FIFO, which would never end or never start) as UTF-8; :func:`parse_json` and
:func:`parse_yaml` turn documents nested too deeply for Python's recursive parsers, and YAML alias bombs
("billion laughs": a few anchors that expand to billions of nodes) or self-referencing aliases, into one
:class:`~advaudit.errors.AdvauditError` line instead of a crash or a hang.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from .errors import AdvauditError, DataError

MAX_DOCUMENT_BYTES = 256 * 2**20
"""Largest JSON or YAML document read (reports of big audits stay far below)."""
MAX_YAML_NODES = 1_000_000
"""Largest YAML document, counted with every alias expanded."""


def read_text(
    path: str | Path,
    what: str,
    *,
    error: type[AdvauditError] = DataError,
    missing: tuple[str, str | None] | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> str:
    """The UTF-8 text of the regular file ``path``; ``error`` (one line) otherwise.

    ``what`` names the document in messages (``"calibration file"``); ``missing`` is the message and hint
    for a file that does not exist (default: ``"<what> not found: <path>"``)."""
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        message, hint = missing or (f"{what} not found: {p}", None)
        raise error(message, hint) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"cannot read {what} {str(p)[:200]}: {os_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {p} is a folder", "give a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {p} is not a regular file (a device or a pipe)", "give a file")
    if info.st_size > max_bytes:
        raise error(f"{what} {p} is {info.st_size / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB allowed")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {os_reason(exc)}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {p} is more than the {max_bytes / 2**20:.0f} MB allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p} is not UTF-8 text (byte {exc.start})") from None


def os_reason(exc: BaseException) -> str:
    """The short reason of an OS error (``strerror``), else its first line, else its type name."""
    return getattr(exc, "strerror", None) or next(iter(str(exc).splitlines()), "") or type(exc).__name__


def parse_json(text: str, what: str, *, error: type[AdvauditError] = DataError) -> Any:
    """``json.loads(text)``; nesting too deep for the parser is ``error``, as is a syntax error
    (:class:`json.JSONDecodeError` is left to callers that word it themselves: it is re-raised)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{what} is nested too deeply to be read") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # an integer of more than 4300 digits (int_max_str_digits)
        raise error(f"{what} cannot be read ({next(iter(str(exc).splitlines()), '')[:120]})") from None


def parse_yaml(text: str, what: str, *, error: type[AdvauditError] = DataError, max_nodes: int = MAX_YAML_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing documents nested too deeply, aliases that refer to themselves,
    and documents that expand to more than ``max_nodes`` nodes (alias bombs).  YAML syntax errors
    (:class:`yaml.YAMLError`) are left to the caller."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise error(f"{what} is nested too deeply to be read") from None
    except yaml.YAMLError:
        raise
    except ValueError as exc:  # an integer of more than 4300 digits
        raise error(f"{what} cannot be read ({next(iter(str(exc).splitlines()), '')[:120]})") from None
    size = expanded_size(data, max_nodes)
    if size is None:
        raise error(f"{what} holds an alias that contains itself (a recursive YAML structure)")
    if size > max_nodes:
        raise error(
            f"{what} expands to more than {max_nodes:,} values through its aliases (&anchor / *alias)",
            "write the values out; YAML alias bombs are refused",
        )
    return data


def expanded_size(root: Any, limit: int) -> int | None:
    """How many values ``root`` holds with shared sub-trees counted every time they occur (as a JSON
    encoder or a schema validator would walk it), capped at ``limit + 1``; None for a cyclic structure.
    Linear in the number of distinct containers: never expands anything."""
    done: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, (list, dict)):
            continue
        key = id(node)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if finished:
            total = 1 + sum(done.get(id(c), 1) if isinstance(c, (list, dict)) else 1 for c in children)
            done[key] = min(total, limit + 1)
            active.discard(key)
            continue
        if key in done:
            continue
        if key in active:
            return None
        active.add(key)
        stack.append((node, True))
        for child in children:
            if isinstance(child, (list, dict)):
                if id(child) in active:
                    return None
                if id(child) not in done:
                    stack.append((child, False))
    return done.get(id(root), 1)
