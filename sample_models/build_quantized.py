"""Build ``cifar10_resnet20_int8.onnx``: the bundled CIFAR-10 ResNet-20 quantised to int8 (QDQ).

Many deployed models are int8; this is the sample advaudit's quantised-graph support is shown on.
Static QDQ quantisation with ``onnxruntime.quantization`` (per-channel int8 weights, uint8
activations, MinMax calibration), calibrated on the last 256 images of ``data/cifar10_test_1k.npz``
(attack runs on this sample use the first ``--n`` images).  The advaudit input spec in the float
model's ``metadata_props`` is copied over.  Run from the repository root:

    python sample_models/build_quantized.py

It prints the float and int8 accuracies on the sample data, measured in ONNX Runtime.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cifar10_resnet20.onnx"
TARGET = HERE / "cifar10_resnet20_int8.onnx"
DATA = HERE / "data" / "cifar10_test_1k.npz"
N_CALIB = 256


class _Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray, name: str, batch: int = 32) -> None:
        self._batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i : i + 250]})[0] for i in range(0, len(x), 250)])
    return float((out.argmax(1) == y).mean())


def main() -> int:
    data = np.load(DATA)
    x = data["x"].astype(np.float32) / 255.0
    y = data["y"].astype(np.int64)
    source = onnx.load(str(SOURCE))
    name = source.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(SOURCE), str(pre))
        quantize_static(
            str(pre), str(TARGET), _Reader(x[-N_CALIB:], name), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
    out = onnx.load(str(TARGET))
    onnx.helper.set_model_props(out, {p.key: p.value for p in source.metadata_props})
    onnx.save(out, str(TARGET))
    print(f"wrote {TARGET.name} ({TARGET.stat().st_size:,} bytes)")
    print(f"accuracy on {DATA.name}: float {_accuracy(SOURCE, x, y):.4f}, int8 {_accuracy(TARGET, x, y):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
