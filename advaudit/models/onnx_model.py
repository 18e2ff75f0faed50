"""ONNX models: ONNX Runtime for inference (the deployment runtime), onnx2torch for gradients.

Loading is defensive because model files come from suppliers the user may not trust:

* the file size is capped (``max_size_mb``);
* the protobuf is parsed *without* external data first, and every external-data ``location`` must
  resolve (symlinks followed) to a file inside the model's own folder, else the model is refused;
* any parse or runtime error becomes a one-line :class:`~advaudit.errors.ModelError`.

A model whose batch dimension is fixed (often 1) is first rewritten to a symbolic batch; if the graph
will not run that way, inference loops over padded batches of the fixed size.  The differentiable twin
is checked against ONNX Runtime on a probe batch; if conversion fails or disagrees, the model stays
usable in black-box mode and :attr:`Model.gradients` says why.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..spec import read_spec_file, resolve_spec
from .base import GradientInfo, LoadOptions, Model, flat_outputs
from .convert import Converted, find_logits, to_torch, with_extra_output, with_outputs

QUANT_SURROGATE_TOL = 0.5
"""Largest :func:`~advaudit.models.twin.surrogate_error` of a quantised graph's straight-through twin."""

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def check_external_data(model: Any, model_dir: Path, max_bytes: float) -> bool:
    """Refuse external-data locations outside ``model_dir``; return whether there are any."""
    import onnx

    root = model_dir.resolve()
    total = 0
    found = False
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        shown = location if len(location) <= 80 else location[:77] + "..."
        try:
            target = (root / location).resolve()
            inside = bool(location) and not Path(location).is_absolute() and target.is_relative_to(root)
            present = inside and target.is_file()
        except (OSError, RuntimeError, ValueError):  # a name too long, a NUL byte, a symlink loop
            raise ModelError(
                f"refused: tensor {tensor.name!r} keeps its data at an unusable location {shown!r}") from None
        if not inside:
            raise ModelError(
                f"refused: tensor {tensor.name!r} keeps its data at {shown!r}, outside the model's folder",
                "external data files must sit beside the model file",
            )
        if not present:
            raise ModelError(f"external data file {shown!r} of tensor {tensor.name!r} is missing or not a regular file")
        total += target.stat().st_size
    if total > max_bytes:
        raise ModelError(
            f"external data is {total / 2**20:.3g} MB, over the {max_bytes / 2**20:.3g} MB limit",
            "raise it with --max-model-size",
        )
    return found


