"""TorchScript models, loaded with ``torch.jit.load`` (never ``torch.load``: nothing is unpickled
outside TorchScript's own restricted loader).  The module is both the deployment runtime and the
differentiable path.  A TorchScript archive does not record its input shape: it comes from the spec
(``--input-shape``, the YAML spec, or ``input_shape`` in the archive's ``advaudit.json`` extra file)
or from the data.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..spec import read_spec_file, resolve_spec
from .base import LoadOptions, Model, flat_outputs

EXTRA_FILE = "advaudit.json"
PROBE = 16
PASS_THROUGH = ("aten::view", "aten::reshape", "aten::flatten", "aten::squeeze", "aten::contiguous")
ACTIVATIONS = {"aten::softmax": "Softmax", "aten::sigmoid": "Sigmoid"}


class _LogitsModule(torch.nn.Module):
    """``module`` with its final softmax/sigmoid cut off: ``forward`` returns the logits."""

    def __init__(self, module: Any, fn: Any) -> None:
        super().__init__()
        self.module = module
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(self.module._c, x)

    @property
    def full_module(self) -> Any:
        """The script module with its final activation (what an export writes)."""
        return self.module

    def __deepcopy__(self, memo: dict[int, Any]) -> _LogitsModule:
        """A copy over a copy of the module (the graph function itself cannot be copied)."""
        module = copy.deepcopy(self.module, memo)
        found = _logits_function(module)
        if found is None:  # pragma: no cover - the copy has the same graph
            raise ModelError("cannot copy the logits part of the TorchScript module")
        return _LogitsModule(module, found[0])


def _logits_function(module: Any) -> tuple[Any, str, str] | None:
    """``(function, activation, tensor)`` computing the input of ``module``'s final softmax/sigmoid.

    The function is a copy of ``forward``'s graph whose return is the activation's input; it is
    called as ``function(module._c, x)``.  None when the graph does not end that way.
    """
    try:
        graph = module.graph.copy()
    except Exception:  # a module without a forward graph
        return None
    ret = graph.return_node()
    if len(list(ret.inputs())) != 1:
        return None
    node = ret.inputsAt(0).node()
    while node.kind() in PASS_THROUGH:
        node = node.inputsAt(0).node()
    activation = ACTIVATIONS.get(node.kind())
    if activation is None:
        return None
    if activation == "Softmax":
        dim = node.inputsAt(1).toIValue() if node.inputsAt(1).node().kind() == "prim::Constant" else None
        if dim not in (1, -1):
            return None
    source = node.inputsAt(0)
    ret.replaceInput(0, source)
    torch._C._jit_pass_dce(graph)
    try:
        fn = torch._C._create_function_from_graph("forward_logits", graph)
    except Exception:
        return None
    return fn, activation, source.debugName()


_ITEM_SIZES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1, "Byte": 1,
    "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4,
    "float64": 8, "double": 8, "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "int64": 8,
    "long": 8, "int32": 4, "int": 4, "int16": 2, "short": 2, "int8": 1, "uint8": 1, "bool": 1, "complex64": 8,
    "complex128": 16, "qint8": 1, "quint8": 1, "qint32": 4,
}
"""Bytes per element of a storage type (``torch.FloatStorage``) or dtype (``torch.float32``) in a pickle."""
_PICKLED_RECORDS = {"data.pkl": "data", "constants.pkl": "constants"}  # traced_inputs/ is written empty, never read


class _Storage:
    def __init__(self, pid: Any) -> None:
        self.pid = pid


class _InertUnpickler(pickle.Unpickler):
    """Reads a TorchScript pickle without importing or calling anything: every global is an inert stub
    class, every storage reference (``persistent_load``) a :class:`_Storage`.  Collects the storages and
    the arguments of ``_rebuild_tensor_v2`` calls, so their sizes can be checked against the archive."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[Any] = []
        self.tensors: list[tuple[Any, ...]] = []

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        tensors = self.tensors

        class Stub:
            qualname = full

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                if full in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"):
                    tensors.append(args)
                return object.__new__(cls)

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __setstate__(self, state: Any) -> None:
                pass

            def __setitem__(self, key: Any, value: Any) -> None:
                pass

            def append(self, value: Any) -> None:
                pass

            def extend(self, values: Any) -> None:
                pass

        return Stub

    def persistent_load(self, pid: Any) -> Any:
        self.storages.append(pid)
        return _Storage(pid)


