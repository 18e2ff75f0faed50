"""torch.export programs: ``.pt2`` files written by ``torch.export.save``, the successor of TorchScript.

``ExportedProgram.module()`` (an FX ``GraphModule``) is both the deployment runtime and the
differentiable path, as the script module is for TorchScript.

**What ``torch.export.load`` executes (torch 2.14).**  It calls
``torch.export.pt2_archive._package.load_pt2`` on a zip archive.  The graph (``models/model.json``) and the
weight and constant tables (``data/weights/model_weights_config.json``, ``data/constants/...``) are JSON and
plain tensors are raw bytes, but the same loader also:

* unpickles weights and constants marked ``use_pickle`` with ``torch.load(weights_only=False)``
  (``_load_state_dict``, ``_load_constants``), ``custom_obj_*`` constants with ``torch._C._pickle_load_obj`` and
  ``opaque_obj_*`` constants with ``pickle.loads``;
* unpickles the example inputs (``data/sample_inputs/model.pt``) with ``torch.load(weights_only=True)`` and, if
  that fails, again with ``weights_only=False`` (``torch._export.serde.serialize.deserialize_torch_artifact``);
* loads AOTInductor shared libraries found under ``data/aotinductor/`` (``_load_aoti``: native code);
* when the new layout fails with a ``RuntimeError``, falls back to the legacy layout, whose weights go
  through ``deserialize_torch_artifact`` as well;
* parses symbolic shape expressions from the JSON with ``sympy.sympify`` (``eval``:
  ``GraphModuleDeserializer._parse_sym_expr``) and resolves node targets by attribute path from ``torch``,
  ``operator`` and ``math`` (``deserialize_operator``), so a target may be any reachable callable.

``ExportedProgram.module()`` then ``exec``\\ s Python generated from the graph (node names, attribute paths,
``forward`` argument names: FX code generation) and, by default (``check_guards=True``), compiles the
program's ``guards_code`` strings into a guard function that runs on every call of the module
(``torch.export._unlift._convert_guards_code_to_fn``).

So :func:`~advaudit.models.export_archive.check_archive` reads the file into memory once and refuses it
*before torch sees it* unless
everything torch would unpickle, import or evaluate is inert: no pickled, TorchBind or opaque payloads, no
AOTInductor or legacy members (only the members ``torch.export.save`` writes), example inputs that load with
``torch.load(weights_only=True)`` (so torch's ``weights_only=False`` fallback is never reached), only ATen
operators (minus file and print ops) and shape arithmetic as node targets, identifiers as names and attribute
paths, and symbolic expressions made of numbers, operators, symbol names and a fixed list of sympy functions.
:func:`load_program` then calls ``torch.export.load`` on a zip re-packed from exactly the checked members (so
torch's zip reader cannot see anything else; member names that clash, even only in case, are refused) and
:func:`program_module` builds the module with ``check_guards=False`` (no ``guards_code`` is executed; torch
checks input shapes in a pre-hook).

Input shape and batch: the spec (``--input-shape``, YAML, or ``input_shape`` in the archive's ``advaudit.json``
extra file, written with ``torch.export.save(..., extra_files={"advaudit.json": ...})``) or the static
dimensions of the program's input placeholder.  Exporters must declare the batch dimension dynamic
(``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``); a program exported without it only runs with its
example's batch size, and advaudit pads and loops in batches of that size (``fixed_batch``/``torch_batch``).

A program exported in train mode (batch norm on batch statistics, dropout on) is rewritten to eval mode: the
``training`` flags of its batch-norm and dropout ops are set to False and the ``num_batches_tracked`` updates
removed; ``details["train_mode_rewrites"]`` says what changed.  A final softmax is cut off (on the module,
never on the loaded program): both paths return the tensor that feeds it (``details["logits_from"]``, the FX
node's name; ``output_kind`` is ``logits``), and :meth:`ExportedProgramModel.predict` reads the labels off the
softmax of those logits, the real output.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..spec import read_spec_file, resolve_spec
from .base import LoadOptions, Model, flat_outputs, run_padded
from .export_archive import EXTRA_FILE, check_archive

_SOFTMAX = ("aten.softmax.int", "aten._softmax.default")
# ops whose ``training`` flag (argument index, name) decides batch statistics / dropout
_BATCH_NORMS = ("aten.batch_norm.default", "aten.native_batch_norm.default", "aten._native_batch_norm_legit.default",
                "aten._native_batch_norm_legit_functional.default", "aten.cudnn_batch_norm.default",
                "aten.miopen_batch_norm.default")
_DROPOUTS = ("aten.dropout.default", "aten.feature_dropout.default", "aten.alpha_dropout.default",
             "aten.feature_alpha_dropout.default", "aten.native_dropout.default")


# --------------------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Keep torch's load-time warnings and logged tracebacks off the console (errors surface as ModelError)."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_program(data: bytes, name: str, max_bytes: float = float("inf")) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """Check ``data`` (a whole .pt2 file) and load it: ``(ExportedProgram, extra files, facts)``."""
    facts = check_archive(data, name, max_bytes)
    try:
        with _quiet_torch():
            ep = torch.export.load(io.BytesIO(facts.pop("archive")))
    except Exception as exc:
        raise ModelError(f"cannot load torch.export program {name}: {first_line(exc, 300)}") from None
    return ep, dict(facts["extra_files"]), facts


def program_module(ep: Any, name: str = "the program") -> torch.fx.GraphModule:
    """``ep.module(check_guards=False)`` with ``nn.Module``'s own ``train``/``eval``.

    ``check_guards=False``: the program's ``guards_code`` is not executed (input shapes are still checked
    by torch's pre-hook).  torch 2.14 replaces ``train``/``eval`` on the module by methods that raise; the
    ops carry the mode they were exported in (see :func:`to_eval_mode`), so here, as for traced
    TorchScript, switching modes only sets the ``training`` flags.
    """
    try:
        with _quiet_torch():
            gm = ep.module(check_guards=False)
    except Exception as exc:
        raise ModelError(f"cannot build a module from torch.export program {name}: {first_line(exc, 300)}") from None
    for attr in ("train", "eval"):
        if attr in gm.__dict__:
            delattr(gm, attr)
    return gm


def _target_name(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def _flag(node: torch.fx.Node, index: int, key: str) -> Any:
    if key in node.kwargs:
        return node.kwargs[key]
    return node.args[index] if len(node.args) > index else None


def _set_flag(node: torch.fx.Node, index: int, key: str, value: Any) -> None:
    if key in node.kwargs:
        node.update_kwarg(key, value)
    else:
        node.update_arg(index, value)


def to_eval_mode(gm: torch.fx.GraphModule) -> list[str]:
    """Rewrite train-mode batch norm and dropout ops of ``gm`` to eval mode; return what changed."""
    changed: set[str] = set()
    for node in list(gm.graph.nodes):
        target = _target_name(node)
        if target in _BATCH_NORMS and _flag(node, 5, "training") is True and _flag(node, 3, "running_mean") is not None:
            _set_flag(node, 5, "training", False)  # running statistics; without them eager eval uses batch stats too
            changed.add("batch norm uses its running statistics")
        elif target in _DROPOUTS and _flag(node, 2, "train") is True:
            _set_flag(node, 2, "train", False)
            changed.add("dropout off")
    if changed:  # the running-statistics counter update of train-mode batch norm
        for node in list(gm.graph.nodes):
            arg0 = node.args[0] if node.op == "call_function" and node.args else None
            if (isinstance(arg0, torch.fx.Node) and arg0.op == "get_attr" and not node.users
                    and str(arg0.target).endswith("num_batches_tracked") and _target_name(node).split(".")[1:2] in (
                        ["add_"], ["copy_"])):
                gm.graph.erase_node(node)
                changed.add("num_batches_tracked updates removed")
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return sorted(changed)


def cut_final_softmax(gm: torch.fx.GraphModule) -> tuple[str, int] | None:
    """If ``gm``'s (first) output is a softmax over its last dimension, return its input instead.

    Returns ``(name of the node feeding the softmax, softmax dim)``, or None (``gm`` unchanged).
    """
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    flat = output.args[0]
    first = flat[0] if isinstance(flat, (tuple, list)) and flat else flat
    if not isinstance(first, torch.fx.Node) or _target_name(first) not in _SOFTMAX:
        return None
    src, dim = first.args[0], _flag(first, 1, "dim")
    val = first.meta.get("val")
    rank = val.dim() if isinstance(val, torch.Tensor) else 2
    if not isinstance(src, torch.fx.Node) or not isinstance(dim, int) or rank < 2 or dim % rank != rank - 1:
        return None
    if isinstance(val, torch.Tensor) and any(not isinstance(d, int) or d != 1 for d in val.shape[1:-1]):
        return None  # (N, 1, ..., classes) only: a softmax over the classes of each sample
    new_flat = type(flat)([src, *flat[1:]]) if isinstance(flat, (tuple, list)) else src
    output.args = (new_flat, *output.args[1:])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return src.name, dim


def _finite_int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if getattr(value, "is_Integer", False) else None


def is_pt2_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip archive written by ``torch.export.save`` (whatever its suffix)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.count("/") == 1 and n.endswith("/archive_format") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


class ExportedProgramModel(Model):
    """A ``torch.export`` program (``.pt2``); gradients are native."""

    reduced_search = True

    format = "torch.export"

    def __init__(self, path: str | Path, opts: LoadOptions) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path.name}: {first_line(exc, 300)}") from None
        ep, extra, facts = load_program(data, path.name, opts.max_size_mb * 2**20)
        metadata: dict[str, Any] = {}
        if extra.get(EXTRA_FILE):
            try:
                metadata = json.loads(extra[EXTRA_FILE])
            except (ValueError, RecursionError):
                raise ModelError(f"{path.name}: the embedded {EXTRA_FILE} is not valid JSON") from None
            if not isinstance(metadata, dict):
                raise ModelError(f"{path.name}: the embedded {EXTRA_FILE} must be a JSON object")
        user_inputs = list(ep.graph_signature.user_inputs)
        if len(user_inputs) != 1:
            raise ModelError(f"{path.name} has {len(user_inputs)} inputs; advaudit audits single-input classifiers")
        placeholder = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0])
        val = placeholder.meta.get("val")
        if not isinstance(val, torch.Tensor) or not val.is_floating_point():
            raise ModelError(f"{path.name} takes {getattr(val, 'dtype', type(val).__name__)} inputs; "
                             "advaudit supports float tensor inputs")
        dims: list[int | None] = [d if isinstance(d, int) else None for d in val.shape]
        spec = resolve_spec(opts.spec_flags, read_spec_file(opts.spec_file) if opts.spec_file else None, metadata, dims)
        super().__init__(path, spec, opts.device)
        self._sha256 = hashlib.sha256(data).hexdigest()  # of the bytes that were checked and loaded
        self.extra_files = extra
        self._dims = dims
        self._batch_range: tuple[int, int | None] = (1, None)
        if dims and dims[0] is not None:
            self.fixed_batch = self.torch_batch = dims[0]
            self._batch_range = (dims[0], dims[0])
        elif dims:
            batch_dim: Any = val.shape[0]  # a SymInt
            bounds = ep.range_constraints.get(batch_dim.node.expr)
            if bounds is not None:
                self._batch_range = (max(1, _finite_int(bounds.lower) or 1), _finite_int(bounds.upper))
            if self._batch_range != (1, None):
                self.reduced_search = False  # the bf16 copy is called on whole attack batches

        gm = program_module(ep, path.name)
        rewrites = to_eval_mode(gm)
        cut = cut_final_softmax(gm)
        for p in gm.parameters():
            p.requires_grad_(False)
        self._module = gm.to(self.device)
        self.details = {
            "exported_with_torch": facts.get("torch_version"),
            "input_name": user_inputs[0],
            "input_dims": [d if isinstance(d, int) else str(d) for d in val.shape],
            "batch_range": list(self._batch_range) if dims and dims[0] is None else None,
            "final_softmax": cut is not None,
            "exported_in_train_mode": bool(rewrites),
        }
        if rewrites:
            self.details["train_mode_rewrites"] = rewrites
        if cut is not None:
            self.details["logits_from"], self.details["softmax_dim"] = cut
            self.details["final_activation"] = "Softmax"
            self.output_kind = "logits"

        shape = self._canonical_shape(dims)
        if shape is not None:
            self.input_shape = shape
            self._after_shape_known()

    def _canonical_shape(self, dims: list[int | None]) -> tuple[int, ...] | None:
        if len(dims) == 4 and self.spec.layout == "nhwc":
            dims = [dims[0], dims[3], dims[1], dims[2]]
        rest = dims[1:]
        if rest and all(isinstance(d, int) and d > 0 for d in rest):
            shape = tuple(int(d) for d in rest if d is not None)
            if self.spec.input_shape is not None and tuple(self.spec.input_shape) != shape:
                raise ModelError(f"{self.path.name} takes inputs of shape {shape}, "
                                 f"but the spec says {tuple(self.spec.input_shape)}", "fix or drop --input-shape")
            return shape
        return self.spec.input_shape

    def _after_shape_known(self) -> None:
        self._finish_probe()
        if self.details.get("final_softmax"):
            self.output_kind = "logits"
        self._probe_native_gradients("native torch.export (FX graph) autograd", (RuntimeError, ModelError), 300)

    # -------------------------------------------------------------------------------- forward
    def _call(self, xm: torch.Tensor) -> torch.Tensor:
        try:
            out = self._module(xm)
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise ModelError(f"{self.path.name} fails on inputs of shape {tuple(xm.shape)}: {first_line(exc, 200)}",
                             "check the data shape, --input-shape and --layout") from None
        return flat_outputs(out, xm.shape[0])

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        xm = self.to_model_input(x)
        dims = self._dims
        if xm.dim() != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], xm.shape[1:])):
            raise ModelError(f"{self.path.name} takes inputs of shape {['N' if d is None else d for d in dims]}, "
                             f"got {list(xm.shape)}", "check the data shape, --input-shape and --layout")
        n = xm.shape[0]
        lo, hi = self._batch_range
        if lo <= n and (hi is None or n <= hi):
            return self._call(xm)
        return run_padded(self._call, xm, hi or n, lo)  # in allowed batch sizes, short chunks padded

    def _deploy_forward(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._torch_forward(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()

    def _deploy_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, logits)``: with a final softmax cut off, the labels are read off the real output, the
        same softmax kernel on the same tensor, so exact ties in probability resolve as the file's would."""
        out = self._deploy_forward(x)
        if not self.details.get("final_softmax"):
            return out.argmax(axis=1), out
        real = torch.softmax(torch.from_numpy(out), dim=1)  # (N, classes): the cut softmax was over the classes
        return real.argmax(dim=1).numpy(), out

    def _query_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._deploy_pair(x)

    def torch_module(self) -> torch.nn.Module | None:
        return self._module if self.gradients.available else None
