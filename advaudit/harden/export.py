"""Export a hardened module in the input model's format, and check the export.

* ONNX: ``torch.onnx.export`` (TorchScript-based exporter, ``dynamo=False``, as ``sample_models/build.py``)
  of the fine-tuned module with the original input/output names, batch dimension (dynamic or fixed)
  and opset; every ``metadata_props`` entry of the original (the ``advaudit.*`` input spec included)
  is copied, plus ``advaudit-harden`` (a JSON record of the training).  The file is then loaded in ONNX
  Runtime and its outputs compared with the torch module on check inputs; a mismatch above the
  tolerance is an error and nothing is written.
* TorchScript: ``torch.jit.save`` of the fine-tuned script module with the original's extra file
  ``advaudit.json`` (and ``advaudit-harden.json``); reloaded and compared the same way.
* torch.export (``.pt2``): ``torch.export.export`` of the fine-tuned module with a dynamic batch dimension
  (with the original's final softmax put back where the loader cut it off), ``torch.export.save`` with the
  original's extra files (``advaudit.json``) plus ``advaudit-harden.json``; the bytes are reloaded through the
  same checks as any untrusted ``.pt2`` (:func:`advaudit.models.export_model.load_program`) and compared.

The file is written atomically (:func:`advaudit.io.files.write_atomic`).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..models import Model
from ..io.files import write_atomic

EXPORT_TOL = 1e-3  # max |exported - torch| logit difference, relative to max(1, max |logit|)
EXTRA_FILE = "advaudit.json"


def _bytes_writer(data: bytes) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        p.write_bytes(data)

    return write


def _max_rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return float(np.max(np.abs(got - ref))) / scale if ref.size else 0.0


def _torch_outputs(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = module(torch.from_numpy(x))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.reshape(len(x), -1).float().numpy()


def _model_inputs(model: Model, x_check: np.ndarray) -> np.ndarray:
    """Canonical check inputs -> what the network itself takes (normalised, its layout, its batch)."""
    t = model.to_model_input(torch.from_numpy(np.ascontiguousarray(x_check, dtype=np.float32)))
    return t.numpy()


def export_onnx(model: Model, module: torch.nn.Module, path: str | Path, x_check: np.ndarray,
                record: dict[str, Any] | None = None, tol: float = EXPORT_TOL) -> dict[str, Any]:
    """Export ``module`` (the fine-tuned twin of the ONNX ``model``) to ``path``; return the check."""
    import onnx
    import onnxruntime as ort

    from ..models.onnx_model import OnnxModel

    if not isinstance(model, OnnxModel):
        raise TypeError(f"export_onnx needs an ONNX model, not {type(model).__name__}")
    proto = model._proto  # the original graph (loaded by OnnxModel)
    in_name = model.details["input_name"]
    out_name = proto.graph.output[0].name
    dims = model.details["input_dims"]
    fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
    opset = model.details.get("opset") or 17
    opset = min(max(int(opset), 9), 20)
    xin = _model_inputs(model, x_check)
    batch = fixed or 2
    example = torch.from_numpy(np.resize(xin, (batch, *xin.shape[1:])).astype(np.float32))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(), (example,), buf,  # type: ignore[arg-type]  # stubs: a file object works too
                input_names=[in_name], output_names=[out_name],
                dynamic_axes=None if fixed else {in_name: {0: "batch"}, out_name: {0: "batch"}},
                opset_version=opset, dynamo=False,
            )
    except Exception as exc:
        text = first_line(exc, 200)
        raise ModelError(f"cannot export the hardened model to ONNX: {text}",
                         "save it as TorchScript instead (load the model as .pt)") from None
    out = onnx.load_from_string(buf.getvalue())
    props = {p.key: p.value for p in proto.metadata_props}
    if record is not None:
        props["advaudit-harden"] = json.dumps(record, sort_keys=True, default=str)
    onnx.helper.set_model_props(out, props)
    onnx.checker.check_model(out)
    data = out.SerializeToString()

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    xin = np.resize(xin, (fixed, *xin.shape[1:])).astype(np.float32) if fixed else xin.astype(np.float32)
    ref = _torch_outputs(module, xin)
    got = np.asarray(sess.run(None, {in_name: xin})[0], dtype=np.float32).reshape(len(xin), -1)
    diff = _max_rel_diff(got, ref)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    if not np.isfinite(diff) or diff > tol:
        raise ModelError(f"the ONNX export disagrees with the trained torch module (max rel diff {diff:.3g})",
                         "report this model; save as TorchScript instead")
    write_atomic(path, _bytes_writer(data))
    return {"format": "onnx", "path": str(path), "opset": opset, "check_n": int(len(ref)),
            "max_rel_diff": diff, "argmax_agreement": agree, "tolerance": tol}


def _read_extra(path: Path) -> dict[str, str]:
    """The extra files (``<archive>/extra/NAME``) of a TorchScript or .pt2 archive, without unpickling."""
    out: dict[str, str] = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[1] == "extra" and parts[2]:
                out[parts[2]] = z.read(name).decode("utf-8", errors="replace")
    return out


def export_torchscript(model: Model, module: torch.nn.Module, path: str | Path, x_check: np.ndarray,
                       record: dict[str, Any] | None = None, tol: float = EXPORT_TOL) -> dict[str, Any]:
    """Save the fine-tuned script ``module`` with the original extra files; reload and compare."""
    extra = _read_extra(model.path)
    if record is not None:
        extra["advaudit-harden.json"] = json.dumps(record, sort_keys=True, default=str)
    if not isinstance(module, torch.jit.ScriptModule):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.trace(module.eval(), torch.from_numpy(_model_inputs(model, x_check[:2])))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(module, buf, _extra_files=extra)
        data = buf.getvalue()
        back = torch.jit.load(io.BytesIO(data), map_location="cpu")
    xin = _model_inputs(model, x_check)
    diff = _max_rel_diff(_torch_outputs(back, xin), _torch_outputs(module, xin))
    if not np.isfinite(diff) or diff > tol:
        raise ModelError(f"the reloaded TorchScript export disagrees with the trained module (max rel diff {diff:.3g})")
    write_atomic(path, _bytes_writer(data))
    return {"format": "torchscript", "path": str(path), "check_n": int(len(xin)), "max_rel_diff": diff,
            "tolerance": tol, "extra_files": sorted(extra)}


class _WithSoftmax(torch.nn.Module):
    """``softmax(module(x), dim)``: the hardened logits module with the original's final softmax."""

    def __init__(self, module: torch.nn.Module, dim: int) -> None:
        super().__init__()
        self.module = module
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.module(x), dim=self.dim)


