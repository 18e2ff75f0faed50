"""The safety check of an untrusted ``.pt2`` archive, before ``torch.export.load`` sees it.

``torch.export.load`` unpickles parts of an archive and evaluates symbolic shape expressions, so
:func:`check_archive` first reads every member itself: only the members ``torch.export.save`` writes
for one program, a plain ATen graph (no TorchBind objects, nested graphs or denied ops), shape
expressions made of known sympy names, tensor payloads of the declared sizes.  Anything else is
refused with a :class:`~advaudit.errors.ModelError`; the archive is then repacked from the checked
members only.  :mod:`advaudit.models.export_model` loads what passes.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
import zlib
from typing import Any

import torch

from ..errors import ModelError, first_line

__all__ = ["EXTRA_FILE", "MODEL_NAME", "PT2_SUFFIX", "check_archive"]

EXTRA_FILE = "advaudit.json"
PT2_SUFFIX = ".pt2"
MODEL_NAME = "model"  # torch.export.save stores its one program as models/model.json

_FIXED_MEMBERS = {
    "archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
    f"models/{MODEL_NAME}.json", f"data/sample_inputs/{MODEL_NAME}.pt",
    f"data/weights/{MODEL_NAME}_weights_config.json", f"data/constants/{MODEL_NAME}_constants_config.json",
}
_PAYLOAD_MEMBER = re.compile(r"data/(weights|constants)/[A-Za-z0-9_]+")  # raw tensor bytes: weight_N, tensor_N
_EXTRA_MEMBER = re.compile(r"extra/[^/]+")
_PAYLOAD_NAME = re.compile(r"(weight|tensor)_[0-9]+")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FQN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_FQN_KEYS = {"parameter_name", "buffer_name", "tensor_constant_name", "fqn"}
_REFUSED_KEYS = {"custom_obj_name": "a TorchBind object", "as_custom_obj": "a TorchBind object",
                 "as_graph": "a nested graph (higher-order op)"}

_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.[A-Za-z0-9_]+")
_DENIED_ATEN = {"from_file", "_print", "set", "set_", "record_stream"}  # file reads, printing, raw storage
_SHAPE_TARGETS = {f"_operator.{op}" for op in (
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt", "le", "gt", "ge",
    "and_", "or_", "not_", "abs")} | {f"math.{f}" for f in ("ceil", "floor", "trunc", "sqrt")} | {
    f"torch.sym_{f}" for f in ("float", "int", "max", "min", "not", "ite", "sqrt", "sum")}

# Symbolic shape expressions, e.g. "Symbol('s31', positive=True, integer=True)" or "FloorDiv(s0, 2) + 1".
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)|(?P<str>'[a-z]{1,5}[0-9]+')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%(),<>=&|~]))"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,5}[0-9]+")
_EXPR_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "Abs", "Mul", "Add", "Pow", "Mod", "floor", "ceiling", "sqrt", "Piecewise", "ITE", "oo", "zoo", "nan", "int_oo",
    "true", "false", "True", "False", "None", "positive", "negative", "nonnegative", "nonpositive", "integer", "real",
    "finite", "infinite", "zero", "nonzero", "even", "odd", "commutative",
    # torch.utils._sympy.functions, the deserialiser's sympify locals
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
}


def _refuse(name: str, what: str) -> ModelError:
    return ModelError(f"refused: {name} {what}",
                      "advaudit loads .pt2 files written by torch.export.save from a plain ATen graph and tensors")


def _check_expr(text: Any, name: str) -> None:
    """Refuse a symbolic expression that is more than numbers, operators, symbols and sympy functions."""
    if not isinstance(text, str) or len(text) > 4000:
        raise _refuse(name, "holds a malformed symbolic shape expression")
    pos = 0
    while pos < len(text.rstrip()):
        m = _EXPR_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _refuse(name, f"holds a symbolic shape expression torch would eval: {text[:80]!r}")
        word = m.group("name")
        if word is not None and word not in _EXPR_NAMES and not _SYMBOL_NAME.fullmatch(word):
            raise _refuse(name, f"holds a symbolic shape expression torch would eval: {text[:80]!r}")
        pos = m.end()


def _check_target(target: Any, name: str) -> None:
    if not isinstance(target, str):
        raise _refuse(name, "holds a graph node without an operator name")
    m = _ATEN_TARGET.fullmatch(target)
    if (m is not None and m.group(1) not in _DENIED_ATEN) or target in _SHAPE_TARGETS:
        return
    raise _refuse(name, f"calls {target[:120]!r}; advaudit runs ATen operators and shape arithmetic only")


def _check_tree(node: Any, name: str) -> None:
    """Names are identifiers, attribute paths dotted identifiers, expressions inert; no objects or subgraphs."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "metadata":  # stack traces and module paths: strings torch neither evaluates nor imports
                continue
            if key in _REFUSED_KEYS and value:
                raise _refuse(name, f"holds {_REFUSED_KEYS[key]}, which torch would unpickle or run")
            if key == "expr_str":
                _check_expr(value, name)
            elif key in ("name", "as_name") and isinstance(value, str) and value and not _IDENT.fullmatch(value):
                raise _refuse(name, f"holds the name {value[:80]!r}, which is not an identifier")
            elif key in _FQN_KEYS and isinstance(value, str) and value and not _FQN.fullmatch(value):
                raise _refuse(name, f"holds the attribute path {value[:80]!r}")
            elif key == "forward_arg_names" and not all(isinstance(v, str) and _IDENT.fullmatch(v)
                                                        for v in value or []):
                raise _refuse(name, "holds forward argument names that are not identifiers")
            else:
                _check_tree(value, name)
    elif isinstance(node, list):
        for value in node:
            _check_tree(value, name)


