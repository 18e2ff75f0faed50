"""The one interface every model is used through.

A :class:`Model` takes float32 NCHW inputs in the model's natural value range (``model.spec.range``)
and hides normalisation, layout (NCHW/NHWC), fixed batch sizes and the output kind (logits or
probabilities):

* :meth:`Model.predict` runs the *deployment runtime* (ONNX Runtime for ``.onnx``, TorchScript for
  ``.pt``) in batches and returns labels and raw outputs.  Anything that decides whether an attack
  succeeded must go through it.
* :meth:`Model.logits` is the differentiable torch path for gradient attacks.  For models whose output
  is a probability vector it returns log-probabilities, which differ from logits only by a per-sample
  constant, so cross-entropy, C&W margins and DLR stay correct.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ModelError
from ..spec import InputSpec

PROBE_BATCH = 4
PROB_SUM_TOL = 1e-3


@dataclass
class Prediction:
    """Output of :meth:`Model.predict`: labels ``(N,)`` and the model's raw outputs ``(N, K)``."""

    labels: np.ndarray
    outputs: np.ndarray
    output_kind: str

    @property
    def log_probs(self) -> np.ndarray:
        t = torch.from_numpy(self.outputs)
        return _log_probs(t, self.output_kind).numpy()

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)


def _log_probs(outputs: torch.Tensor, output_kind: str) -> torch.Tensor:
    if output_kind == "probabilities":
        return torch.log(outputs.clamp_min(1e-12))
    return torch.log_softmax(outputs, dim=-1)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detect_output_kind(outputs: np.ndarray) -> str:
    """``probabilities`` if every row is non-negative and sums to 1, else ``logits``."""
    if outputs.ndim == 2 and outputs.shape[1] > 1 and np.all(outputs >= 0):
        if np.allclose(outputs.sum(axis=1), 1.0, atol=PROB_SUM_TOL):
            return "probabilities"
    return "logits"


@dataclass
class GradientInfo:
    """Whether :meth:`Model.logits` is available, how, and if not why."""

    available: bool
    source: str
    note: str = ""
    max_abs_diff: float | None = None


