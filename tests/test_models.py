"""Model loading: ONNX vs TorchScript, the onnx2torch twin's gradients, layouts, fixed batches,
probability outputs, the input-spec sources, and the defensive checks (external data, size)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from .conftest import export_onnx, rng_images, small_cnn

from advaudit.data import load_data, prepare
from advaudit.errors import ModelError, SpecError
from advaudit.models import load_model

SAMPLES = [
    ("mnist_cnn", "mnist_test_1k"),
    ("cifar10_resnet20", "cifar10_test_1k"),
    ("gtsrb_cnn", "gtsrb_test_1k"),
]


def _input_grad(forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input."""
    xr = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(forward(xr), y, reduction="sum"), xr)
    return g


# ------------------------------------------------------------------------------ sample models
@pytest.mark.parametrize("name,data", SAMPLES)
def test_sample_model_onnx_and_torchscript_agree(sample_models: Path, name: str, data: str) -> None:
    paths = [sample_models / f"{name}.onnx", sample_models / f"{name}.pt", sample_models / "data" / f"{data}.npz"]
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p.name} is not built yet")
    ds = load_data(paths[2], n=150)
    m_onnx, m_ts = (load_model(p, input_shape=ds.x.shape[1:]) for p in paths[:2])
    d_onnx, d_ts = prepare(ds, m_onnx), prepare(ds, m_ts)
    np.testing.assert_array_equal(d_onnx.x, d_ts.x)

    assert m_onnx.format == "onnx" and m_ts.format == "torchscript"
    assert m_onnx.input_shape == m_ts.input_shape
    assert m_onnx.num_classes == m_ts.num_classes
    assert m_onnx.output_kind == m_ts.output_kind == "logits"
    assert m_onnx.spec.range == m_ts.spec.range
    assert m_onnx.spec.class_names == m_ts.spec.class_names
    assert m_onnx.spec.class_names is not None and len(m_onnx.spec.class_names) == m_onnx.num_classes
    assert m_onnx.has_gradients and m_ts.has_gradients

    p_onnx, p_ts = m_onnx.predict(d_onnx.x, batch_size=64), m_ts.predict(d_ts.x, batch_size=64)
    np.testing.assert_array_equal(p_onnx.labels, p_ts.labels)
    scale = max(1.0, float(np.abs(p_onnx.outputs).max()))
    assert float(np.abs(p_onnx.outputs - p_ts.outputs).max()) < 1e-3 * scale
    # The bundled data is labelled for this model: it must be clearly better than chance.
    assert float(np.mean(p_onnx.labels == d_onnx.y)) > 0.8


# -------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("spec", [None, {"mean": "0.1307", "std": "0.3081"}], ids=["plain", "normalised"])
def test_onnx_twin_gradients_match_torch(tmp_path: Path, spec: dict | None) -> None:
    net = small_cnn(seed=1)
    model = load_model(export_onnx(net, tmp_path / "cnn.onnx", torch.zeros(2, 1, 28, 28)), spec=spec)
    assert model.has_gradients, model.gradients.note
    assert "onnx2torch" in model.gradients.source
    assert model.gradients.max_abs_diff is not None and model.gradients.max_abs_diff < 1e-4

    mean, std = (0.1307, 0.3081) if spec else (0.0, 1.0)

    def reference(x: torch.Tensor) -> torch.Tensor:
        return net((x - mean) / std)

    x = torch.from_numpy(rng_images(6, (1, 28, 28), seed=3))
    y = torch.arange(6) % 10
    torch.testing.assert_close(model.logits(x), reference(x), atol=1e-4, rtol=1e-4)
    g_model, g_ref = _input_grad(model.logits, x, y), _input_grad(reference, x, y)
    assert float(g_ref.abs().sum()) > 0
    torch.testing.assert_close(g_model, g_ref, atol=1e-5, rtol=1e-3)


def test_torchscript_gradients_are_native(tmp_path: Path) -> None:
    net = small_cnn(seed=2)
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    model = load_model(path, spec={"input_shape": "1,28,28"})
    assert model.has_gradients and model.gradients.source == "native TorchScript autograd"
    x = torch.from_numpy(rng_images(4, (1, 28, 28), seed=5))
    y = torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(_input_grad(model.logits, x, y), _input_grad(net, x, y), atol=1e-6, rtol=1e-5)


