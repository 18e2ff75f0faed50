"""ImageNet-scale inputs: --resize/--crop (torchvision semantics), labels of flat image folders,
batch sizes fitted to the input size, progress, and `info`'s input size and parameter count."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from rich.console import Console
from torchvision import transforms as T

from advaudit.audit import load_config, run_audit
from advaudit.audit.config import ConfigError
from advaudit.cli import cli, main
from advaudit.cli.common import Output, ProgressBar
from advaudit.data import AutoBatchSize, default_batch_size, load_data, prepare, resolve_batch_size
from advaudit.data.batching import VALUES_PER_BATCH
from advaudit.data.transforms import parse_size, resize_crop_array, resize_crop_batch, resize_crop_pil
from advaudit.errors import DataError
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS, export_onnx

IMAGENET_PHOTOS = ["imagenet_00_243.jpg", "imagenet_03_990.jpg", "imagenet_10_541.jpg", "imagenet_14_129.jpg"]
"""Four of the foolbox ImageNet samples: three 512x512, one 1024x683 (the label ends each name)."""


def _reference(resize: int | list[int], crop: int | list[int]) -> T.Compose:
    return T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(crop)])


def _photo(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth random picture (JPEG-friendly), ``width`` x ``height``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    return img.convert(mode)


def _mixed_folder(folder: Path) -> dict[str, int]:
    """Three JPEGs of different sizes and aspect ratios, named ``<name>_<label>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"a_photo_7.jpg": (300, 200), "b_photo_2.jpg": (200, 300), "c_photo_9.jpg": (256, 256)}
    for i, (name, (w, h)) in enumerate(files.items()):
        _photo(i, w, h).save(folder / name, quality=90)
    return {name: int(name.rsplit("_", 1)[1].split(".")[0]) for name in files}