class Model(ABC):
    """A classifier seen through advaudit's conventions (see module docstring)."""

    format: str = "?"

    def __init__(self, path: str | Path, spec: InputSpec, device: str = "cpu") -> None:
        self.path = Path(path)
        self.spec = spec
        self.device = torch.device(device)
        self.input_shape: tuple[int, ...] | None = None  # canonical (C, H, W)
        self.num_classes: int | None = None
        self.output_kind: str = "logits"
        self.fixed_batch: int | None = None  # batch size the deployment runtime insists on
        self.torch_batch: int | None = None  # batch size the differentiable path insists on
        self.gradients = GradientInfo(False, "none", "not checked")
        self.details: dict[str, Any] = {}
        self._sha256: str | None = None

    # ----------------------------------------------------------------- properties
    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def has_gradients(self) -> bool:
        return self.gradients.available

    @property
    def bounds(self) -> tuple[float, float]:
        return self.spec.range

    # ------------------------------------------------------------ preprocessing
    def _mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1) if like.dim() == 4 else (1, -1)
        mean = torch.tensor(self.spec.mean, dtype=like.dtype, device=like.device).reshape(shape)
        std = torch.tensor(self.spec.std, dtype=like.dtype, device=like.device).reshape(shape)
        return mean, std

    def to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical NCHW in natural range -> what the network expects (normalised, its layout)."""
        if self.spec.normalises:
            mean, std = self._mean_std(x)
            x = (x - mean) / std
        if self.spec.layout == "nhwc" and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()

    # --------------------------------------------------------------- prediction
    def predict(self, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> Prediction:
        """Labels and raw outputs from the deployment runtime, computed in batches."""
        xs = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        if len(xs) == 0:
            k = self.num_classes or 0
            return Prediction(np.zeros(0, np.int64), np.zeros((0, k), np.float32), self.output_kind)
        outs = [self._run_deploy(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
        outputs = np.concatenate(outs).astype(np.float32, copy=False)
        return Prediction(outputs.argmax(axis=1).astype(np.int64), outputs, self.output_kind)

    def query(self, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> Prediction:
        """Like :meth:`predict`, through the runtime's fastest equivalent path, for bulk queries.

        Score-based attacks and mutation-based detectors make thousands of queries per input; they
        call this.  It is :meth:`predict` unless a format has a faster inference path that was
        checked to agree with the deployment runtime (TorchScript: a frozen, inference-optimised
        copy).  Final verdicts (adversarial-example verification, clean accuracy) always use
        :meth:`predict`.
        """
        xs = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        xs = np.ascontiguousarray(xs, dtype=np.float32)
        if len(xs) == 0 or self.fixed_batch is not None:
            return self.predict(xs, batch_size)
        outs = [self._query_forward(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
        outputs = np.concatenate(outs).astype(np.float32, copy=False)
        return Prediction(outputs.argmax(axis=1).astype(np.int64), outputs, self.output_kind)

    def _query_forward(self, x: np.ndarray) -> np.ndarray:
        return self._deploy_forward(x)

    def _run_deploy(self, x: np.ndarray) -> np.ndarray:
        """Run a chunk, honouring a fixed batch size by looping over padded sub-batches."""
        if self.fixed_batch is None:
            return self._deploy_forward(x)
        b = self.fixed_batch
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            outs.append(self._deploy_forward(chunk)[:n])
        return np.concatenate(outs)

    @abstractmethod
    def _deploy_forward(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs for canonical inputs (one batch the runtime accepts)."""

    # ---------------------------------------------------------------- gradients
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits (log-probabilities for probability outputs) for canonical inputs."""
        if not self.gradients.available:
            raise ModelError(
                f"{self.path.name} has no gradients ({self.gradients.note})",
                "use a black-box attack (square, substitute)",
            )
        out = self._torch_forward_batched(x)
        if self.output_kind == "probabilities":
            return torch.log(out.clamp_min(1e-12))
        return out

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable log-probabilities for canonical inputs."""
        return torch.log_softmax(self.logits(x), dim=-1)

    def _torch_forward_batched(self, x: torch.Tensor) -> torch.Tensor:
        if self.torch_batch is None:
            return self._torch_forward(x)
        b = self.torch_batch
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = torch.cat([chunk, chunk[-1:].expand(b - n, *chunk.shape[1:])])
            outs.append(self._torch_forward(chunk)[:n])
        return torch.cat(outs)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw differentiable outputs; only called when gradients are available."""
        raise NotImplementedError

    def torch_module(self) -> torch.nn.Module | None:
        """The torch module behind :meth:`logits` (its weights), or None without gradients."""
        return None

    # -------------------------------------------------------------------- probing
    def probe_inputs(self, n: int = PROBE_BATCH, seed: int = 0) -> np.ndarray:
        """A deterministic batch of random inputs inside the value range."""
        if self.input_shape is None:
            raise ModelError(
                f"the input shape of {self.path.name} is unknown",
                "pass --input-shape C,H,W (or give --data, or embed input_shape in the model's metadata)",
            )
        rng = np.random.default_rng(seed)
        lo, hi = self.spec.range
        return rng.uniform(lo, hi, size=(n, *self.input_shape)).astype(np.float32)

    def _finish_probe(self) -> None:
        """Run the deployment runtime once to learn the class count and output kind."""
        out = self._run_deploy(self.probe_inputs(max(PROBE_BATCH, self.fixed_batch or 0)))
        if out.ndim != 2:
            raise ModelError(
                f"{self.path.name} returns outputs of shape {tuple(out.shape)}; expected (batch, classes)",
                "advaudit audits classifiers with one score per class",
            )
        if out.shape[1] < 2:
            raise ModelError(f"{self.path.name} has {out.shape[1]} output class; a classifier needs at least 2")
        if not np.all(np.isfinite(out)):
            raise ModelError(f"{self.path.name} returns NaN or inf on in-range inputs")
        self.num_classes = int(out.shape[1])
        self.output_kind = detect_output_kind(out)
        self._probe_outputs = out

    def set_input_shape(self, shape: tuple[int, ...]) -> None:
        """Declare the canonical (C, H, W) input shape when the model file does not carry it."""
        if self.input_shape is not None and tuple(self.input_shape) != tuple(shape):
            raise ModelError(f"the model takes inputs of shape {self.input_shape}, got {tuple(shape)}")
        if self.input_shape is None:
            self.input_shape = tuple(int(s) for s in shape)
            self._after_shape_known()

    def _after_shape_known(self) -> None:
        self._finish_probe()

    def check_twin(self, forward: Callable[[torch.Tensor], torch.Tensor], tol: float = 1e-3) -> GradientInfo:
        """Compare a differentiable forward with the deployment runtime on the probe batch."""
        probe = self.probe_inputs(max(PROBE_BATCH, self.fixed_batch or 0), seed=1)
        ref = self._run_deploy(probe)
        with torch.no_grad():
            got = forward(torch.from_numpy(probe).to(self.device)).float().cpu().numpy()
        if got.shape != ref.shape:
            return GradientInfo(False, "none", f"differentiable twin returns shape {got.shape}, runtime {ref.shape}")
        diff = float(np.max(np.abs(got - ref)))
        scale = max(1.0, float(np.max(np.abs(ref))))
        if not np.isfinite(diff) or diff > tol * scale:
            return GradientInfo(
                False, "none", f"differentiable twin disagrees with the runtime (max abs diff {diff:.3g})", diff
            )
        return GradientInfo(True, "", "", diff)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, the model part of every report."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format": self.format,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "num_classes": self.num_classes,
            "output_kind": self.output_kind,
            "fixed_batch": self.fixed_batch,
            "spec": self.spec.to_dict(),
            "gradients": {
                "available": self.gradients.available,
                "source": self.gradients.source,
                "note": self.gradients.note,
                "max_abs_diff": self.gradients.max_abs_diff,
            },
            **self.details,
        }


@dataclass
class LoadOptions:
    """Everything :func:`advaudit.models.load_model` needs besides the path."""

    spec_flags: dict[str, Any] = field(default_factory=dict)
    spec_file: str | None = None
    device: str = "cpu"
    max_size_mb: float = 2048.0
    check_gradients: bool = True