# -------------------------------------------------------------------------------- NHWC input
class _NHWC(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def test_nhwc_model_layout_is_inferred(tmp_path: Path) -> None:
    net = small_cnn(seed=3)
    path = export_onnx(_NHWC(net), tmp_path / "nhwc.onnx", torch.zeros(2, 28, 28, 1))
    model = load_model(path)
    assert model.details["input_dims"][1:] == [28, 28, 1]
    assert model.spec.layout == "nhwc"
    assert model.spec.source["layout"] == "inferred from input shape"
    assert model.input_shape == (1, 28, 28)  # canonical C, H, W

    x = rng_images(8, (1, 28, 28), seed=4)  # canonical NCHW
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    pred = model.predict(x)
    np.testing.assert_array_equal(pred.labels, ref.argmax(1).numpy())
    np.testing.assert_allclose(pred.outputs, ref.numpy(), atol=1e-4)

    assert model.has_gradients, model.gradients.note
    y = torch.arange(8) % 10
    xt = torch.from_numpy(x)
    torch.testing.assert_close(_input_grad(model.logits, xt, y), _input_grad(net, xt, y), atol=1e-5, rtol=1e-3)

    # An explicit flag is recorded as such.
    assert load_model(path, spec={"layout": "nhwc"}, check_gradients=False).spec.source["layout"] == "flag"


# ------------------------------------------------------------------------------ fixed batch
class _BakedBatch1(torch.nn.Module):
    """A network whose graph only runs with batch size 1 (``reshape(1, -1)``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).reshape(1, -1))


@pytest.fixture(scope="module")
def batch1_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("batch1")
    rewritable = small_cnn(seed=5)
    baked = _BakedBatch1().eval()
    return {
        "rewritable": (
            rewritable, export_onnx(rewritable, d / "a.onnx", torch.zeros(1, 1, 28, 28), dynamic_batch=False)
        ),
        "baked": (baked, export_onnx(baked, d / "b.onnx", torch.zeros(1, 1, 28, 28), dynamic_batch=False)),
    }


@pytest.mark.parametrize("kind", ["rewritable", "baked"])
def test_fixed_batch_one_models(batch1_models: dict, kind: str, capfd: pytest.CaptureFixture) -> None:
    net, path = batch1_models[kind]
    model = load_model(path)
    # A model that loads fine must not leave ONNX Runtime's C++ error log on stderr.
    assert "onnxruntime" not in capfd.readouterr().err
    assert model.details["input_dims"][0] == 1
    if kind == "rewritable":
        assert model.fixed_batch is None
        assert model.details["batch_rewritten_from"] == 1
    else:
        assert model.fixed_batch == 1
        assert "batch_rewritten_from" not in model.details
        assert model.describe()["fixed_batch"] == 1

    x = torch.from_numpy(rng_images(5, (1, 28, 28), seed=6))
    with torch.no_grad():
        ref = torch.cat([net(x[i : i + 1]) for i in range(5)])
    pred = model.predict(x.numpy(), batch_size=4)  # 4 + 1: a partial last batch too
    assert pred.outputs.shape == (5, 10)
    np.testing.assert_array_equal(pred.labels, ref.argmax(1).numpy())
    np.testing.assert_allclose(pred.outputs, ref.numpy(), atol=1e-4)

    assert model.has_gradients, model.gradients.note
    torch.testing.assert_close(model.logits(x), ref, atol=1e-4, rtol=1e-4)
    y = torch.tensor([0, 1, 2, 3, 4])
    g_ref = torch.cat([_input_grad(net, x[i : i + 1], y[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(_input_grad(model.logits, x, y), g_ref, atol=1e-5, rtol=1e-3)


# -------------------------------------------------------------------------- output kind
class _ManualSoftmax(torch.nn.Module):
    """Probabilities without a ``Softmax`` node (``Exp``/``ReduceSum``/``Div``): no logits to take."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = torch.exp(z - z.amax(dim=1, keepdim=True))
        return e / e.sum(dim=1, keepdim=True)


def test_probability_output_model(tmp_path: Path) -> None:
    # A graph ending in a Softmax node is attacked on its input (tests/test_deployed_logits.py); one
    # that computes probabilities otherwise is attacked through log-probabilities.
    net = torch.nn.Sequential(small_cnn(seed=6), _ManualSoftmax()).eval()
    model = load_model(export_onnx(net, tmp_path / "probs.onnx", torch.zeros(2, 1, 28, 28), output_name="probs"))
    assert model.output_kind == "probabilities"
    assert model.has_gradients, model.gradients.note

    x = torch.from_numpy(rng_images(6, (1, 28, 28), seed=7))
    with torch.no_grad():
        probs = net(x)
    pred = model.predict(x)
    assert pred.output_kind == "probabilities"
    np.testing.assert_allclose(pred.outputs, probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.log_probs, np.log(pred.outputs), atol=1e-5)
    np.testing.assert_allclose(pred.probs, pred.outputs, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model.log_probs(x), torch.log(probs), atol=1e-5, rtol=1e-5)
        # logits() of a probability model are its log-probabilities (same softmax).
        torch.testing.assert_close(model.logits(x), torch.log(probs), atol=1e-5, rtol=1e-5)

    logit_model = load_model(export_onnx(net[0], tmp_path / "logits.onnx", torch.zeros(2, 1, 28, 28)))
    assert logit_model.output_kind == "logits"
    with torch.no_grad():
        torch.testing.assert_close(logit_model.log_probs(x), torch.log(probs), atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------- the spec
def _with_metadata(src: Path, dst: Path, props: dict[str, str]) -> Path:
    proto = onnx.load(str(src))
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def test_spec_priority_flags_yaml_metadata_defaults(tmp_path: Path) -> None:
    net = small_cnn(seed=7)
    plain = export_onnx(net, tmp_path / "plain.onnx", torch.zeros(2, 1, 28, 28))
    meta = _with_metadata(
        plain,
        tmp_path / "meta.onnx",
        {
            "advaudit.range": "0,255",
            "advaudit.mean": "10",
            "advaudit.std": "20",
            "advaudit.layout": "nchw",
            "advaudit.class_names": json.dumps([f"c{i}" for i in range(10)]),
            "unrelated.key": "ignored",
        },
    )
    yaml_file = tmp_path / "spec.yaml"
    yaml_file.write_text("range: [0, 2]\nmean: 0.5\n")

    m = load_model(plain, check_gradients=False)
    assert (m.spec.range, m.spec.mean, m.spec.std, m.spec.layout) == ((0.0, 1.0), (0.0,), (1.0,), "nchw")
    assert m.spec.class_names is None
    assert m.spec.source["range"] == m.spec.source["mean"] == m.spec.source["std"] == "default"

    m = load_model(meta, check_gradients=False)
    assert (m.spec.range, m.spec.mean, m.spec.std) == ((0.0, 255.0), (10.0,), (20.0,))
    assert m.spec.class_names == tuple(f"c{i}" for i in range(10))
    assert {k: m.spec.source[k] for k in ("range", "mean", "std", "layout", "class_names")} == dict.fromkeys(
        ("range", "mean", "std", "layout", "class_names"), "metadata"
    )
    # The model applies the metadata's normalisation itself: canonical inputs are in [0, 255].
    x = rng_images(4, (1, 28, 28), seed=8) * 255
    with torch.no_grad():
        ref = net((torch.from_numpy(x) - 10) / 20).numpy()
    np.testing.assert_allclose(m.predict(x).outputs, ref, atol=1e-4)

    m = load_model(meta, spec_file=str(yaml_file), check_gradients=False)
    assert (m.spec.range, m.spec.mean, m.spec.std) == ((0.0, 2.0), (0.5,), (20.0,))
    assert (m.spec.source["range"], m.spec.source["mean"], m.spec.source["std"]) == ("yaml", "yaml", "metadata")

    m = load_model(meta, spec={"range": "0,5", "std": None}, spec_file=str(yaml_file), check_gradients=False)
    assert (m.spec.range, m.spec.mean, m.spec.std) == ((0.0, 5.0), (0.5,), (20.0,))
    assert (m.spec.source["range"], m.spec.source["mean"], m.spec.source["std"]) == ("flag", "yaml", "metadata")
    assert m.describe()["spec"]["source"]["range"] == "flag"


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"range": "1,0"}, "^flag range must be two numbers"),
        ({"std": "0"}, "^flag std must be positive"),
        ({"mean": "0.1,0.2,0.3"}, "^mean has 3 values but the model has 1 input channels"),
        (None, "^metadata layout must be one of"),
    ],
)
def test_invalid_spec_is_refused(tmp_path: Path, bad: dict | None, message: str) -> None:
    path = export_onnx(small_cnn(seed=8), tmp_path / "m.onnx", torch.zeros(2, 1, 28, 28))
    if bad is None:
        path = _with_metadata(path, tmp_path / "bad_meta.onnx", {"advaudit.layout": "sideways"})
    with pytest.raises(SpecError, match=message):
        load_model(path, spec=bad, check_gradients=False)


