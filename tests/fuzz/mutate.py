"""Byte-level and structure-level mutation.

Every function takes a :class:`random.Random` (a seeded one in the long run, Hypothesis's
``st.randoms(use_true_random=False)`` in the tests, so that failures shrink) and returns new data.

* bytes: :func:`truncate`, :func:`bit_flip`, :func:`splice`, :func:`duplicate_range`,
  :func:`overwrite_interesting`, and :func:`mutate_bytes` (one to three of them);
* zip archives (npz, TorchScript, ``.pt2``): :func:`zip_members` / :func:`make_zip`, so that a member can
  be mutated and the archive rebuilt with valid checksums;
* JSON-like trees: :func:`mutate_tree` (replace, delete, nest, change types, hostile strings and numbers).
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
import zipfile
from typing import Any, Callable

INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    struct.pack("<q", -1),
    struct.pack("<Q", 2**63),
    struct.pack(">I", 2**31 - 1),
    struct.pack("<f", float("nan")),
    struct.pack("<f", float("inf")),
    struct.pack("<d", -1e308),
]


def truncate(data: bytes, rng: random.Random) -> bytes:
    """The first k bytes, k uniform in [0, len)."""
    return data[: rng.randrange(len(data))] if data else data


def bit_flip(data: bytes, rng: random.Random) -> bytes:
    """Flip 1 to 8 random bits."""
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _span(n: int, rng: random.Random, most: int = 4096) -> tuple[int, int]:
    start = rng.randrange(n)
    return start, min(n, start + rng.randint(1, most))


def splice(data: bytes, rng: random.Random, other: bytes | None = None) -> bytes:
    """Overwrite or insert a range taken from ``other`` (default: ``data`` itself) at a random offset."""
    if not data:
        return data
    src = other or data
    a, b = _span(len(src), rng)
    at = rng.randrange(len(data))
    chunk = src[a:b]
    if rng.random() < 0.5:
        return data[:at] + chunk + data[at + len(chunk) :]
    return data[:at] + chunk + data[at:]


def duplicate_range(data: bytes, rng: random.Random) -> bytes:
    """Repeat a range 1 to 16 times in place."""
    if not data:
        return data
    a, b = _span(len(data), rng)
    return data[:b] + data[a:b] * rng.randint(1, 16) + data[b:]


def overwrite_interesting(data: bytes, rng: random.Random) -> bytes:
    """Write an interesting value (0, -1, INT_MAX, NaN, ...) at a random offset."""
    if not data:
        return data
    value = rng.choice(INTERESTING)
    at = rng.randrange(len(data))
    return data[:at] + value + data[at + len(value) :]


BYTE_OPS: dict[str, Callable[..., bytes]] = {
    "truncate": truncate,
    "bit-flip": bit_flip,
    "splice": splice,
    "duplicate": duplicate_range,
    "interesting": overwrite_interesting,
}


def mutate_bytes(data: bytes, rng: random.Random, rounds: int | None = None) -> tuple[bytes, list[str]]:
    """Apply 1 to 3 random byte operations (truncation at most once, last); return the data and their names."""
    names = [rng.choice(list(BYTE_OPS)) for _ in range(rounds or rng.randint(1, 3))]
    names = [n for n in names if n != "truncate"] + (["truncate"] if "truncate" in names else [])
    for name in names:
        data = BYTE_OPS[name](data, rng)
    return data, names


# ----------------------------------------------------------------------------------------------- zip files
def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def make_zip(members: dict[str, bytes], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


def zip_bomb_member(size: int) -> bytes:
    """``size`` zero bytes (deflated by :func:`make_zip` with ``compress=True`` to about size/1000)."""
    return bytes(size)


# ------------------------------------------------------------------------------------------------ trees
HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "../../../../etc/passwd",
    "/dev/zero",
    "/dev/urandom",
    "<script>alert(1)</script>",
    "${HOME}",
    "%s%s%s%n",
    "\u202e\u0301",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "x" * 5000,
    "nan",
    "inf",
    "-1",
    "1e400",
    "NaN",
    "null",
    "{{7*7}}",
    "'; DROP TABLE x; --",
    "\r\n",
    "\\",
    "\n" * 50,
]
HOSTILE_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    0.5,
    -0.0,
    3,
    True,
    False,
]


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of a random type: hostile numbers and strings, None, and small nested lists and dicts."""
    pick = rng.random()
    if pick < 0.06:
        return Raw(rng.choice(RAW_NUMBERS))
    if pick < 0.35:
        return rng.choice(HOSTILE_NUMBERS)
    if pick < 0.65:
        return rng.choice(HOSTILE_STRINGS)
    if pick < 0.72:
        return None
    if pick < 0.86 and depth < 3:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3:
        return {
            rng.choice(["a", "", "schema", "kind", "x" * 40]): hostile_value(rng, depth + 1)
            for _ in range(rng.randint(0, 2))
        }
    return rng.choice(HOSTILE_NUMBERS)


class Raw:
    """A JSON token written as is by :func:`dumps` (``1e400``, ``-0``, ``1E-99999``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Deep:
    """``depth`` nested lists (or ``{"a": ...}`` objects) around ``leaf``, written by :func:`dumps`
    without recursion (Python's own encoder would overflow the stack)."""

    def __init__(self, depth: int, leaf: Any = 0, kind: str = "list") -> None:
        self.depth, self.leaf, self.kind = depth, leaf, kind

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind})"


RAW_NUMBERS = ["1e400", "-1e400", "1E-99999", "-0", "0e0", "123456789012345678901234567890", "9" * 5000]


def dumps(tree: Any) -> str:
    """JSON text of ``tree``, with :class:`Raw` tokens and :class:`Deep` nesting (NaN and Infinity as
    Python's encoder writes them)."""
    if isinstance(tree, Raw):
        return tree.text
    if isinstance(tree, Deep):
        opening, closing = ("[", "]") if tree.kind == "list" else ('{"a": ', "}")
        return opening * tree.depth + dumps(tree.leaf) + closing * tree.depth
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(dumps(v) for v in tree) + "]"
    return json.dumps(tree)


def _paths(
    tree: Any, prefix: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None, limit: int = 4000
) -> list[tuple[Any, ...]]:
    """Paths of the nodes of ``tree`` (dict keys and list indices), breadth-limited to ``limit``."""
    out = [] if out is None else out
    stack = [(prefix, tree)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        out.append(path)
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def mutate_tree(tree: Any, rng: random.Random, rounds: int | None = None) -> tuple[Any, list[str]]:
    """A deep copy of ``tree`` with 1 to 4 random edits: replace a node by a hostile value, delete it,
    wrap it in deep nesting, duplicate a list item, or change its type; returns the tree and the edits."""
    tree = copy.deepcopy(tree)
    done: list[str] = []
    for _ in range(rounds or rng.randint(1, 4)):
        paths = [p for p in _paths(tree) if p]
        if not paths:
            return hostile_value(rng), done + ["root"]
        path = rng.choice(paths)
        parent, key = _get(tree, path[:-1]), path[-1]
        op = rng.choice(["replace", "replace", "replace", "delete", "nest", "duplicate", "retype"])
        where = "/".join(map(str, path))[:80]
        if op == "delete":
            del parent[key]
        elif op == "nest":
            parent[key] = Deep(rng.choice([50, 500, 3000, 100000]), parent[key], rng.choice(["list", "dict"]))
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "retype":
            value = parent[key]
            parent[key] = str(value) if not isinstance(value, str) else [value]
        else:
            parent[key] = hostile_value(rng)
        done.append(f"{op} {where}")
    return tree, done
