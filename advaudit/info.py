"""``advaudit info``: what a model is, how advaudit sees it, and how it does on clean data."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .data import PreparedData
from .models import Model


def clean_accuracy(model: Model, data: PreparedData, batch_size: int = 256) -> tuple[float, float]:
    """Accuracy in the deployment runtime and its throughput in images per second."""
    start = time.perf_counter()
    pred = model.predict(data.x, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    assert data.y is not None
    return float(np.mean(pred.labels == data.y)), len(data) / max(elapsed, 1e-9)


def model_info(model: Model, data: PreparedData | None = None, batch_size: int = 256) -> dict[str, Any]:
    """A JSON-able description of ``model``; with ``data``, clean accuracy and throughput too."""
    info: dict[str, Any] = {"model": model.describe()}
    if data is not None:
        acc, ips = clean_accuracy(model, data, batch_size)
        info["data"] = {**data.dataset.describe(), "batch_size": batch_size}
        info["clean_accuracy"] = acc
        info["throughput_images_per_s"] = ips
    return info
