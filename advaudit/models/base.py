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
* :meth:`Model.search_logits` / :meth:`Model.search_scores` are what the iterative attacks search
  with: :meth:`logits` / :meth:`query`, or a bfloat16 copy of the network where the search precision
  is bf16 (:mod:`advaudit.models.precision`), with rows that look adversarial re-scored in float32.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ModelError, first_line
from ..lazy_rows import Rows, is_lazy
from ..spec import InputSpec
from . import precision as _precision
from .outputs import Prediction, detect_output_kind
from .outputs import sha256_file as sha256_file
from .search import build_search_copy, exact_where_moved, reduced_forward
from .search import flat_outputs as flat_outputs
from .twin import GradientInfo, compare_twin
from .twin import surrogate_error as surrogate_error

PROBE_BATCH = 4
MAX_PROBE_VALUES = 2**28
"""Most input values in one probe batch (1 GiB of float32): a model declaring larger inputs, or a fixed
batch of them, is refused before anything is allocated (a hostile file can declare 100000x100000)."""


class Model(ABC):
    """A classifier seen through advaudit's conventions (see module docstring)."""

    format: str = "?"
    reduced_search: bool = False
    """Whether a bf16 copy of :meth:`torch_module` computes the same function as :meth:`logits`
    (true for the plain ONNX twin and TorchScript module; wrappers that add computation say no)."""
    runtime_decides: bool = False
    """Whether the differentiable path only approximates the deployment runtime (a quantised graph's
    straight-through twin): the search then takes every forward value from the runtime and only the
    gradient from the twin (BPDA, :meth:`search_logits`)."""

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
        self._precision_asked = "auto"
        self._search: Any = False  # the bf16 search copy: False = not built yet, None = unavailable
        self._search_note = ""

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
    def predict(self, x: Rows | torch.Tensor, batch_size: int = 256) -> Prediction:
        """Labels and raw outputs from the deployment runtime, computed in batches.

        The labels are the argmax of the model's real output.  The outputs are its logits: the raw
        output, or for a graph ending in a softmax/sigmoid the tensor feeding it (``logits_from``).
        """
        return self._batched(x, batch_size, self._run_deploy)

    def query(self, x: Rows | torch.Tensor, batch_size: int = 256) -> Prediction:
        """Like :meth:`predict`, through the runtime's fastest equivalent path, for bulk queries.

        Score-based attacks and mutation-based detectors make thousands of queries per input; they
        call this.  It is :meth:`predict` unless a format has a faster inference path that was
        checked to agree with the deployment runtime (TorchScript: a frozen, inference-optimised
        copy).  Final verdicts (adversarial-example verification, clean accuracy) always use
        :meth:`predict`.
        """
        if self.fixed_batch is not None:
            return self.predict(x, batch_size)
        return self._batched(x, batch_size, self._query_pair)

    def _batched(
        self, x: Rows | torch.Tensor, batch_size: int, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> Prediction:
        if is_lazy(x):  # a lazily converted data set (advaudit.data.views): one batch in memory at a time
            xs: Any = x
        else:
            xs = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            xs = np.ascontiguousarray(xs, dtype=np.float32)
        if len(xs) == 0:
            k = self.num_classes or 0
            return Prediction(np.zeros(0, np.int64), np.zeros((0, k), np.float32), self.output_kind)
        pairs = [
            run(np.ascontiguousarray(xs[i : i + batch_size], dtype=np.float32)) for i in range(0, len(xs), batch_size)
        ]
        labels = np.concatenate([p[0] for p in pairs]).astype(np.int64, copy=False)
        outputs = np.concatenate([p[1] for p in pairs]).astype(np.float32, copy=False)
        return Prediction(labels, outputs, self.output_kind)

    def _query_forward(self, x: np.ndarray) -> np.ndarray:
        return self._deploy_forward(x)

    def _deploy_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, outputs)`` for one batch the runtime accepts; formats whose logits are not
        their real output override this to read the labels off the real output."""
        out = self._deploy_forward(x)
        return out.argmax(axis=1), out

    def _query_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._query_forward(x)
        return out.argmax(axis=1), out

    def _run_deploy(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run a chunk, honouring a fixed batch size by looping over padded sub-batches."""
        if self.fixed_batch is None:
            return self._deploy_pair(x)
        b = self.fixed_batch
        labels, outs = [], []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            lab, out = self._deploy_pair(chunk)
            labels.append(lab[:n])
            outs.append(out[:n])
        return np.concatenate(labels), np.concatenate(outs)

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
        return self._as_logits(self._torch_forward_batched(x))

    def _as_logits(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> logits (log-probabilities for probability outputs)."""
        if self.output_kind == "probabilities":
            return torch.log(out.clamp_min(1e-12))
        return out

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable log-probabilities for canonical inputs."""
        return torch.log_softmax(self.logits(x), dim=-1)

    def _torch_forward_batched(self, x: torch.Tensor) -> torch.Tensor:
        if self.torch_batch is None:
            return self._torch_forward(x)
        return run_padded(self._torch_forward, x, self.torch_batch, self.torch_batch)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw differentiable outputs; only called when gradients are available."""
        raise NotImplementedError

    def torch_module(self) -> torch.nn.Module | None:
        """The torch module behind :meth:`logits` (its weights), or None without gradients."""
        return None

    # ----------------------------------------------------------- search precision
    def set_search_precision(self, precision: str) -> None:
        """``auto`` (default), ``fp32`` or ``bf16``: the precision attacks search in; see :mod:`.precision`."""
        _precision.resolve(precision, self.device)  # validates
        self._precision_asked = precision
        self._search = False

    @property
    def search_precision(self) -> str:
        """The precision the search actually uses (``fp32`` where a bf16 copy is unavailable)."""
        return "bf16" if self._search_module() is not None else "fp32"

    @property
    def search_precision_note(self) -> str | None:
        """Why the search fell back to fp32 although bf16 was asked for (None otherwise)."""
        return self._search_note or None

    def _search_module(self) -> torch.nn.Module | None:
        """The bf16, channels-last copy of :meth:`torch_module`, built and checked on first use."""
        if self._search is False:
            self._search, self._search_note = None, ""
            self._search, self._search_note = build_search_copy(self)
        return self._search

    def search_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Differentiable logits to search with, for inputs whose true labels are ``y``.

        Rows whose search prediction differs from ``y`` (candidates for success, targeted or not)
        take exact values, with the search path's gradient (a straight-through correction), so
        success is never decided on an approximation: in bf16 the float32 logits.  For a twin that
        only approximates the runtime (:attr:`runtime_decides`, quantised graphs) every row takes the
        deployment runtime's own logits (BPDA, Athalye et al. 2018: the forward pass of the deployed
        model, the backward pass of its straight-through twin), so the search's losses, step-size
        schedules and success decisions are those of the runtime.
        """
        module = self._search_module()
        out = self.logits(x) if module is None else reduced_forward(self, module, x)
        if self.runtime_decides:  # BPDA: the runtime's values, the twin's gradient, on every row
            return out - out.detach() + self._runtime_logits(x)
        return out if module is None else exact_where_moved(out, x, y, self.logits)

    def _runtime_logits(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` computed by the deployment runtime (no gradient)."""
        return self._as_logits(torch.from_numpy(self.query(x.detach()).outputs)).to(x.device)

    def search_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log-probabilities to search with, no gradients (score-based attacks); same rule as
        :meth:`search_logits`, with float32 rows from :meth:`query`."""
        module = self._search_module()
        if module is None:
            return torch.from_numpy(self.query(x.detach()).log_probs).to(x.device)
        with torch.no_grad():
            out = torch.log_softmax(reduced_forward(self, module, x.detach()), dim=-1)
        return exact_where_moved(out, x, y, lambda t: torch.from_numpy(self.query(t).log_probs).to(t.device))

    # -------------------------------------------------------------------- probing
    def probe_inputs(self, n: int = PROBE_BATCH, seed: int = 0) -> np.ndarray:
        """A deterministic batch of random inputs inside the value range."""
        if self.input_shape is None:
            raise ModelError(
                f"the input shape of {self.path.name} is unknown",
                "pass --input-shape C,H,W (or give --data, or embed input_shape in the model's metadata)",
            )
        total = n * math.prod(self.input_shape)
        if total > MAX_PROBE_VALUES:
            raise ModelError(
                f"{self.path.name} takes inputs of shape {tuple(self.input_shape)}"
                + (f" in batches of {n}" if n > PROBE_BATCH else "")
                + f": {total:,} values, more than advaudit handles ({MAX_PROBE_VALUES:,})",
                "check the model's declared input shape, --input-shape and --layout",
            )
        rng = np.random.default_rng(seed)
        lo, hi = self.spec.range
        return rng.uniform(lo, hi, size=(n, *self.input_shape)).astype(np.float32)

    def _finish_probe(self) -> None:
        """Run the deployment runtime once to learn the class count and output kind."""
        _, out = self._run_deploy(self.probe_inputs(max(PROBE_BATCH, self.fixed_batch or 0)))
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
        self.output_kind = "logits" if self.details.get("logits_from") else detect_output_kind(out)
        self._probe_outputs = out

    def _probe_native_gradients(self, source: str, errors: tuple[type[Exception], ...], limit: int) -> None:
        """Set :attr:`gradients` from one backward pass of :meth:`_torch_forward` on a probe batch
        (for models that are their own twin); ``source`` names the autograd when it works."""
        probe = torch.from_numpy(self.probe_inputs(2, seed=3)).to(self.device).requires_grad_(True)
        try:
            out = self._torch_forward(probe)
            (grad,) = torch.autograd.grad(out.sum(), probe, allow_unused=True)
        except errors as exc:
            self.gradients = GradientInfo(False, "none", f"backward pass fails: {first_line(exc, limit)[:200]}")
            return
        if grad is None:
            self.gradients = GradientInfo(False, "none", "the output does not depend on the input through autograd")
            return
        self.gradients = GradientInfo(True, source, "", 0.0)

    def set_input_shape(self, shape: tuple[int, ...]) -> None:
        """Declare the canonical (C, H, W) input shape when the model file does not carry it."""
        if self.input_shape is not None and tuple(self.input_shape) != tuple(shape):
            raise ModelError(f"the model takes inputs of shape {self.input_shape}, got {tuple(shape)}")
        if self.input_shape is None:
            self.input_shape = tuple(int(s) for s in shape)
            self._after_shape_known()

    def _after_shape_known(self) -> None:
        self._finish_probe()

    def check_twin(
        self, forward: Callable[[torch.Tensor], torch.Tensor], tol: float = 1e-3, surrogate: bool = False
    ) -> GradientInfo:
        """Compare a differentiable forward with the deployment runtime on the probe batch
        (:func:`advaudit.models.twin.compare_twin`)."""
        probe = self.probe_inputs(max(PROBE_BATCH, self.fixed_batch or 0), seed=1)
        _, ref = self._run_deploy(probe)
        with torch.no_grad():
            got = forward(torch.from_numpy(probe).to(self.device)).float().cpu().numpy()
        return compare_twin(got, ref, tol, surrogate)

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
            "search_precision": {
                "requested": self._precision_asked,
                "used": self.search_precision,
                "note": self._search_note,
            },
            **self.details,
        }


def run_padded(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step: int, least: int
) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``step`` rows, for graphs with a fixed or bounded batch size: a
    chunk shorter than ``least`` is padded with its last row and its outputs cut back."""
    outs = []
    for i in range(0, x.shape[0], step):
        chunk = x[i : i + step]
        n = chunk.shape[0]
        if n < least:
            chunk = torch.cat([chunk, chunk[-1:].expand(least - n, *chunk.shape[1:])])
        outs.append(fn(chunk)[:n])
    return torch.cat(outs)


@dataclass
class LoadOptions:
    """Everything :func:`advaudit.models.load_model` needs besides the path."""

    spec_flags: dict[str, Any] = field(default_factory=dict)
    spec_file: str | None = None
    device: str = "cpu"
    max_size_mb: float = 2048.0
    check_gradients: bool = True