class _Tiny(torch.nn.Module):
    """Patchify conv (stride = kernel), ReLU, global average pool, linear head."""

    def __init__(self, patch: int, classes: int, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, channels, patch, stride=patch), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A 10-class 3x64x64 network as ONNX and TorchScript, and its parameter count."""
    net = _Tiny(8, 10).eval()
    folder = tmp_path_factory.mktemp("tiny64")
    onnx_path = export_onnx(net, folder / "tiny64.onnx", torch.zeros(2, 3, 64, 64))
    ts_path = folder / "tiny64.pt"
    with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(net, torch.zeros(2, 3, 64, 64)).save(str(ts_path))
    return onnx_path, ts_path, sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------- resize / crop
@pytest.mark.parametrize("size", [(512, 512), (1024, 683), (683, 1024), (1600, 1100), (250, 180), (120, 90)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_crop_equals_torchvision_on_pil_images(size: tuple[int, int], mode: str) -> None:
    img = _photo(1, *size, mode=mode)
    want = np.asarray(_reference(256, 224)(img))
    got = resize_crop_pil(img, (256,), (224,))
    assert got.shape == want.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    # the same pixels from a (C, H, W) array, as npz data holds them
    chw = np.asarray(img)[None] if mode == "L" else np.asarray(img).transpose(2, 0, 1)
    arr = resize_crop_array(chw, (256,), (224,))
    np.testing.assert_array_equal(arr, want[None] if mode == "L" else want.transpose(2, 0, 1))


@pytest.mark.parametrize("resize,crop", [((256,), (224,)), ((40, 50), (32, 36)), (None, (48,)), ((20,), (24,))])
def test_resize_crop_equals_torchvision_on_tensors(resize: tuple[int, ...] | None, crop: tuple[int, ...]) -> None:
    x = np.random.default_rng(2).random((3, 61, 97), dtype=np.float32)
    ops = ([T.Resize(list(resize), antialias=True)] if resize else []) + [T.CenterCrop(list(crop))]
    want = T.Compose(ops)(torch.from_numpy(x)).numpy()
    got = resize_crop_array(x, resize, crop)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # four-channel uint8 takes torchvision's tensor path (rounded back to uint8)
    x8 = np.random.default_rng(3).integers(0, 256, (4, 61, 97), dtype=np.uint8)
    want8 = T.Compose(ops)(torch.from_numpy(x8)).numpy()
    np.testing.assert_array_equal(resize_crop_array(x8, resize, crop), want8)


def test_resize_crop_batch_and_sizes() -> None:
    x = np.random.default_rng(4).integers(0, 256, (3, 3, 40, 30), dtype=np.uint8)
    out = resize_crop_batch(x, (16,), (16,))
    assert out.shape == (3, 3, 16, 16) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], resize_crop_array(x[1], (16,), (16,)))
    assert resize_crop_batch(x, None, None) is x
    assert parse_size("256", "--resize") == (256,) and parse_size("224,192", "--crop") == (224, 192)
    for bad in ("0", "a", "1,2,3", "-4"):
        with pytest.raises(DataError, match="is not a size"):
            parse_size(bad, "--resize")
    with pytest.raises(DataError, match=r"need images \(N, C, H, W\)"):
        resize_crop_batch(np.zeros((2, 10), np.float32), None, (4,))


# ---------------------------------------------------------------------- image folders
def test_mixed_size_folder_loads_with_resize_and_crop(tmp_path: Path) -> None:
    labels = _mixed_folder(tmp_path / "photos")
    ds = load_data(tmp_path / "photos", labels_path="from-name", resize=72, crop=64)
    assert ds.format == "images" and ds.x.shape == (3, 3, 64, 64) and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, list(labels.values()))
    assert ds.describe()["transform"] == {"resize": [72], "crop": [64]}
    for i, name in enumerate(labels):
        with Image.open(tmp_path / "photos" / name) as im:
            want = np.asarray(_reference(72, 64)(im.convert("RGB"))).transpose(2, 0, 1)
        np.testing.assert_array_equal(ds.x[i], want)
    # --resize S alone cannot give one size to different aspect ratios; --resize H,W can
    with pytest.raises(DataError, match="different aspect ratios.*add --crop"):
        load_data(tmp_path / "photos", resize=72)
    assert load_data(tmp_path / "photos", resize="64,48").x.shape == (3, 3, 64, 48)
    assert load_data(tmp_path / "photos", crop=250).x.shape == (3, 3, 250, 250)  # crop alone pads small images
    # the model's channel count decides greyscale or RGB
    assert load_data(tmp_path / "photos", crop=64, channels=1).x.shape == (3, 1, 64, 64)


def test_mixed_size_folder_without_resize_is_a_one_line_error(tmp_path: Path, tiny64, capsys) -> None:
    _mixed_folder(tmp_path / "photos")
    with pytest.raises(DataError, match=r"different sizes \(WxH: 300x200, 200x300, 256x256\)"):
        load_data(tmp_path / "photos")
    code = main(["info", str(tiny64[0]), "--data", str(tmp_path / "photos"), "--labels", "from-name"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith("advaudit: error: images in")
    assert "have different sizes" in lines[-1] and "pass --resize/--crop" in lines[-1]
    # with the options the same command works, and says what it did
    code = main(["info", str(tiny64[0]), "--data", str(tmp_path / "photos"), "--labels", "from-name",
                 "--resize", "72", "--crop", "64", "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["data"]["n"] == 3 and result["data"]["shape"] == [3, 64, 64]
    assert result["data"]["transform"] == {"resize": [72], "crop": [64]}


def test_images_of_another_size_than_the_model_name_resize_crop(tmp_path: Path, tiny64) -> None:
    model = load_model(tiny64[0], check_gradients=False)
    for i in range(2):
        _photo(i, 80, 80).save(tmp_path / f"p_{i}.png")
    with pytest.raises(DataError, match=r"fit the images to 64x64 with --resize/--crop"):
        prepare(load_data(tmp_path, labels_path="from-name"), model)


def test_flat_folder_labels(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in ("x1.png", "x2.png", "sub.png"):
        _photo(0, 16, 16).save(folder / name)
    assert load_data(folder).y is None  # unlabelled unless asked: IMG_1234.jpg is no label
    listing = tmp_path / "labels.csv"
    listing.write_text("file,label\n# comment\nx1.png,4\nx2.png, 0\nsub.png\t7\n")
    np.testing.assert_array_equal(load_data(folder, labels_path=listing).y, [7, 4, 0])  # files in name order
    listing.write_text("x1.png 4\n")
    with pytest.raises(DataError, match=r"no label for sub.png \(2 of 3 images unlabelled\)"):
        load_data(folder, labels_path=listing)
    with pytest.raises(DataError, match=r"from-name: sub.png does not end in _<label>"):
        load_data(folder, labels_path="from-name")
    with pytest.raises(DataError, match="labels file not found"):
        load_data(folder, labels_path=tmp_path / "missing.txt")
    classes = tmp_path / "classes"
    (classes / "n01").mkdir(parents=True)
    _photo(0, 16, 16).save(classes / "n01" / "a.png")
    with pytest.raises(DataError, match="class sub-folders, which give the labels"):
        load_data(classes, labels_path="from-name")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="--labels from-name labels image files; d.npz is npz data"):
        load_data(tmp_path / "d.npz", labels_path="from-name")


def test_only_the_selected_images_are_decoded(tmp_path: Path) -> None:
    for i in range(3):
        _photo(i, 16, 16).save(tmp_path / f"ok_{i}.png")
    (tmp_path / "zz_broken_9.png").write_bytes(b"not an image")
    ds = load_data(tmp_path, labels_path="from-name", n=3)
    np.testing.assert_array_equal(ds.y, [0, 1, 2])
    with pytest.raises(DataError, match="cannot read image"):
        load_data(tmp_path, labels_path="from-name")


# ------------------------------------------------------------------------- batch sizes
def test_default_batch_size() -> None:
    for shape in [(1, 28, 28), (3, 32, 32), (784,), (3, 104, 104)]:  # MNIST, CIFAR, GTSRB-size keep 256
        assert default_batch_size(shape, 256) == 256
        assert default_batch_size(shape, 32) == 32
    assert default_batch_size((3, 224, 224), 256) == 32 < 256
    assert default_batch_size((3, 299, 299), 256) == 16
    assert default_batch_size((3, 512, 512), 32) == 8
    assert default_batch_size((3, 4096, 4096), 256) == 1
    assert default_batch_size(None, 256) == 256
    b = default_batch_size((3, 224, 224))
    assert b * 3 * 224 * 224 <= VALUES_PER_BATCH < 2 * b * 3 * 224 * 224
    # a user's choice stands; the marked default is fitted
    assert resolve_batch_size(256, (3, 224, 224)) == 256
    assert resolve_batch_size(AutoBatchSize(256), (3, 224, 224)) == 32
    assert resolve_batch_size(AutoBatchSize(256), (1, 28, 28)) == 256
    assert resolve_batch_size(None, (3, 224, 224), base=128) == 32


def test_cli_batch_size_follows_the_input_size(tmp_path: Path, capsys) -> None:
    mnist = SAMPLE_MODELS / "mnist_cnn.onnx"
    npz = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"
    assert main(["info", str(mnist), "--data", str(npz), "--n", "8", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["batch_size"] == 256  # unchanged for MNIST
    net = _Tiny(16, 1000).eval()
    big = export_onnx(net, tmp_path / "big.onnx", torch.zeros(2, 3, 224, 224))
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 224, 224), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([1, 2]))
    assert main(["info", str(big), "--data", str(tmp_path / "d.npz"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["batch_size"] == 32
    assert main(["info", str(big), "--data", str(tmp_path / "d.npz"), "--batch-size", "256", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["batch_size"] == 256


# ----------------------------------------------------------------------------- progress
def test_progress_bar_draws_and_stays_silent_when_quiet() -> None:
    out = Output()
    out.err = Console(file=io.StringIO(), force_terminal=True, width=100)
    with ProgressBar(out) as progress:
        assert progress is not None
        progress("fgsm eps=0.01", 2, 4)
        progress("fgsm eps=0.01", 4, 4)
    assert "fgsm eps=0.01" in out.err.file.getvalue()
    quiet = Output(quiet=True)
    with ProgressBar(quiet) as progress:
        assert progress is None
    silent = Output()
    silent.err = Console(file=io.StringIO(), force_terminal=True, width=100)
    with ProgressBar(silent):
        pass
    assert silent.err.file.getvalue() == ""  # nothing reported, nothing drawn


def _recorded_attack(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[object, list[tuple[str, int, int]]]:
    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(ProgressBar, "update", lambda self, label, done, total: calls.append((label, done, total)))
    return CliRunner().invoke(cli, args), calls


def test_attack_shows_progress_per_batch(tmp_path: Path, tiny64, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = tmp_path / "photos"
    _mixed_folder(photos)
    _photo(5, 90, 70).save(photos / "d_photo_1.jpg")
    # label every photo with the model's own prediction, so that all four are attacked
    model = load_model(tiny64[0], check_gradients=False)
    pred = model.predict(prepare(load_data(photos, resize=72, crop=64), model, need_labels=False).x).labels
    for f, label in zip(sorted(photos.iterdir()), pred):
        f.rename(f.with_name(f"{f.stem.rsplit('_', 1)[0]}_{label}.jpg"))
    result, calls = _recorded_attack(monkeypatch, [
        "attack", str(tiny64[0]), "--data", str(photos), "--labels", "from-name", "--resize", "72", "--crop", "64",
        "--attack", "pgd:steps=2", "--eps", "0.5", "--batch-size", "2", "--report", str(tmp_path / "r.json"),
    ])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["clean_accuracy"] == 1.0
    assert [c for c in calls if c[0].startswith("loading")] == [("loading photos", i, 4) for i in range(1, 5)]
    assert [c for c in calls if c[0].startswith("pgd")] == [("pgd eps=0.5", 2, 4), ("pgd eps=0.5", 4, 4)]


# --------------------------------------------------------------------------------- info
def _onnx_weights(path: Path) -> int:
    proto = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def test_info_shows_input_size_classes_and_parameters(capsys) -> None:
    mnist = SAMPLE_MODELS / "mnist_cnn.onnx"
    assert main(["info", str(mnist), "--format", "json"]) == 0
    m = json.loads(capsys.readouterr().out)["model"]
    assert m["input_shape"] == [1, 28, 28] and m["num_classes"] == 10
    assert m["parameters"] == _onnx_weights(mnist) > 100_000 and m["parameters_source"] == "torch module"
    assert main(["info", str(mnist)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "input shape (C,H,W) │ [1, 28, 28]" in out and "classes │ 10" in out
    assert f"parameters │ {m['parameters']:,} (" in out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_info_parameters_of_a_3x64x64_model(tiny64, fmt: str, capsys) -> None:
    onnx_path, ts_path, count = tiny64
    path = onnx_path if fmt == "onnx" else ts_path
    assert main(["info", str(path), "--input-shape", "3,64,64", "--format", "json"]) == 0
    m = json.loads(capsys.readouterr().out)["model"]
    assert m["input_shape"] == [3, 64, 64] and m["num_classes"] == 10
    assert m["parameters"] == count
    # without gradients: the ONNX initializers / the TorchScript module as loaded
    from advaudit.info import parameter_count

    model = load_model(path, spec={"input_shape": "3,64,64"}, check_gradients=False)
    assert model.torch_module() is None or fmt == "torchscript"
    assert parameter_count(model) == (count, "ONNX initializers" if fmt == "onnx" else "torch module")


# -------------------------------------------------------------------------------- audit
def test_audit_config_takes_resize_crop_and_labels(tmp_path: Path, tiny64) -> None:
    _mixed_folder(tmp_path / "photos")
    text = ("data: photos\nlabels: from-name\nresize: 72\ncrop: [64, 64]\nn: 3\n"
            "steps:\n  - kind: attack\n    attacks: ['fgsm']\n    eps: 0.01\n    examples: false\n")
    config_path = tmp_path / "audit.yaml"
    config_path.write_text(text)
    config = load_config(config_path)
    step = config.steps[0]
    assert step["resize"] == 72 and step["crop"] == [64, 64] and step["labels"] == "from-name"
    report = run_audit(tiny64[0], config, tmp_path / "out")
    data = report["steps"][0]["report"]["data"]
    assert data["n"] == 3 and data["shape"] == [3, 64, 64] and data["transform"] == {"resize": [72], "crop": [64, 64]}
    with pytest.raises(ConfigError, match="resize"):
        load_config(config_path, text=text.replace("resize: 72", "resize: big"))
    with pytest.raises(ConfigError, match="crop"):
        load_config(config_path, text=text.replace("crop: [64, 64]", "crop: [1, 2, 3]"))


# ----------------------------------------------------------------- real ImageNet photos
def _net_that_knows(photos: list[Path], labels: list[int]) -> torch.nn.Module:
    """A 1000-class 3x224x224 network whose head is solved so that each photo, put through
    torchvision's Resize(256) + CenterCrop(224), gets its own label (clean accuracy 1)."""
    net = _Tiny(16, 1000).eval()
    ref = _reference(256, 224)
    images = []
    for p in photos:
        with Image.open(p) as im:
            images.append(T.functional.to_tensor(ref(im.convert("RGB"))))
    with torch.no_grad():
        feats = net.features(torch.stack(images)).double()  # (4, 16)
        rows = (torch.linalg.pinv(feats) * 10.0).T  # (4, 16): rows @ feats.T = 10 I
        net.head.weight.zero_()
        net.head.bias.zero_()
        for r, label in zip(rows, labels):
            net.head.weight[label] = r.float()
    return net


