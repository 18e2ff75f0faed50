"""Shared fixtures: paths to the bundled sample models and ../shared/data, and model builders.

Also puts ``plugins/advaudit-testing`` on ``sys.path``: the test-only helpers (``advaudit_testing``) live
there, outside the runtime package.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see advaudit/__init__.py

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MODELS = REPO / "sample_models"
SHARED_DATA = REPO.parent / "shared" / "data"
TESTING_HELPERS = REPO / "plugins" / "advaudit-testing"
if str(TESTING_HELPERS) not in sys.path:  # advaudit_testing: test-only helpers, not installed with advaudit
    sys.path.insert(0, str(TESTING_HELPERS))


@pytest.fixture(scope="session")
def sample_models() -> Path:
    return SAMPLE_MODELS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a clone outside the workspace): real-data test skipped")
    return SHARED_DATA


def export_onnx(net: torch.nn.Module, path: Path, example: torch.Tensor, dynamic_batch: bool = True,
                output_name: str = "logits") -> Path:
    """Export ``net`` to ONNX with the TorchScript-based exporter (fast, no onnxscript needed)."""
    net = net.eval()
    kwargs = {"dynamic_axes": {"input": {0: "batch"}, output_name: {0: "batch"}}} if dynamic_batch else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(path), input_names=["input"], output_names=[output_name],
                          opset_version=17, dynamo=False, **kwargs)
    return path


@pytest.fixture(scope="session")
def mnist_sample():
    """The bundled MNIST sample model (ONNX) and 200 bundled test images, model-ready."""
    from advaudit.data import load_data, prepare
    from advaudit.models import load_model

    model = load_model(SAMPLE_MODELS / "mnist_cnn.onnx")
    data = prepare(load_data(SAMPLE_MODELS / "data" / "mnist_test_1k.npz", n=200), model)
    return model, data


def small_cnn(in_ch: int = 1, side: int = 28, classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """An untrained small CNN with deterministic weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_ch, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * (side // 2) ** 2, classes),
    ).eval()


def rng_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
