"""A small, seeded, batched training loop and a compact MNIST network, for the implants.

Used by ``sample_models/build_backdoor.py``, ``benchmarks/bench_backdoor.py`` and the tests; not a
general trainer.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """conv 3x3 (C->16), ReLU, max-pool 2, conv 3x3 (16->32), ReLU, max-pool 2, linear -> 64 -> K."""

    def __init__(self, in_channels: int = 1, side: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_classifier(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Adam + cross-entropy with a one-cycle schedule over shuffled mini-batches; returns eval mode."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    n = len(xt)
    steps = epochs * (-(-n // batch_size))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            b = order[s : s + batch_size]
            loss = F.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")
    return net.eval()


@torch.no_grad()
def predict_labels(net: nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    xt = torch.from_numpy(np.asarray(x, np.float32))
    return torch.cat([net(xt[i : i + batch_size]).argmax(1) for i in range(0, len(xt), batch_size)]).numpy()


def load_mnist_splits(shared_data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST test images from ``shared_data/mnist`` as float32 [0, 1]: train = 0-7999, eval = 8000-9999
    (there is no MNIST training set in the shared data)."""

    from advaudit.data.loaders import read_idx

    x, y, _ = read_idx(Path(shared_data) / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert y is not None
    xf = (x[:, None].astype(np.float32) / 255.0)
    return xf[:8000], y[:8000], xf[8000:], y[8000:]


def save_torchscript(net: nn.Module, path: str, input_shape: tuple[int, int, int],
                     class_names: list[str] | None = None) -> str:
    """Trace ``net`` and save it with advaudit's ``advaudit.json`` input spec (range 0,1, NCHW)."""
    import json
    import warnings

    spec: dict[str, object] = {"range": [0, 1], "layout": "nchw", "input_shape": list(input_shape)}
    if class_names is not None:
        spec["class_names"] = list(class_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net.eval(), torch.zeros((1, *input_shape)))
        torch.jit.save(traced, str(path), _extra_files={"advaudit.json": json.dumps(spec)})
    return str(path)


def onnx_copy(path: str, input_shape: tuple[int, ...]) -> str:
    """An ONNX copy of the TorchScript file ``path`` beside it (``.onnx``), exported once: what scanners
    that cut the model's graph (FreeEagle) need."""
    out = Path(path).with_suffix(".onnx")
    if not out.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(torch.jit.load(path).eval(), (torch.zeros((1, *input_shape)),), str(out),
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    return str(out)
