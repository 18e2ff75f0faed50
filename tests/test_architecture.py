"""Architecture rules of the ``advaudit`` package, read from the source (no import needed):

- no import cycle between subpackages (top-level, lazy and ``TYPE_CHECKING`` imports all count);
- ``report`` is the top-level report pipeline: it imports nothing from the packages that compute results,
  and those write their files through ``io``, never through ``report``;
- ``report`` and ``io`` never import torch (rendering a report needs only the report);
- no module over 400 lines.

Each allowlist names what another change is still fixing, with the reason. The allowlists may only shrink:
an entry that no longer matches anything fails the test, so it is deleted together with its fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "advaudit"
MAX_LINES = 400

# (importing module, imported subpackage): edges that break a layer rule, until their fix lands.
EDGE_ALLOWLIST: dict[tuple[str, str], str] = {
}

# Modules of report/ and io/ that may still import torch.
TORCH_ALLOWLIST: dict[str, str] = {
    "report/writer.py": "versions() records torch.__version__ in the envelope; the envelope moves to jobs/",
}

# Modules over MAX_LINES lines, until they are split.
SIZE_ALLOWLIST: dict[str, str] = {}

# Packages that compute results (and import torch) and the packages that must not be imported by report/.
COMPUTE = ("attacks", "backdoor", "data", "defenses", "models")
WRITERS = ("attacks", "backdoor", "defenses", "detect", "harden")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _unit(rel_module: str) -> str:
    """The subpackage (or top-level module) a dotted path inside ``advaudit`` belongs to."""
    head = rel_module.split(".")[0]
    return head.removesuffix(".py")


def _package_of(path: Path) -> list[str]:
    """The dotted package holding ``path``, relative to ``advaudit`` (``[]`` for top-level modules)."""
    return list(path.relative_to(PACKAGE).parts[:-1])


@lru_cache(maxsize=None)
def _imports(path_str: str) -> tuple[str, ...]:
    """Every ``advaudit`` module or name ``path`` imports, as a path relative to the package, e.g. ``report.writer``.

    Walks the whole tree, so imports inside functions and under ``if TYPE_CHECKING:`` count too."""
    path = Path(path_str)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=path_str)
    base = _package_of(path)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name.removeprefix("advaudit.") for a in node.names if a.name.startswith("advaudit.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and (node.module == "advaudit" or node.module.startswith("advaudit.")):
                    mod = node.module.removeprefix("advaudit").lstrip(".")
                    found += [f"{mod}.{a.name}".lstrip(".") for a in node.names]
                continue
            anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            prefix = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            found += [f"{prefix}.{a.name}".lstrip(".") for a in node.names]
    return tuple(found)


def _torch_imports(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def _units() -> set[str]:
    return {_unit(_rel(p).replace("/", ".")) for p in _modules()} - {"__init__"}


def _edges() -> dict[tuple[str, str], list[str]]:
    """(from unit, to unit) -> the modules that import along that edge."""
    units = _units()
    edges: dict[tuple[str, str], list[str]] = {}
    for path in _modules():
        src = _unit(_rel(path).replace("/", "."))
        for target in _imports(str(path)):
            dst = _unit(target)
            if dst in units and dst != src and src != "__init__":
                edges.setdefault((src, dst), []).append(_rel(path))
    return edges


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _allowed(module: str, unit: str) -> bool:
    return (module, unit) in EDGE_ALLOWLIST


def test_no_cycle_between_subpackages() -> None:
    edges = {
        edge for edge, modules in _edges().items()
        if not all(_allowed(m, edge[1]) for m in modules)
    }
    assert _cycles(edges) == [], "import cycle between advaudit subpackages (lazy and TYPE_CHECKING imports count)"


def test_report_imports_no_compute_package() -> None:
    bad = sorted(
        f"{m} -> {dst}" for (src, dst), modules in _edges().items() if src == "report" and dst in COMPUTE
        for m in modules if not _allowed(m, dst)
    )
    assert bad == [], "report/ renders reports; the builders that need results live in jobs/"


def test_lower_packages_write_through_io_not_report() -> None:
    bad = sorted(
        f"{m} -> report" for (src, dst), modules in _edges().items() if dst == "report" and src in WRITERS
        for m in modules if not _allowed(m, dst)
    )
    assert bad == [], "write files through advaudit.io; report/ is the top layer"


def test_report_and_io_never_import_torch() -> None:
    bad = sorted(
        _rel(p) for p in _modules()
        if _rel(p).split("/")[0] in ("report", "io") and _torch_imports(p) and _rel(p) not in TORCH_ALLOWLIST
    )
    assert bad == []


def test_io_and_renderers_load_without_torch() -> None:
    code = ("import sys, advaudit.io, advaudit.report.render, advaudit.report.fmt, advaudit.report.svg; "
            "import advaudit.report.html, advaudit.report.markdown, advaudit.report.junit, advaudit.report.roc, "
            "advaudit.report.table; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_no_module_over_400_lines() -> None:
    sizes = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    over = sorted(f"{m}: {n}" for m, n in sizes.items() if n > MAX_LINES and m not in SIZE_ALLOWLIST)
    assert over == [], f"modules over {MAX_LINES} lines"


@pytest.mark.parametrize("allowlist", ["edges", "torch", "size"])
def test_allowlists_only_shrink(allowlist: str) -> None:
    """Every allowlist entry still matches something: a fixed entry must be deleted, never left to hide a new one."""
    if allowlist == "edges":
        live = {(m, dst) for (_, dst), modules in _edges().items() for m in modules}
        stale = sorted(set(EDGE_ALLOWLIST) - live)
    elif allowlist == "torch":
        stale = sorted(m for m in TORCH_ALLOWLIST if not _torch_imports(PACKAGE / m))
    else:
        stale = sorted(m for m in SIZE_ALLOWLIST
                       if not (PACKAGE / m).is_file()
                       or len((PACKAGE / m).read_text(encoding="utf-8").splitlines()) <= MAX_LINES)
    assert stale == [], "fixed: delete these allowlist entries"