def check_storages(path: Path, members: dict[str, int]) -> None:
    """Refuse an archive whose tensors need more bytes than their records hold: ``torch.jit.load`` reads
    past the end of a short record (a crash of the whole process, not an exception)."""
    roots = {name.split("/", 1)[0] for name in members if "/" in name}
    for root in roots:
        for pkl, folder in _PICKLED_RECORDS.items():
            name = f"{root}/{pkl}"
            if name not in members:
                continue
            with zipfile.ZipFile(path) as zf:
                data = zf.read(name)
            reader = _InertUnpickler(data)
            try:
                reader.load()
            except Exception as exc:  # noqa: BLE001 - a pickle this simple reader cannot follow is not TorchScript's
                raise ModelError(f"cannot load TorchScript model {path.name}: {pkl} is damaged "
                                 f"({first_line(exc, 120)})") from None
            for pid in reader.storages:
                if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                    raise ModelError(f"cannot load TorchScript model {path.name}: {pkl} has a malformed storage")
                stype, key, numel = pid[1], str(pid[2]), pid[4]
                kind = getattr(stype, "qualname", "").removeprefix("torch.").removesuffix("Storage")
                size = _ITEM_SIZES.get(kind)
                record = f"{root}/{folder}/{key}"
                if not isinstance(numel, int) or numel < 0 or record not in members or (
                        size is not None and numel * size > members[record]):
                    raise ModelError(f"cannot load TorchScript model {path.name}: storage {folder}/{key[:40]} does not "
                                     f"hold the {numel if isinstance(numel, int) else '?'} values its tensors need")
            for args in reader.tensors:
                _check_view(path, args)


def _check_view(path: Path, args: tuple[Any, ...]) -> None:
    """A tensor view (storage, offset, size, stride) must lie inside its storage."""
    if len(args) < 4 or not isinstance(args[0], _Storage):
        return
    numel = args[0].pid[4] if isinstance(args[0].pid, tuple) and len(args[0].pid) >= 5 else None
    offset, size, stride = args[1], args[2], args[3]
    if not (isinstance(numel, int) and isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) for v in (*size, *stride))):
        raise ModelError(f"cannot load TorchScript model {path.name}: a tensor has a malformed shape")
    if any(v < 0 for v in (offset, *size, *stride)):
        raise ModelError(f"cannot load TorchScript model {path.name}: a tensor has a negative size or stride")
    if all(size) and offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 > numel:
        raise ModelError(f"cannot load TorchScript model {path.name}: a tensor reaches past the end of its storage")


