"""Data loading (npz, IDX, CIFAR-10 batches, images), subset selection, and validation against a model."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advaudit.data import load_data, prepare, select
from advaudit.data.loaders import detect_format
from advaudit.errors import DataError
from advaudit.models import load_model

from .conftest import export_onnx, small_cnn


@pytest.fixture(scope="module")
def mnist_net() -> torch.nn.Module:
    return small_cnn(seed=21)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, mnist_net: torch.nn.Module) -> Path:
    return export_onnx(mnist_net, tmp_path_factory.mktemp("data_model") / "m.onnx", torch.zeros(2, 1, 28, 28))


@pytest.fixture(scope="module")
def model01(model_path: Path):
    """A 10-class (1, 28, 28) model with inputs in [0, 1]."""
    return load_model(model_path, check_gradients=False)


@pytest.fixture(scope="module")
def model255(model_path: Path):
    """The same network declared with inputs in [0, 255] (std 255 keeps its function)."""
    return load_model(model_path, spec={"range": "0,255", "std": "255"}, check_gradients=False)


def _images(n: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------------- npz
def test_npz_uint8_nchw(tmp_path: Path, model01) -> None:
    x, y = _images(12), np.arange(12) % 10
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=y))
    assert ds.format == "npz" and ds.x.dtype == np.uint8 and ds.x.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.indices, np.arange(12))
    data = prepare(ds, model01)
    assert data.x.dtype == np.float32 and data.x.shape == (12, 1, 28, 28)
    np.testing.assert_allclose(data.x, x / 255.0, atol=1e-7)
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0


@pytest.mark.parametrize("layout", ["nhwc", "nhw"])
def test_npz_channels_last_and_greyscale_become_nchw(tmp_path: Path, model01, layout: str) -> None:
    x = _images(6)  # NCHW reference
    stored = x.transpose(0, 2, 3, 1) if layout == "nhwc" else x[:, 0]
    ds = load_data(_npz(tmp_path / "d.npz", x=stored, y=np.arange(6)))
    assert ds.x.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(prepare(ds, model01).x, x / np.float32(255.0))


def test_npz_rgb_nhwc(tmp_path: Path) -> None:
    x = _images(4, (3, 32, 32), seed=1)
    ds = load_data(_npz(tmp_path / "d.npz", x=x.transpose(0, 2, 3, 1), y=np.arange(4)))
    assert ds.x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(ds.x, x)


def test_npz_float_and_one_hot_labels(tmp_path: Path, model01) -> None:
    x = np.random.default_rng(2).random((5, 1, 28, 28), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[[3, 1, 4, 1, 5]]
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=y))
    np.testing.assert_array_equal(ds.y, [3, 1, 4, 1, 5])
    data = prepare(ds, model01)
    np.testing.assert_array_equal(data.x, x)  # float data is taken as is


def test_npz_class_names_and_no_labels(tmp_path: Path, model01) -> None:
    names = np.array([f"digit{i}" for i in range(10)])
    ds = load_data(_npz(tmp_path / "d.npz", x=_images(3), class_names=names))
    assert ds.y is None and ds.class_names == list(names)
    with pytest.raises(DataError, match="has no labels"):
        prepare(ds, model01)
    assert prepare(ds, model01, need_labels=False).y is None


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"images": np.zeros((2, 1, 28, 28), np.uint8)}, "has no array 'x'"),
        ({"x": np.array([{"a": 1}], dtype=object)}, "plain numeric arrays"),
        ({"x": np.zeros((3, 1, 28, 28), np.uint8), "y": np.arange(4)}, "3 images but 4 labels"),
        ({"x": np.zeros((3, 1, 28, 28), np.uint8), "y": np.array([0.5, 1, 2])}, "whole numbers"),
        ({"x": np.zeros((0, 1, 28, 28), np.uint8)}, "holds no samples"),
        ({"x": np.full((2, 1, 2, 2), "a")}, "expected numbers"),
    ],
    ids=["no-x", "objects", "label-count", "fractional-labels", "empty", "strings"],
)
def test_bad_npz_is_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_data(_npz(tmp_path / "d.npz", **arrays))


def test_not_an_npz_and_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(tmp_path / "d.npz")
    np.save(tmp_path / "a.npy", np.zeros((2, 1, 28, 28), np.uint8))  # a bare .npy named .npz
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(tmp_path / "a.npz")
    (tmp_path / "d.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_data(tmp_path / "d.csv")
    with pytest.raises(DataError, match="not found"):
        load_data(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="unknown data format"):
        load_data(tmp_path / "d.csv", fmt="parquet")


# ----------------------------------------------------------------------------------- IDX
def _idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_with_sibling_labels(tmp_path: Path, model01, gz: bool) -> None:
    x = _images(7)[:, 0]  # IDX images are (N, H, W)
    y = np.array([7, 2, 1, 0, 4, 1, 4], np.uint8)
    suffix = ".gz" if gz else ""
    write = (lambda p, b: gzip.open(p, "wb").write(b)) if gz else (lambda p, b: p.write_bytes(b))
    write(tmp_path / f"t10k-images-idx3-ubyte{suffix}", _idx_bytes(x))
    write(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", _idx_bytes(y))
    path = tmp_path / f"t10k-images-idx3-ubyte{suffix}"
    assert detect_format(path) == "idx"
    ds = load_data(path)
    assert ds.format == "idx" and ds.x.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(ds.x[:, 0], x)
    np.testing.assert_array_equal(ds.y, y.astype(np.int64))
    assert len(prepare(ds, model01)) == 7


def test_idx_explicit_labels_and_errors(tmp_path: Path) -> None:
    x = _images(4)[:, 0]
    (tmp_path / "imgs.idx").write_bytes(_idx_bytes(x))
    (tmp_path / "lab.idx").write_bytes(_idx_bytes(np.array([1, 2, 3, 4], np.uint8)))
    (tmp_path / "few.idx").write_bytes(_idx_bytes(np.array([1, 2], np.uint8)))
    ds = load_data(tmp_path / "imgs.idx", labels_path=tmp_path / "lab.idx")
    np.testing.assert_array_equal(ds.y, [1, 2, 3, 4])
    assert load_data(tmp_path / "imgs.idx").y is None  # no sibling labels file
    with pytest.raises(DataError, match="2 labels for 4 images"):
        load_data(tmp_path / "imgs.idx", labels_path=tmp_path / "few.idx")
    with pytest.raises(DataError, match="holds labels, not images"):
        load_data(tmp_path / "lab.idx")
    (tmp_path / "short.idx").write_bytes(_idx_bytes(x)[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_data(tmp_path / "short.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(DataError, match="bad magic"):
        load_data(tmp_path / "magic.idx")


def test_real_mnist_idx(shared_data: Path, mnist_sample) -> None:
    path = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    model, _ = mnist_sample
    ds = load_data(path, n=300, offset=9000)
    assert ds.x.shape == (300, 1, 28, 28) and ds.y is not None
    np.testing.assert_array_equal(ds.indices, np.arange(9000, 9300))
    data = prepare(ds, model)
    assert float(np.mean(model.predict(data.x).labels == data.y)) > 0.95


def test_real_gtsrb_channels_last(shared_data: Path) -> None:
    path = shared_data / "gtsrb" / "gtsrb_test_12630_32x32.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    ds = load_data(path, n=430, seed=0)
    assert ds.x.shape == (430, 3, 32, 32) and ds.x.dtype == np.uint8
    assert set(np.unique(ds.y)) <= set(range(43))
    with np.load(path) as f:
        np.testing.assert_array_equal(ds.x[0], f["x"][ds.indices[0]].transpose(2, 0, 1))


# ------------------------------------------------------------------------- CIFAR-10 batches
def test_cifar10_batch(tmp_path: Path) -> None:
    x = _images(6, (3, 32, 32), seed=3)
    labels = [3, 8, 8, 0, 6, 6]
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": x.reshape(6, -1),
             b"filenames": [b"a.png"] * 6}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    names = "airplane automobile bird cat deer dog frog horse ship truck".split()
    meta = {b"label_names": [n.encode() for n in names],
            b"num_vis": 3072}
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(DataError, match="cannot tell the format"):  # never guessed
        load_data(tmp_path / "test_batch")
    ds = load_data(tmp_path / "test_batch", fmt="cifar10-batch")
    assert ds.format == "cifar10-batch" and ds.x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.class_names is not None and ds.class_names[3] == "cat"


def test_cifar10_batch_written_by_python3_protocol(tmp_path: Path) -> None:
    x = _images(2, (3, 32, 32), seed=4)
    (tmp_path / "b").write_bytes(pickle.dumps({b"labels": [1, 2], b"data": x.reshape(2, -1)}, protocol=4))
    np.testing.assert_array_equal(load_data(tmp_path / "b", fmt="cifar10-batch").x, x)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar10_batch_is_refused_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    assert b"system" in payload
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match="refused"):
        load_data(tmp_path / "test_batch", fmt="cifar10-batch")
    assert not marker.exists()
    # Other callables are refused too, even harmless-looking builtins.
    (tmp_path / "b2").write_bytes(pickle.dumps({b"data": bytearray(b"x"), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused"):
        load_data(tmp_path / "b2", fmt="cifar10-batch")


def test_bad_cifar10_batches(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(pickle.dumps({b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="no data/labels"):
        load_data(tmp_path / "a", fmt="cifar10-batch")
    (tmp_path / "b").write_bytes(pickle.dumps({b"labels": [0], b"data": np.zeros((1, 100), np.uint8)}, protocol=2))
    with pytest.raises(DataError, match=r"expected \(N, 3072\)"):
        load_data(tmp_path / "b", fmt="cifar10-batch")
    (tmp_path / "c").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_data(tmp_path / "c", fmt="cifar10-batch")


# --------------------------------------------------------------------------------- images
def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = {}
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            arrays[(cls, i)] = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            _png(tmp_path / "imgs" / cls / f"{i}.png", arrays[(cls, i)])
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    assert detect_format(tmp_path / "imgs") == "image-folder"
    ds = load_data(tmp_path / "imgs")
    assert ds.format == "image-folder"
    assert ds.class_names == ["cat", "dog"]
    assert ds.x.shape == (5, 3, 8, 10) and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.x[0], arrays[("cat", 0)].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds.x[4], arrays[("dog", 1)].transpose(2, 0, 1))


def test_image_folder_with_numbered_greyscale_classes(tmp_path: Path, model01) -> None:
    for cls in ("0", "2", "10"):
        _png(tmp_path / "d" / cls / "a.png", _images(1)[0, 0])
    ds = load_data(tmp_path / "d")
    assert ds.class_names is None
    np.testing.assert_array_equal(ds.y, [0, 2, 10])  # the folder name is the label
    assert ds.x.shape == (3, 1, 28, 28)
    with pytest.raises(DataError, match=r"1 labels are outside 0..9 \(e.g. 10\)"):
        prepare(ds, model01)


def test_flat_image_folder_and_single_image(tmp_path: Path, model01) -> None:
    x = _images(3)
    for i in range(3):
        _png(tmp_path / "flat" / f"img{i}.png", x[i, 0])
    assert detect_format(tmp_path / "flat") == "images"
    ds = load_data(tmp_path / "flat")
    assert ds.format == "images" and ds.y is None
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_allclose(prepare(ds, model01, need_labels=False).x, x / 255.0, atol=1e-7)
    one = load_data(tmp_path / "flat" / "img1.png")
    np.testing.assert_array_equal(one.x, x[1:2])


def test_image_errors(tmp_path: Path) -> None:
    _png(tmp_path / "mixed" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match="different sizes"):
        load_data(tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_data(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_data(tmp_path / "bad")


# ------------------------------------------------------------------------------ selection
def test_offset_and_first_n() -> None:
    np.testing.assert_array_equal(select(100, None, 5, 10, None), np.arange(10, 15))
    np.testing.assert_array_equal(select(100, None, None, 95, None), np.arange(95, 100))
    np.testing.assert_array_equal(select(10, None, 50, 0, None), np.arange(10))


def test_seeded_selection_is_stratified_and_deterministic(tmp_path: Path) -> None:
    y = np.repeat([0, 1, 2], [60, 30, 10])
    np.random.default_rng(0).shuffle(y)
    x = np.zeros((100, 1, 4, 4), np.uint8)
    x[:, 0, 0, 0] = np.arange(100)  # each image remembers its index
    path = _npz(tmp_path / "d.npz", x=x, y=y)

    a = load_data(path, n=20, seed=1)
    assert np.bincount(a.y, minlength=3).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(a.x[:, 0, 0, 0], a.indices)
    np.testing.assert_array_equal(a.y, y[a.indices])
    assert np.all(np.diff(a.indices) > 0)

    b = load_data(path, n=20, seed=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, load_data(path, n=20, seed=2).indices)

    # Rounding keeps the total: 7 of (60, 30, 10) -> 4.2, 2.1, 0.7 -> 4, 2, 1.
    assert np.bincount(load_data(path, n=7, seed=3).y, minlength=3).tolist() == [4, 2, 1]
    c = load_data(path, n=10, offset=50, seed=4)
    assert len(c) == 10 and c.indices.min() >= 50
    counts = np.bincount(y[50:], minlength=3)
    expected = counts * 10 / 50
    assert np.all(np.abs(np.bincount(c.y, minlength=3) - expected) < 1)


def test_seeded_selection_without_labels() -> None:
    idx = select(50, None, 10, 5, 7)
    assert len(idx) == 10 and len(set(idx)) == 10 and idx.min() >= 5
    np.testing.assert_array_equal(idx, select(50, None, 10, 5, 7))


@pytest.mark.parametrize(
    "n,offset,message", [(None, 10, "leaves none"), (None, 50, "leaves none"), (0, 0, "--n must be positive"),
                         (-3, 0, "--n must be positive"), (5, -1, "--offset must be >= 0")],
)
def test_empty_or_invalid_selection(tmp_path: Path, n: int | None, offset: int, message: str) -> None:
    path = _npz(tmp_path / "d.npz", x=_images(10), y=np.arange(10))
    with pytest.raises(DataError, match=message):
        load_data(path, n=n, offset=offset)


# ----------------------------------------------------------------------------- validation
def test_labels_out_of_range(tmp_path: Path, model01) -> None:
    for bad in (10, -1):
        y = np.arange(6) % 10
        y[2] = bad
        ds = load_data(_npz(tmp_path / "d.npz", x=_images(6), y=y))
        with pytest.raises(DataError, match=rf"1 labels are outside 0..9 \(e.g. {bad}\)"):
            prepare(ds, model01)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(tmp_path: Path, model01, bad: float) -> None:
    x = np.random.default_rng(6).random((4, 1, 28, 28), dtype=np.float32)
    x[1, 0, 3, 3] = bad
    x[3, 0, 0, 0] = bad
    with pytest.raises(DataError, match="2 samples contain NaN or inf"):
        prepare(load_data(_npz(tmp_path / "d.npz", x=x, y=np.arange(4))), model01)


def test_shape_mismatch(tmp_path: Path, model01) -> None:
    ds = load_data(_npz(tmp_path / "d.npz", x=_images(3, (3, 32, 32)), y=np.arange(3)))
    with pytest.raises(DataError, match=r"shape \(3, 32, 32\) but the model takes \(1, 28, 28\)"):
        prepare(ds, model01)


def test_flat_samples_of_the_right_size_are_reshaped(tmp_path: Path, model01) -> None:
    x = _images(3)
    data = prepare(load_data(_npz(tmp_path / "d.npz", x=x.reshape(3, 784), y=np.arange(3))), model01)
    np.testing.assert_allclose(data.x, x / 255.0, atol=1e-7)


def test_float_data_outside_the_model_range(tmp_path: Path, model01, model255) -> None:
    x = np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32) * 255  # a [0, 255] float data set
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=np.arange(4)))
    with pytest.raises(DataError, match=r"outside the model's range \[0, 1\]") as exc:
        prepare(ds, model01)
    assert exc.value.hint and "--range" in exc.value.hint
    np.testing.assert_array_equal(prepare(ds, model255).x, x)  # fits a [0, 255] model
    neg = load_data(_npz(tmp_path / "n.npz", x=x / 255 - 0.5, y=np.arange(4)))
    with pytest.raises(DataError, match="outside the model's range"):
        prepare(neg, model01)


def test_uint8_is_scaled_into_a_0_255_model(tmp_path: Path, model01, model255, mnist_net) -> None:
    x = _images(8, seed=8)
    x[0, 0, 0, :2] = (0, 255)
    ds = load_data(_npz(tmp_path / "d.npz", x=x, y=np.arange(8)))
    d255, d01 = prepare(ds, model255), prepare(ds, model01)
    assert model255.spec.range == (0.0, 255.0)
    np.testing.assert_allclose(d255.x, x.astype(np.float32), atol=1e-4)
    assert d255.x[0, 0, 0, 0] == 0.0 and d255.x[0, 0, 0, 1] == pytest.approx(255.0)
    # Both views of the same network see the same images, so they predict the same.
    with torch.no_grad():
        ref = mnist_net(torch.from_numpy(x.astype(np.float32) / 255)).numpy()
    np.testing.assert_allclose(model255.predict(d255.x).outputs, ref, atol=1e-4)
    np.testing.assert_allclose(model01.predict(d01.x).outputs, ref, atol=1e-4)


def test_uint8_into_an_offset_range(tmp_path: Path, model_path: Path) -> None:
    model = load_model(model_path, spec={"range": "-1,1"}, check_gradients=False)
    x = np.array([0, 51, 255], np.uint8).repeat(784 // 3 + 1)[:784].reshape(1, 1, 28, 28)
    data = prepare(load_data(_npz(tmp_path / "d.npz", x=x, y=np.array([0]))), model)
    np.testing.assert_allclose(data.x, x / 127.5 - 1.0, atol=1e-6)


def test_prepare_never_completes_a_model_the_caller_does(tmp_path: Path, mnist_net) -> None:
    """Data preparation only reads the model: a TorchScript model without a declared shape is
    refused (one-line error naming the fix) and left as it was; complete_input_shape completes it."""
    from advaudit.errors import ModelError
    from advaudit.models import complete_input_shape

    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(mnist_net), str(path))
    model = load_model(path)
    assert model.input_shape is None and model.num_classes is None
    ds = load_data(_npz(tmp_path / "d.npz", x=_images(4), y=np.arange(4)))
    with pytest.raises(ModelError, match="complete_input_shape"):
        prepare(ds, model)
    assert model.input_shape is None and model.num_classes is None
    complete_input_shape(model, ds.x.shape[1:])
    data = prepare(ds, model)
    assert model.input_shape == (1, 28, 28) and model.num_classes == 10 and model.has_gradients
    assert model.predict(data.x).outputs.shape == (4, 10)
