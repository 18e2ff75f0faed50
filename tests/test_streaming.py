"""Memory bounded by the batch size: memory-mapped / lazily converted data, spooled adversarial
images, ``--max-input-pixels``; and the same figures as the in-memory path."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advaudit.attacks.masking import GRAD_PROBE
from advaudit.attacks.runner import run_attacks
from advaudit.attacks.store import AdversarialImages, ImageSpool
from advaudit.attacks.suites import AttackChoice
from advaudit.data import DEFAULT_MAX_INPUT_PIXELS, FloatView, load_data, prepare
from advaudit.data.views import ConcatRows, concat_rows, take_rows
from advaudit.detect.evaluate import evaluate
from advaudit.detect.lcr import Mutation, calibrate
from advaudit.errors import DataError
from advaudit.models import load_model
from advaudit.attacks.artifacts import save_adversarial

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"
TIMING = {"time_s", "ms_per_input", "ms_per_input_adversarial", "ms_per_input_normal", "meta", "command"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudit", *args], capture_output=True, text=True)


def _strip(report: object) -> object:
    """A report without timings, creation time, command line and data path."""
    if isinstance(report, dict):
        return {k: _strip(v) for k, v in report.items() if k not in TIMING and k != "path"}
    if isinstance(report, list):
        return [_strip(v) for v in report]
    if isinstance(report, float) and report != report:
        return "nan"  # NaN == NaN for the comparison
    return report


@pytest.fixture(scope="module")
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    with np.load(MNIST_DATA) as f:
        return f["x"][:200].copy(), f["y"][:200].copy()


@pytest.fixture(scope="module")
def mnist_model():
    return load_model(MNIST)


def _eager(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """The conversion prepare() did before it was lazy (all samples at once)."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray((x.astype(np.float32) / 255.0) * (hi - lo) + lo)
    return np.ascontiguousarray(np.clip(x.astype(np.float32), lo, hi))


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", ">f8"])
def test_npz_members_read_exactly_as_np_load(tmp_path: Path, compressed: bool, layout: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    shape = {"nchw": (23, 3, 5, 4), "nhwc": (23, 5, 4, 3), "nhw": (23, 5, 4)}[layout]
    x = (rng.integers(0, 256, size=shape) if dtype == "uint8" else rng.random(shape)).astype(dtype)
    y = rng.integers(0, 10, size=23)
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    for kw in ({}, {"offset": 3, "n": 9}, {"n": 11, "seed": 1}):
        ds = load_data(path, **kw)
        want = x[ds.indices]
        want = want[:, None] if layout == "nhw" else want.transpose(0, 3, 1, 2) if layout == "nhwc" else want
        assert ds.x.dtype == np.dtype(dtype) and ds.x.shape == want.shape
        np.testing.assert_array_equal(ds.x, want)
        np.testing.assert_array_equal(ds.y, y[ds.indices])
        consecutive = "seed" not in kw
        assert isinstance(ds.x, np.memmap) == (not compressed and consecutive)


def test_stored_npz_is_mapped_not_read(tmp_path: Path) -> None:
    x = np.arange(4 * 1 * 8 * 8, dtype=np.uint8).reshape(4, 1, 8, 8)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(4))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("x.npy").compress_type == zipfile.ZIP_STORED
    ds = load_data(path)
    assert isinstance(ds.x, np.memmap) and Path(ds.x.filename) == path.resolve()
    np.testing.assert_array_equal(ds.x, x)