def _providers(device: str) -> list[Any]:
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
            raise ModelError("--device cuda was asked for but no CUDA device is available", "use --device cpu")
        index = device.partition(":")[2]
        if index.isdigit():  # cuda:N (one GPU per rank when sharded)
            return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(source: str | bytes, device: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors reach the user as exceptions, not as C++ log lines
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # honour the thread cap (sharded ranks set 1 each)
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(source, sess_options=opts, providers=_providers(device))


class OnnxModel(Model):
    """An ONNX classifier run by ONNX Runtime, with an onnx2torch twin for gradients."""

    reduced_search = True

    format = "onnx"
    _twin: torch.nn.Module | None = None  # the differentiable twin, once one agrees with ONNX Runtime

    def __init__(self, path: str | Path, opts: LoadOptions) -> None:
        import onnx

        path = Path(path)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several unrelated types
            raise ModelError(f"{path.name} is not a valid ONNX file ({first_line(exc, 300)})") from None
        if not proto.graph.node:
            raise ModelError(f"{path.name} is not a valid ONNX file (empty graph)")
        if not proto.graph.output:
            raise ModelError(f"{path.name} is not a valid ONNX file (the graph has no outputs)")
        has_external = check_external_data(proto, path.parent, opts.max_size_mb * 2**20)
        if has_external:
            try:
                onnx.load_external_data_for_model(proto, str(path.parent))
            except Exception as exc:  # offsets or lengths that do not fit the file, unreadable data
                raise ModelError(f"cannot read the external data of {path.name}: {first_line(exc, 300)}") from None

        init_names = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ModelError(f"{path.name} has {len(inputs)} inputs; advaudit audits single-input classifiers")
        dims: list[Any] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in inputs[0].type.tensor_type.shape.dim
        ]
        metadata = {
            p.key.removeprefix("advaudit."): p.value for p in proto.metadata_props if p.key.startswith("advaudit.")
        }
        spec = resolve_spec(
            opts.spec_flags, read_spec_file(opts.spec_file) if opts.spec_file else None, metadata, dims
        )
        super().__init__(path, spec, opts.device)
        self._proto = proto
        self.details = {
            "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "ir_version": proto.ir_version,
            "input_name": inputs[0].name,
            "input_dims": dims,
            "output_dims": [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in proto.graph.output[0].type.tensor_type.shape.dim
            ],
        }
        # A graph ending in a softmax/sigmoid: its input is the logits, an extra output of the session.
        self._logits = find_logits(proto)
        self._run_proto = proto
        if self._logits is not None:
            self._run_proto = with_extra_output(proto, self._logits.tensor)
            self.details["logits_from"] = self._logits.describe()
            self.details["final_activation"] = self._logits.activation
        try:
            source = str(path) if self._logits is None else self._run_proto.SerializeToString()
            self._sess = _session(source, opts.device)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load {path.name}: {first_line(exc, 300)}") from None
        ort_input = self._sess.get_inputs()[0]
        self.details["input_dtype"] = ort_input.type
        if ort_input.type not in ORT_DTYPES:
            raise ModelError(f"{path.name} takes {ort_input.type} inputs; advaudit supports float inputs")
        self._in_dtype = ORT_DTYPES[ort_input.type]
        self._in_name = ort_input.name
        self._out_name = self._sess.get_outputs()[0].name
        self._out_names = [self._out_name] + ([self._logits.tensor] if self._logits is not None else [])

        shape = self._canonical_shape(dims)
        if shape is not None:
            self.input_shape = shape
        if dims and isinstance(dims[0], int) and dims[0] > 0:
            self._free_batch(dims[0], has_external, opts.device)
        self._check_gradients_later = opts.check_gradients
        if self.input_shape is not None:
            self._after_shape_known()

    # ------------------------------------------------------------------ loading
    def _canonical_shape(self, dims: list[Any]) -> tuple[int, ...] | None:
        if len(dims) == 4 and self.spec.layout == "nhwc":
            dims = [dims[0], dims[3], dims[1], dims[2]]
        rest = dims[1:]
        if rest and all(isinstance(d, int) and d > 0 for d in rest):
            return tuple(rest)
        return self.spec.input_shape

    def _free_batch(self, fixed: int, has_external: bool, device: str) -> None:
        """Try to make a fixed batch dimension symbolic; otherwise loop in fixed-size batches."""
        self.fixed_batch = fixed
        if has_external or self.input_shape is None:
            return
        proto = copy.deepcopy(self._run_proto)
        for value in list(proto.graph.input) + list(proto.graph.output):
            if not value.type.tensor_type.shape.dim:
                continue
            dim0 = value.type.tensor_type.shape.dim[0]
            dim0.Clear()
            dim0.dim_param = "batch"
        del proto.graph.value_info[:]
        try:
            sess = _session(proto.SerializeToString(), device)
            probe = self.probe_inputs(fixed + 1, seed=2)
            got = sess.run([self._out_names[-1]], {self._in_name: self._np_input(probe)})[0]
            want = np.concatenate(
                [self._deploy_forward(probe[i : i + fixed]) for i in range(0, fixed * (len(probe) // fixed), fixed)]
            )
            if got.shape[0] != len(probe) or not np.allclose(got[: len(want)], want, atol=1e-5, rtol=1e-4):
                return
        except Exception:
            return
        self._sess = sess
        self.fixed_batch = None
        self.details["batch_rewritten_from"] = fixed

    def _after_shape_known(self) -> None:
        self._finish_probe()
        if self._check_gradients_later:
            self._build_twin()

    def _build_twin(self) -> None:
        """Convert the graph (its logits part) to torch and keep the first candidate that agrees
        with ONNX Runtime on the probe batch; see :mod:`.convert`."""
        graph = self._proto if self._logits is None else with_outputs(self._proto, [self._logits.tensor])
        info = GradientInfo(False, "none", "onnx2torch could not convert the graph")
        declared = self.details["input_dims"][0] if self.details["input_dims"] else None
        for twin in to_torch(graph):
            if isinstance(twin, Exception):
                if info.note.startswith("onnx2torch could not"):
                    info.note = f"onnx2torch could not convert the graph: {first_line(twin, 300)}"
                continue
            self._twin: torch.nn.Module | None = twin.module.to(self.device)
            # A free batch first; a graph with a baked-in batch size needs chunks of it.
            for batch in [None] + ([declared] if isinstance(declared, int) and declared > 0 else []):
                self.torch_batch = batch
                try:
                    checked = self.check_twin(
                        self._torch_forward_batched, tol=self._twin_tol(twin), surrogate=bool(twin.straight_through)
                    )
                except Exception as exc:
                    checked = GradientInfo(False, "none", f"onnx2torch twin fails to run: {first_line(exc, 300)}")
                if checked.available:
                    checked.source = self._twin_source(twin)
                    self.gradients = checked
                    self.details["twin"] = {"normalised": twin.normalised, "straight_through": twin.straight_through}
                    # A bf16 copy would round quantisation scales and zero points: search those in fp32.
                    self.reduced_search = not twin.straight_through
                    self.runtime_decides = bool(twin.straight_through)
                    return
                info = checked
        self._twin = None
        self.gradients = info

    @staticmethod
    def _twin_tol(twin: Converted) -> float:
        """Quantised graphs round at every layer, and ONNX Runtime fuses QDQ pairs into integer
        kernels whose float steps run in another order: a value on a rounding boundary lands one
        quantum off, and a deep network carries that on (ONNX Runtime itself differs by 5.5% of the
        largest logit between its optimisation levels on an int8 ResNet-18).  Such a twin is a
        gradient surrogate, checked by :func:`~advaudit.models.twin.surrogate_error`; the runtime
        supplies the values during the search (:attr:`runtime_decides`)."""
        return QUANT_SURROGATE_TOL if twin.straight_through else 1e-3

    @staticmethod
    def _twin_source(twin: Converted) -> str:
        source = "onnx2torch twin, checked against ONNX Runtime"
        if twin.straight_through:
            source += f"; straight-through gradient through {', '.join(twin.straight_through)}"
        return source

    # -------------------------------------------------------------- inference
    def _np_input(self, x: np.ndarray) -> np.ndarray:
        t = self.to_model_input(torch.from_numpy(x))
        return t.numpy().astype(self._in_dtype, copy=False)

    def _run_session(self, x: np.ndarray) -> list[np.ndarray]:
        try:
            outs = self._sess.run(self._out_names, {self._in_name: self._np_input(x)})
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.path.name}: {first_line(exc, 300)}") from None
        return [np.asarray(o, dtype=np.float32).reshape(len(x), -1) for o in outs]

    def _deploy_forward(self, x: np.ndarray) -> np.ndarray:
        """The logits: the real output, or the tensor feeding its final softmax/sigmoid."""
        return self._run_session(x)[-1]

    def _deploy_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = self._run_session(x)
        return outs[0].argmax(axis=1), outs[-1]

    def torch_module(self) -> torch.nn.Module | None:
        return self._twin if self.gradients.available else None

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        twin = self._twin
        if twin is None:
            raise ModelError(f"{self.path.name} has no differentiable twin", "attacks that need gradients cannot run")
        with warnings.catch_warnings():  # onnx2torch warns on every call of some converted ops
            warnings.simplefilter("ignore", UserWarning)
            out = twin(self.to_model_input(x))
        return flat_outputs(out, x.shape[0]).float()