def test_attack_on_real_imagenet_photos(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = shared_data / "samples" / "foolbox"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in IMAGENET_PHOTOS:
        if not (source / name).is_file():
            pytest.skip(f"{source / name} is absent")
        shutil.copy(source / name, photos / name)
    labels = [243, 990, 541, 129]
    net = _net_that_knows([photos / n for n in IMAGENET_PHOTOS], labels)
    model = export_onnx(net, tmp_path / "imagenet_tiny.onnx", torch.zeros(2, 3, 224, 224))

    ds = load_data(photos, labels_path="from-name", resize=256, crop=224, channels=3)
    np.testing.assert_array_equal(ds.y, labels)
    for i, name in enumerate(IMAGENET_PHOTOS):
        with Image.open(photos / name) as im:
            want = np.asarray(_reference(256, 224)(im.convert("RGB"))).transpose(2, 0, 1)
        np.testing.assert_array_equal(ds.x[i], want)

    report = tmp_path / "r.json"
    result, calls = _recorded_attack(monkeypatch, [
        "attack", str(model), "--data", str(photos), "--labels", "from-name", "--resize", "256", "--crop", "224",
        "--attack", "fgsm", "--eps", "0.01", "--n", "4", "--report", str(report),
    ])
    assert result.exit_code == 0, result.output
    r = json.loads(report.read_text())
    assert r["data"]["n"] == 4 and r["data"]["shape"] == [3, 224, 224]
    assert r["data"]["transform"] == {"resize": [256], "crop": [224]}
    assert r["model"]["num_classes"] == 1000
    assert r["clean_accuracy"] == 1.0  # the labels and the pixels are torchvision's
    assert ("fgsm eps=0.01", 4, 4) in calls  # 4 samples fit one default batch (32 at 224x224)
    assert "batch size 32" in result.output

    code = main(["attack", str(model), "--data", str(photos), "--labels", "from-name", "--attack", "fgsm", "--n", "4"])
    assert code == 2  # 512x512 and 1024x683 photos need --resize/--crop