def test_truncated_stored_npz_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 1, 8, 8), np.uint8))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x.npy")
    # claim more rows in the .npy header than the member holds (same header length)
    start = raw.index(b"(10, 1, 8, 8)")
    raw[start : start + 13] = b"(90, 1, 8, 8)"
    path.write_bytes(bytes(raw))
    assert info.compress_type == zipfile.ZIP_STORED
    with pytest.raises(DataError):
        load_data(path)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_prepared_view_equals_the_eager_conversion(tmp_path: Path, mnist_model, dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(50, 28, 28, 1)).astype(np.uint8)  # NHWC, transposed on load
    if dtype == "float32":
        x = (x / 255.0).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=rng.integers(0, 10, size=50))
    data = prepare(load_data(path), mnist_model)
    want = _eager(x.transpose(0, 3, 1, 2))
    view = data.view
    assert isinstance(view, FloatView) and view.dtype == np.float32 and view.shape == want.shape
    assert view.source.dtype == np.dtype(dtype)  # the stored values, not a float32 copy
    np.testing.assert_array_equal(view[5:17], want[5:17])
    np.testing.assert_array_equal(view[[3, 1, 40]], want[[3, 1, 40]])
    mask = rng.random(50) < 0.3
    np.testing.assert_array_equal(view[mask], want[mask])
    np.testing.assert_array_equal(view[-1], want[-1])
    np.testing.assert_array_equal(view[2:9, 0, 3], want[2:9, 0, 3])
    assert view.stats.materialised == 0
    np.testing.assert_array_equal(data.x, want)  # the whole array, on demand
    assert view.stats.materialised == 1
    sub = take_rows(view, mask)
    assert isinstance(sub, FloatView)
    np.testing.assert_array_equal(sub[1:4], want[mask][1:4])
    np.testing.assert_array_equal(take_rows(sub, slice(2, None))[0], want[mask][2])
    both = concat_rows([sub, take_rows(view, slice(0, 3))])
    assert isinstance(both, ConcatRows)
    np.testing.assert_array_equal(np.asarray(both), np.concatenate([want[mask], want[:3]]))
    joined = np.concatenate([want[mask], want[:3]])
    np.testing.assert_array_equal(both[len(sub) - 1 : len(sub) + 2], joined[len(sub) - 1 : len(sub) + 2])
    assert pickle.loads(pickle.dumps(view))[7:9].tobytes() == want[7:9].tobytes()


def test_float_data_is_still_checked_for_range_and_nan(tmp_path: Path, mnist_model) -> None:
    x = np.zeros((30, 1, 28, 28), np.float32)
    x[7, 0, 3, 3] = np.nan
    x[20, 0, 1, 1] = np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=np.zeros(30, np.int64))
    with pytest.raises(DataError, match="2 samples contain NaN or inf"):
        prepare(load_data(path), mnist_model)
    x = np.zeros((30, 1, 28, 28), np.float32)
    x[29, 0, 0, 0] = 3.0
    np.savez(path, x=x, y=np.zeros(30, np.int64))
    with pytest.raises(DataError, match=r"span \[0, 3\]"):
        prepare(load_data(path), mnist_model)


# ------------------------------------------------------------------ attack runner
@pytest.fixture(scope="module")
def mnist_stored(tmp_path_factory, mnist_arrays) -> Path:
    x, y = mnist_arrays
    path = tmp_path_factory.mktemp("stream") / "mnist_200_stored.npz"
    np.savez(path, x=x, y=y)
    return path


def test_attack_on_the_lazy_view_never_materialises_and_equals_the_array_path(mnist_model, mnist_stored) -> None:
    data = prepare(load_data(mnist_stored, n=120), mnist_model)
    view = data.view
    assert isinstance(view, FloatView) and isinstance(view.source, np.memmap)
    choices = [AttackChoice("fgsm"), AttackChoice("deepfool")]
    batch = 32
    lazy = run_attacks(mnist_model, view, data.y, choices, [0.05, 0.2], batch_size=batch, seed=0)
    # structural: no whole-array conversion, no batch larger than the batch size (or the masking probe)
    assert view.stats.materialised == 0 and data._x is None
    assert 0 < view.stats.largest <= max(batch, GRAD_PROBE)
    eager = run_attacks(mnist_model, np.asarray(view), data.y, choices, [0.05, 0.2], batch_size=batch, seed=0)
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in lazy.results()]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in eager.results()]
    assert lazy.robust_by_eps == eager.robust_by_eps and lazy.warnings == eager.warnings
    for e in lazy.eps:
        np.testing.assert_array_equal(lazy.adv_by[e], eager.adv_by[e])
        np.testing.assert_array_equal(lazy.adv_labels[e], eager.adv_labels[e])
        np.testing.assert_array_equal(lazy.adv_probs[e], eager.adv_probs[e])
        assert isinstance(lazy.adv[e], AdversarialImages)
        np.testing.assert_array_equal(np.asarray(lazy.adv[e]), np.asarray(eager.adv[e]))
        ok = lazy.adv_by[e] >= 0
        assert ok.any() and (lazy.adv[e][ok] != view[ok]).reshape(ok.sum(), -1).any(axis=1).all()


