"""``advaudit harden`` end to end on the bundled MNIST model (a few hundred images, 1 epoch)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from advaudit.cli import main
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS
from .test_attack_cli import _no_gradient_model

MNIST_ONNX = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_PT = str(SAMPLE_MODELS / "mnist_cnn.pt")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
FAST = ["--data", DATA, "--n", "192", "--eval-data", DATA, "--eval-offset", "500", "--eval-n", "32",
        "--eval-suite", "quick", "--eps", "0.3", "--epochs", "1", "--steps", "2", "-q"]


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("harden")
    rc = main(["harden", MNIST_ONNX, *FAST, "--out", str(d / "h.onnx"), "--report", str(d / "r.json")])
    return rc, d


def test_harden_onnx_exports_a_model_ort_runs_and_that_matches(onnx_run):
    rc, d = onnx_run
    assert rc == 0
    path = d / "h.onnx"
    orig, hard = onnx.load(MNIST_ONNX), onnx.load(str(path))
    props = {p.key: p.value for p in hard.metadata_props}
    for p in orig.metadata_props:  # the input spec and everything else survives
        assert props[p.key] == p.value
    assert json.loads(props["advaudit-harden"])["method"] == "pgd"
    x = np.load(DATA)["x"][500:564].astype(np.float32) / 255
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    model = load_model(path)
    assert model.has_gradients and list(model.spec.class_names) == [str(i) for i in range(10)]
    with torch.no_grad():
        twin = model.logits(torch.from_numpy(x)).numpy()
    assert np.abs(out - twin).max() < 1e-3 * max(1.0, np.abs(out).max())
    before = ort.InferenceSession(MNIST_ONNX, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(out - before).max() > 1e-2  # training changed the weights


def test_harden_report_fields(onnx_run):
    _, d = onnx_run
    r = json.loads((d / "r.json").read_text())
    assert r["schema"] == "advaudit.report/1" and r["kind"] == "harden" and r["eps"] == 0.3
    assert r["config"]["method"] == "pgd" and r["config"]["steps"] == 2
    assert r["config"]["step_size"] == pytest.approx(2.5 * 0.3 / 2)
    assert len(r["history"]) == 1 and r["history"][0]["eps"] == pytest.approx(0.3)
    assert r["train_data"]["n"] == 192 and r["eval_data"]["n"] == 32
    for side in ("before", "after"):
        assert 0 <= r[side]["clean_accuracy"] <= 1 and set(r[side]["robust_accuracy"]) == {"quick"}
        assert r[side]["robust_accuracy"]["quick"] <= r[side]["clean_accuracy"]
    assert r["before"]["clean_accuracy"] > 0.9 and r["before"]["robust_accuracy"]["quick"] < 0.2
    metrics = [(s["metric"], s["suite"]) for s in r["summary"]]
    assert metrics == [("clean_accuracy", None), ("robust_accuracy", "quick")]
    assert r["hardened"]["export"]["max_rel_diff"] < 1e-3
    assert r["hardened"]["sha256"] != r["model"]["sha256"]


def test_harden_torchscript_keeps_format_and_extra_file(tmp_path, capsys):
    out = tmp_path / "h.pt"
    rc = main(["harden", MNIST_PT, *FAST, "--method", "fgsm-rs", "--out", str(out), "--format", "json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hardened"]["format"] == "torchscript" and report["config"]["step_size"] == pytest.approx(0.375)
    with zipfile.ZipFile(out) as z:
        names = {n.split("/", 1)[1] for n in z.namelist()}
    assert "extra/advaudit.json" in names and "extra/advaudit-harden.json" in names
    model, orig = load_model(out), load_model(MNIST_PT)
    assert model.spec.range == (0.0, 1.0)
    x = np.load(DATA)["x"][:16].astype(np.float32) / 255  # uint8 (N, 1, 28, 28)
    model.set_input_shape((1, 28, 28))
    orig.set_input_shape((1, 28, 28))
    assert np.abs(model.predict(x).outputs - orig.predict(x).outputs).max() > 1e-2  # weights were trained


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--eps", "0"], "eps 0 is out of range"),
        (["--eps", "1.5"], "out of range"),
        (["--out", "x.pt"], "changes the model format"),
        (["--method", "nosuch"], "nosuch"),
    ],
)
def test_harden_bad_options_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--data", DATA, "--n", "16", "--eval-data", DATA, "--eval-n", "8", "--eps", "0.3", "--epochs", "1"]
    rc = main(["harden", MNIST_ONNX, *base, *args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_harden_model_without_gradients_exits_2(tmp_path, capsys):
    path = _no_gradient_model(tmp_path / "nograd.onnx")
    rc = main(["harden", path, "--data", DATA, "--n", "16", "--eval-data", DATA, "--eval-n", "8", "--eps", "0.3",
               "--out", str(tmp_path / "h.onnx")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("advaudit: error:")]
    assert rc == 2 and len(err) == 1 and "no differentiable twin" in err[0] and "onnx2torch" in err[0]
    assert not (tmp_path / "h.onnx").exists()


def test_harden_labels_outside_the_model_classes_exit_2(tmp_path, capsys):
    d = np.load(DATA)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=d["x"][:32], y=(d["y"][:32] + 5).astype(np.int64))  # labels up to 14, model has 10
    rc = main(["harden", MNIST_ONNX, "--data", str(bad), "--eval-data", DATA, "--eval-n", "8", "--eps", "0.3",
               "--out", str(tmp_path / "h.onnx")])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("advaudit: error:")]
    assert rc == 2 and len(errors) == 1 and "outside 0..9" in errors[0] and "Traceback" not in err