def test_input_without_declared_shape_uses_the_spec(tmp_path: Path) -> None:
    """An ONNX input with no shape at all: load with --input-shape instead of crashing."""
    h = onnx.helper
    w = np.random.default_rng(0).standard_normal((784, 10)).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Reshape", ["input", "shape"], ["flat"]), h.make_node("MatMul", ["flat", "w"], ["logits"])],
        "g",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, None)],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.array([-1, 784]), "shape")],
    )
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "noshape.onnx"))

    model = load_model(tmp_path / "noshape.onnx", spec={"input_shape": "1,28,28"})
    assert model.input_shape == (1, 28, 28) and model.num_classes == 10
    x = rng_images(3, (1, 28, 28), seed=9)
    np.testing.assert_allclose(model.predict(x).outputs, x.reshape(3, -1) @ w, atol=1e-4)

    # a caller that learns the shape from the data gets the model complete (probed) from load_model
    loaded = load_model(tmp_path / "noshape.onnx", input_shape=(1, 28, 28))
    assert loaded.input_shape == (1, 28, 28) and loaded.num_classes == 10
    assert loaded.describe() == {**model.describe(), "spec": loaded.spec.to_dict()}
    assert load_model(tmp_path / "noshape.onnx").input_shape is None


# --------------------------------------------------------------------- defensive loading
@pytest.fixture(scope="module")
def external_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model whose weights sit in ``weights.bin`` beside it, and a copy of that file elsewhere."""
    root = tmp_path_factory.mktemp("external")
    proto = onnx.load(str(export_onnx(small_cnn(seed=9), root / "plain.onnx", torch.zeros(2, 1, 28, 28))))
    good = root / "good"
    good.mkdir()
    onnx.save_model(
        proto, str(good / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
        location="weights.bin", size_threshold=0,
    )
    outside = root / "outside"
    outside.mkdir()
    (outside / "x.bin").write_bytes((good / "weights.bin").read_bytes())
    return good / "model.onnx", outside / "x.bin"


def _relocated(src: Path, folder: Path, location: str) -> Path:
    proto = onnx.load(str(src), load_external_data=False)
    n = 0
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
                    n += 1
    assert n > 0
    folder.mkdir()
    onnx.save(proto, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_external_data_inside_the_folder_loads(external_model: tuple[Path, Path]) -> None:
    path, _ = external_model
    assert path.stat().st_size < 4096 and (path.parent / "weights.bin").stat().st_size > 10_000
    model = load_model(path)
    assert model.num_classes == 10 and model.has_gradients
    x = rng_images(3, (1, 28, 28), seed=10)
    with torch.no_grad():
        ref = small_cnn(seed=9)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x).outputs, ref, atol=1e-4)


@pytest.mark.parametrize("case", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(
    external_model: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    path, outside = external_model
    if case == "parent":
        # tmp_path/evil/model.onnx -> tmp_path/x.bin, which exists and holds valid weights.
        (tmp_path / "x.bin").write_bytes(outside.read_bytes())
        bad = _relocated(path, tmp_path / "evil", "../x.bin")
    elif case == "absolute":
        bad = _relocated(path, tmp_path / "evil", str(outside))
    else:
        bad = _relocated(path, tmp_path / "evil", "weights.bin")
        try:
            os.symlink(outside, tmp_path / "evil" / "weights.bin")
        except OSError:
            pytest.skip("symlinks are not available here")
    with pytest.raises(ModelError, match="^refused: .*outside the model's folder"):
        load_model(bad)


def test_missing_external_data_is_reported(external_model: tuple[Path, Path], tmp_path: Path) -> None:
    bad = _relocated(external_model[0], tmp_path / "m", "nothing.bin")
    with pytest.raises(ModelError, match="missing"):
        load_model(bad)


def test_size_limits(external_model: tuple[Path, Path], tmp_path: Path) -> None:
    plain = export_onnx(small_cnn(seed=10), tmp_path / "plain.onnx", torch.zeros(2, 1, 28, 28))
    with pytest.raises(ModelError, match="over the .* limit") as exc:
        load_model(plain, max_size_mb=0.01)
    assert exc.value.hint and "--max-model-size" in exc.value.hint
    # The model file is tiny; its external data is what goes over the limit.
    with pytest.raises(ModelError, match="external data .* over the .* limit"):
        load_model(external_model[0], max_size_mb=0.01)
    assert load_model(plain, max_size_mb=1.0, check_gradients=False).num_classes == 10


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(tmp_path / "empty.onnx")
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


# ------------------------------------------------------------------- eval mode, determinism
class _WithDropoutAndBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_model_runs_in_eval_mode_and_is_deterministic(tmp_path: Path, fmt: str) -> None:
    net = _WithDropoutAndBN()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    if fmt == "torchscript":
        # Saved in training mode; the archive carries its input shape in advaudit.json.
        path = tmp_path / "net.pt"
        extra = {"advaudit.json": json.dumps({"input_shape": [1, 28, 28], "range": [0, 1]})}
        torch.jit.save(torch.jit.script(net.train()), str(path), _extra_files=extra)
        model = load_model(path)
        assert model.spec.source["input_shape"] == "metadata"
        module = model._module
    else:
        path = export_onnx(net, tmp_path / "net.onnx", torch.zeros(2, 1, 28, 28))
        model = load_model(path)
        module = model._twin
    assert model.input_shape == (1, 28, 28)
    assert model.has_gradients, model.gradients.note
    assert not any(m.training for m in module.modules())

    x = torch.from_numpy(rng_images(6, (1, 28, 28), seed=12))
    with torch.no_grad():
        ref = net.eval()(x).numpy()
    out1, out2 = model.predict(x).outputs, model.predict(x).outputs
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_allclose(out1, ref, atol=1e-4)
    # Batch statistics are not used: one sample alone gives the same outputs.
    np.testing.assert_allclose(model.predict(x[:1]).outputs, out1[:1], atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x), model.logits(x), atol=0, rtol=0)
        np.testing.assert_allclose(model.logits(x).numpy(), ref, atol=1e-4)


class _Strided(torch.nn.Module):
    """Strided slicing becomes an ONNX Slice node (as in ResNet-20's option-A shortcuts)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.fc = torch.nn.Linear(14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, :, ::2, ::2].flatten(1))


def test_twin_forward_emits_no_warnings(tmp_path: Path) -> None:
    net = _Strided().eval()
    path = export_onnx(net, tmp_path / "strided.onnx", torch.zeros(2, 1, 28, 28))
    x = torch.from_numpy(rng_images(3, (1, 28, 28), seed=13))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(path)
        model.predict(x)
        grad = _input_grad(model.logits, x, torch.tensor([0, 1, 2]))
    assert model.has_gradients and grad.shape == x.shape
    assert [str(w.message)[:100] for w in caught] == []


def test_torchscript_query_path_agrees_with_predict(tmp_path: Path) -> None:
    """Bulk queries go through a frozen, inference-optimised copy that must agree with the module."""
    net = small_cnn(side=8)
    path = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(path),
                       _extra_files={"advaudit.json": json.dumps({"input_shape": [1, 8, 8]})})
    model = load_model(path)
    x = rng_images(64, (1, 8, 8))
    plain, fast = model.predict(x), model.query(x)
    assert model._fast is not False  # built on first query (None only when freezing is unavailable)
    np.testing.assert_array_equal(plain.labels, fast.labels)
    np.testing.assert_allclose(fast.outputs, plain.outputs, atol=1e-4)
    assert model.query(x[:0]).outputs.shape[0] == 0