def test_keep_adversarial_largest_and_none_give_the_same_figures(mnist_model) -> None:
    data = prepare(load_data(MNIST_DATA, n=64), mnist_model)
    choices = [AttackChoice("fgsm"), AttackChoice("pgd", {"steps": 5})]
    runs = {k: run_attacks(mnist_model, data.view, data.y, choices, [0.1, 0.3], batch_size=16, seed=2,
                           keep_adversarial=k) for k in ("all", "largest", "none")}
    figures = {k: ([{c: v for c, v in r.items() if c != "time_s"} for r in run.results()], run.robust_by_eps)
               for k, run in runs.items()}
    assert figures["all"] == figures["largest"] == figures["none"]
    np.testing.assert_array_equal(np.asarray(runs["all"].adv[0.3]), np.asarray(runs["largest"].adv[0.3]))
    assert (runs["largest"].adv_by[0.1] >= 0).any()
    with pytest.raises(RuntimeError, match="not kept"):
        np.asarray(runs["largest"].adv[0.1])
    with pytest.raises(RuntimeError, match="not kept"):
        np.asarray(runs["none"].adv[0.3])
    again = pickle.loads(pickle.dumps(runs["largest"]))  # what a --workers process sends back
    np.testing.assert_array_equal(np.asarray(again.adv[0.3]), np.asarray(runs["all"].adv[0.3]))


def test_save_adversarial_streams_the_same_npz(tmp_path: Path, mnist_model) -> None:
    data = prepare(load_data(MNIST_DATA, n=80), mnist_model)
    run = run_attacks(mnist_model, data.view, data.y, [AttackChoice("fgsm")], [0.3], batch_size=32, seed=0)
    out = save_adversarial(tmp_path / "adv.npz", run, [AttackChoice("fgsm")])
    ok = run.adv_by[0.3] >= 0
    ref = tmp_path / "ref.npz"
    np.savez_compressed(ref, x=np.asarray(run.adv[0.3])[ok], y=run.y[ok], adv_label=run.adv_labels[0.3][ok],
                        x_clean=np.asarray(data.view)[ok], index=np.flatnonzero(ok),
                        attack=np.array(["fgsm"])[run.adv_by[0.3][ok]], eps=np.float64(0.3), norm=np.array("linf"))
    with np.load(out) as a, np.load(ref) as b, zipfile.ZipFile(out) as za, zipfile.ZipFile(ref) as zb:
        assert a.files == b.files
        for k in a.files:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
            np.testing.assert_array_equal(a[k], b[k])
            assert za.read(k + ".npy") == zb.read(k + ".npy")  # same .npy bytes, header included


def test_image_spool_round_trip() -> None:
    spool = ImageSpool((2, 3))
    rows = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    assert spool.append(rows[:2]).tolist() == [0, 1] and spool.append(rows[2:]).tolist() == [2, 3, 4]
    np.testing.assert_array_equal(spool.read(np.array([4, 0, 1, 2])), rows[[4, 0, 1, 2]])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(spool)).read(np.arange(5)), rows)
    with pytest.raises(IndexError):
        spool.read(np.array([5]))


# ------------------------------------------------------------------ detection
def test_detection_on_views_equals_arrays(mnist_model) -> None:
    clean = prepare(load_data(MNIST_DATA, offset=300, n=160), mnist_model)
    adv = prepare(load_data(MNIST_DATA, n=40), mnist_model)
    groups = np.array(["a", "b"] * 20)
    mutation = Mutation.parse("darken+pixel", "0.5,0.05")
    cal_lazy = calibrate(mnist_model, take_rows(clean.view, slice(0, 80)), clean.y[:80], mutation, n_mutations=20)
    lazy = evaluate(mnist_model, take_rows(clean.view, slice(80, None)), clean.y[80:], adv.view, groups, cal_lazy,
                    n_lcr=20, max_mutations=30)
    assert clean.view.stats.materialised == 0 and adv.view.stats.materialised == 0
    clean_x, adv_x = np.asarray(clean.view), np.asarray(adv.view)
    cal_eager = calibrate(mnist_model, clean_x[:80], clean.y[:80], mutation, n_mutations=20)
    assert cal_lazy.to_dict() == cal_eager.to_dict()
    eager = evaluate(mnist_model, clean_x[80:], clean.y[80:], adv_x, groups, cal_eager, n_lcr=20, max_mutations=30)
    assert _strip(lazy.figures) == _strip(eager.figures)


# ------------------------------------------------------------------ --max-input-pixels
def test_max_input_pixels_default_and_limits(tmp_path: Path) -> None:
    assert DEFAULT_MAX_INPUT_PIXELS == 2**28
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((10, 3, 32, 32), np.uint8), y=np.zeros(10, np.int64))
    assert len(load_data(path, max_values=10 * 3 * 32 * 32)) == 10
    with pytest.raises(DataError, match="--max-input-pixels"):
        load_data(path, max_values=10 * 3 * 32 * 32 - 1)  # compressed: decoded whole
    np.savez(path, x=np.zeros((10, 3, 32, 32), np.uint8), y=np.zeros(10, np.int64))
    assert len(load_data(path, max_values=3 * 32 * 32)) == 10  # memory-mapped: per sample only
    with pytest.raises(DataError, match="one sample"):
        load_data(path, max_values=3 * 32 * 32 - 1)