def _check_program(program: Any, name: str) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ModelError(f"{name} is not a torch.export archive (no graph in models/{MODEL_NAME}.json)")
    graph = program["graph_module"].get("graph") or {}
    if graph.get("custom_obj_values"):
        raise _refuse(name, "holds TorchBind objects, which torch would unpickle")
    for node in graph.get("nodes") or []:
        _check_target(node.get("target") if isinstance(node, dict) else None, name)
    for key in program.get("range_constraints") or {}:
        if not _SYMBOL_NAME.fullmatch(str(key)):
            raise _refuse(name, f"holds the symbol name {str(key)[:80]!r}")
    _check_tree(program, name)


def _check_payloads(config: Any, kind: str, name: str) -> None:
    """Every weight/constant must be raw tensor bytes, never a pickle."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ModelError(f"{name}: the {kind} table of the archive is malformed")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(name, f"stores the {kind[:-1]} {str(fqn)[:80]!r} as a pickle, which torch.export.load "
                                "would unpickle with weights_only=False")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not _PAYLOAD_NAME.fullmatch(path_name):
            raise _refuse(name, f"stores the {kind[:-1]} {str(fqn)[:80]!r} as {str(path_name)[:80]!r}, "
                                "not as a plain tensor (TorchBind and opaque objects are unpickled)")


def _member_reason(rel: str) -> str | None:
    """Why an archive member is refused, or None if torch.export.save writes it and it is inert."""
    if rel in _FIXED_MEMBERS or _PAYLOAD_MEMBER.fullmatch(rel) or _EXTRA_MEMBER.fullmatch(rel):
        return None
    if rel.startswith("data/aotinductor/"):
        return "AOTInductor native code, which torch.export.load would load"
    if rel.endswith((".pt", ".pkl")) or rel == "version":
        return "a legacy pickled member, which torch.export.load would unpickle"
    return "not written by torch.export.save"


def _repack(root: str, members: dict[str, bytes]) -> bytes:
    """A fresh zip of exactly the checked members (stored, in their checked form)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for rel, content in members.items():
            out.writestr(f"{root}/{rel}", content)
    return buf.getvalue()


def check_archive(data: bytes, name: str, max_bytes: float) -> dict[str, Any]:
    """Refuse a .pt2 whose loading would run anything but the checks above.

    ``data`` is the whole file.  Returns ``archive`` (the checked members re-packed into a new zip: what
    :func:`load_program` hands to torch, so torch reads exactly what was checked, whatever its zip reader
    would make of the original), ``torch_version`` (of the exporter) and ``extra_files`` (name -> text).
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelError(f"{name} is not a .pt2 archive ({first_line(exc, 300)})") from None
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise ModelError(f"{name} is not a torch.export archive (expected one top-level folder)")
    root = roots.pop()
    rels = [i.filename.split("/", 1)[1] for i in infos]
    if len({r.lower() for r in rels}) != len(rels):  # torch's zip reader looks names up case-insensitively
        raise _refuse(name, "contains two members with the same name")
    if sum(i.file_size for i in infos) > max_bytes:
        raise ModelError(f"{name} unpacks to more than {max_bytes / 2**20:.3g} MB", "raise it with --max-model-size")
    for rel in rels:
        reason = _member_reason(rel)
        if reason is not None:
            raise _refuse(name, f"contains {rel!r}: {reason}")
    try:
        members = {rel: zf.read(info) for rel, info in zip(rels, infos)}  # also checks every CRC
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelError(f"{name} is a damaged .pt2 archive ({first_line(exc, 300)})") from None

    def read(rel: str) -> bytes:
        if rel not in members:
            raise ModelError(f"{name} is not a torch.export archive (no {rel})")
        return members[rel]

    try:
        if read("archive_format").strip() != b"pt2":
            raise ModelError(f"{name} is not a torch.export archive (archive_format is not pt2)")
        program = json.loads(read(f"models/{MODEL_NAME}.json"))
        _check_program(program, name)
        for kind, rel in (("weights", f"data/weights/{MODEL_NAME}_weights_config.json"),
                          ("constants", f"data/constants/{MODEL_NAME}_constants_config.json")):
            _check_payloads(json.loads(read(rel)), kind, name)
        sample = read(f"data/sample_inputs/{MODEL_NAME}.pt")
        extra = {rel[len("extra/"):]: read(rel).decode("utf-8") for rel in members if rel.startswith("extra/")}
    except ModelError:
        raise
    except (ValueError, RecursionError, TypeError, AttributeError, KeyError, IndexError) as exc:  # JSON, UTF-8 and
        # the graph JSON's shape (a number where the checks expect a list or an object) are damage too
        raise ModelError(f"{name} is a damaged .pt2 archive ({first_line(exc, 300)})") from None
    if sample:
        try:  # the exact call torch makes first; it must succeed so torch never falls back to weights_only=False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(io.BytesIO(sample), weights_only=True)
        except Exception:
            raise _refuse(name, "has example inputs (data/sample_inputs) that torch.export.load would unpickle "
                                "with weights_only=False") from None
    return {"archive": _repack(root, members), "torch_version": program.get("torch_version"), "extra_files": extra}