class TorchScriptModel(Model):
    """A TorchScript classifier; gradients are native."""

    reduced_search = True

    format = "torchscript"

    def __init__(self, path: str | Path, opts: LoadOptions) -> None:
        path = Path(path)
        if not zipfile.is_zipfile(path):
            raise ModelError(
                f"{path.name} is not a TorchScript archive",
                "advaudit loads TorchScript (torch.jit.save) or ONNX; export pickled checkpoints to one of them",
            )
        try:  # torch reads each record whole: bound what the archive inflates to (a zip bomb)
            with zipfile.ZipFile(path) as zf:
                members = {info.filename: info.file_size for info in zf.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            text = first_line(exc, 300)
            raise ModelError(f"cannot load TorchScript model {path.name}: {text}") from None
        if sum(members.values()) > opts.max_size_mb * 2**20:
            raise ModelError(f"{path.name} unpacks to more than {opts.max_size_mb:.3g} MB",
                             "raise it with --max-model-size")
        try:
            check_storages(path, members)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            text = first_line(exc, 300)
            raise ModelError(f"cannot load TorchScript model {path.name}: {text}") from None
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=opts.device, _extra_files=extra)
        except Exception as exc:
            text = first_line(exc, 300)
            raise ModelError(f"cannot load TorchScript model {path.name}: {text}") from None
        metadata: dict[str, Any] = {}
        if extra[EXTRA_FILE]:
            try:
                metadata = json.loads(extra[EXTRA_FILE])
            except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise ModelError(f"{path.name}: the embedded {EXTRA_FILE} is not valid JSON") from None
            if not isinstance(metadata, dict):
                raise ModelError(f"{path.name}: the embedded {EXTRA_FILE} must be a JSON object")
        spec = resolve_spec(opts.spec_flags, read_spec_file(opts.spec_file) if opts.spec_file else None, metadata)
        super().__init__(path, spec, opts.device)
        self._module = module.eval()
        self._fast: Any = False  # the frozen query copy: False = not built yet, None = unavailable
        found = _logits_function(self._module)
        self._logits_fn = None
        if found is not None:
            self._logits_fn, activation, tensor = found
            self.details["logits_from"] = f"the input of the final {activation} (%{tensor})"
            self.details["final_activation"] = activation
        if spec.input_shape is not None:
            self.input_shape = spec.input_shape
            self._after_shape_known()

    def _after_shape_known(self) -> None:
        self._finish_probe()
        self._probe_native_gradients("native TorchScript autograd", (RuntimeError,), 200)

    def _deploy_forward(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._torch_forward(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()

    def _deploy_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._deploy_forward(x)
        if self._logits_fn is None:
            return out.argmax(axis=1), out
        # The real output's labels: the same activation on the same logits, computed by the same kernel.
        z = torch.from_numpy(out)
        real = torch.softmax(z, dim=1) if self.details["final_activation"] == "Softmax" else torch.sigmoid(z)
        return real.argmax(dim=1).numpy(), out

    def _query_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._deploy_pair(x) if self._logits_fn is not None else super()._query_pair(x)

    def _query_forward(self, x: np.ndarray) -> np.ndarray:
        fast = self._fast_module()
        if fast is None:
            return self._deploy_forward(x)
        with torch.inference_mode():
            out = fast(self.to_model_input(torch.from_numpy(x).to(self.device)))
        return flat_outputs(out, x.shape[0]).float().cpu().numpy()

    def _fast_module(self) -> Any:
        """A frozen, inference-optimised copy (fused conv+ReLU, prepacked weights), or None.

        Built on first use and kept only if it agrees with the loaded module on a probe batch to
        within 1e-4 of the output scale; otherwise (or if freezing fails) queries use the module.
        """
        if self._fast is not False:
            return self._fast
        self._fast = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fast = torch.jit.optimize_for_inference(torch.jit.freeze(self._module.eval()))
                probe = self.probe_inputs(PROBE, seed=4)
                ref = self._deploy_forward(probe)
                with torch.inference_mode():
                    got = fast(self.to_model_input(torch.from_numpy(probe).to(self.device)))
                got = flat_outputs(got, len(probe)).float().cpu().numpy()
        except Exception:  # freezing is an optimisation; any failure falls back to the module
            return None
        scale = max(1.0, float(np.max(np.abs(ref))))
        if got.shape == ref.shape and float(np.max(np.abs(got - ref))) <= 1e-4 * scale:
            self._fast = fast
        return self._fast

    def torch_module(self) -> torch.nn.Module | None:
        if not self.gradients.available:
            return None
        return self._module if self._logits_fn is None else _LogitsModule(self._module, self._logits_fn)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            xm = self.to_model_input(x)
            out = self._module(xm) if self._logits_fn is None else self._logits_fn(self._module._c, xm)
        except RuntimeError:
            raise ModelError(
                f"{self.path.name} fails on inputs of shape {tuple(x.shape)}",
                "check the data shape, --input-shape and --layout",
            ) from None
        return flat_outputs(out, x.shape[0])