def _eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    try:
        module.eval()
    except NotImplementedError:  # a raw ExportedProgram.module(): its ops already carry their mode
        pass
    return module


def export_torch_export(model: Model, module: torch.nn.Module, path: str | Path, x_check: np.ndarray,
                        record: dict[str, Any] | None = None, tol: float = EXPORT_TOL) -> dict[str, Any]:
    """``torch.export`` the fine-tuned ``module`` (dynamic batch) to a ``.pt2`` with the original's extra
    files; reload it through the untrusted-file checks and compare."""
    from ..models.export_model import load_program, program_module

    extra = dict(getattr(model, "extra_files", None) or _read_extra(model.path))
    if record is not None:
        extra["advaudit-harden.json"] = json.dumps(record, sort_keys=True, default=str)
    net = _eval_mode(module)
    if model.details.get("final_softmax"):  # the loader returns the softmax's input; the file keeps the softmax
        net = _WithSoftmax(net, int(model.details.get("softmax_dim", -1))).eval()
    xin = _model_inputs(model, x_check)
    example = torch.from_numpy(np.resize(xin, (2, *xin.shape[1:])).astype(np.float32))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, buf, extra_files=extra)
    except Exception as exc:
        text = first_line(exc, 200)
        raise ModelError(f"cannot export the hardened model with torch.export: {text}") from None
    data = buf.getvalue()
    back = program_module(load_program(data, Path(path).name)[0], Path(path).name)
    diff = _max_rel_diff(_torch_outputs(back, xin), _torch_outputs(net, xin))
    if not np.isfinite(diff) or diff > tol:
        raise ModelError(f"the reloaded torch.export program disagrees with the trained module "
                         f"(max rel diff {diff:.3g})")
    write_atomic(path, _bytes_writer(data))
    return {"format": "torch.export", "path": str(path), "check_n": int(len(xin)), "max_rel_diff": diff,
            "tolerance": tol, "extra_files": sorted(extra), "dynamic_batch": True,
            "final_softmax": bool(model.details.get("final_softmax"))}


class _WithActivation(torch.nn.Module):
    """The hardened logits module with the original graph's final softmax/sigmoid put back."""

    def __init__(self, module: torch.nn.Module, activation: str) -> None:
        super().__init__()
        self.module = module
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.module(x)
        z = z.reshape(z.shape[0], -1)
        return torch.softmax(z, dim=1) if self.activation == "Softmax" else torch.sigmoid(z)


def export_hardened(model: Model, module: torch.nn.Module, path: str | Path, x_check: np.ndarray,
                    record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export in the input model's format (``model.format``).

    A model whose graph ended in a softmax/sigmoid was trained on the logits feeding it; the export
    puts the activation back, so the hardened file has the original's outputs."""
    if model.format == "torch.export":
        return export_torch_export(model, module, path, x_check, record)
    full = getattr(module, "full_module", None)
    if full is not None:  # TorchScript cut before its softmax: the trained script module still ends in it
        module = full
    elif model.details.get("final_activation"):
        module = _WithActivation(module, model.details["final_activation"]).eval()
    if model.format == "onnx":
        return export_onnx(model, module, path, x_check, record)
    return export_torchscript(model, module, path, x_check, record)