def test_compressed_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    # a small file whose x member claims 4e12 values: refused before anything is decoded
    path = tmp_path / "bomb.npz"
    header = {"descr": "|u1", "fortran_order": False, "shape": (1_000_000, 4, 1000, 1000)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as m:
            np.lib.format.write_array_header_1_0(m, header)
            m.write(b"\0" * 4096)
    with pytest.raises(DataError, match="over the limit"):
        load_data(path)


def test_idx_header_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + (100_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match="over the limit"):
        load_data(path)


def test_image_files_are_checked_from_their_headers(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (300, 200)).save(folder / "a_1.png")
    assert load_data(folder, labels_path="from-name").x.shape == (1, 3, 200, 300)
    with pytest.raises(DataError, match="300x200 image would decode to 180,000 values"):
        load_data(folder, labels_path="from-name", max_values=100_000)


def test_cli_refuses_an_oversized_input_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((50, 1, 28, 28), np.uint8), y=np.zeros(50, np.int64))
    r = cli("-q", "attack", MNIST, "--data", str(path), "--attack", "fgsm", "--max-input-pixels", "30000")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advaudit: error: ")
    assert "39,200 values" in lines[0] and "--max-input-pixels 65536" in lines[0] and "Traceback" not in r.stderr
    r = cli("info", MNIST, "--data", str(path), "--max-input-pixels", "39200", "--format", "json")
    assert r.returncode == 0, r.stderr


def test_cli_attack_report_is_the_same_for_stored_and_compressed_data(tmp_path: Path, mnist_arrays) -> None:
    x, y = mnist_arrays
    stored, packed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, x=x[:60], y=y[:60])
    np.savez_compressed(packed, x=x[:60], y=y[:60])
    reports = {}
    for name, path in (("stored", stored), ("packed", packed)):
        r = cli("-q", "attack", MNIST, "--data", str(path), "--attack", "fgsm", "--attack", "pgd:steps=5",
                "--eps", "0.1", "--eps", "0.3", "--batch-size", "16", "--seed", "0", "--n", "50",
                "--report", str(tmp_path / f"{name}.json"), "--save-adv", str(tmp_path / f"{name}_adv.npz"))
        assert r.returncode == 0, r.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert _strip(reports["stored"]) == _strip(reports["packed"])
    with np.load(tmp_path / "stored_adv.npz") as a, np.load(tmp_path / "packed_adv.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


class _Units:
    """A unit store like the --resume checkpoint's: keeps the rows of x_adv that differ from x, and
    gives them back as a plain array."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple] = {}

    def load(self, key: str, x):
        from advaudit.attacks.runner import AttackUnit
        from advaudit.attacks.verify import Verified

        if key not in self.saved:
            return None
        rows, x_rows, rest, queries, rejected, t = self.saved[key]
        x_adv = np.array(x, copy=True)
        x_adv[rows] = x_rows
        return AttackUnit(Verified(x_adv, *rest), queries, rejected, t)

    def save(self, key: str, unit, x) -> None:
        v = unit.verified
        changed = np.flatnonzero((np.asarray(v.x_adv) != np.asarray(x)).reshape(len(x), -1).any(axis=1))
        self.saved[key] = (changed, v.x_adv[changed], (v.adv_labels, v.adv_log_probs, v.success, v.linf, v.l2),
                           unit.queries, unit.rejected, unit.time_s)


def test_units_saved_from_spooled_verdicts_replay_the_same_run(mnist_model) -> None:
    data = prepare(load_data(MNIST_DATA, n=48), mnist_model)
    choices = [AttackChoice("fgsm"), AttackChoice("deepfool")]
    units = _Units()
    first = run_attacks(mnist_model, data.view, data.y, choices, [0.1, 0.3], batch_size=16, seed=1, units=units,
                        keep_adversarial="largest")
    assert len(units.saved) == 3
    again = run_attacks(mnist_model, data.view, data.y, choices, [0.1, 0.3], batch_size=16, seed=1, units=units,
                        keep_adversarial="largest")
    assert first.results() == again.results()  # replayed: the saved time_s too
    np.testing.assert_array_equal(np.asarray(first.adv[0.3]), np.asarray(again.adv[0.3]))
    np.testing.assert_array_equal(first.adv_by[0.3], again.adv_by[0.3])
