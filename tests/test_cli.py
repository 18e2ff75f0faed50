"""The command line: --version, `info`, `plugins`, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import advaudit
from advaudit.cli import main

from .conftest import REPO, SAMPLE_MODELS

SAMPLES = [
    ("mnist_cnn", "mnist_test_1k"),
    ("cifar10_resnet20", "cifar10_test_1k"),
    ("gtsrb_cnn", "gtsrb_test_1k"),
]
MNIST_ONNX = SAMPLE_MODELS / "mnist_cnn.onnx"


def _sample(name: str, suffix: str, data: str) -> tuple[Path, Path]:
    model, npz = SAMPLE_MODELS / f"{name}{suffix}", SAMPLE_MODELS / "data" / f"{data}.npz"
    for p in (model, npz):
        if not p.exists():
            pytest.skip(f"{p.name} is not built yet")
    return model, npz


def _assert_one_error_line(err: str) -> None:
    """stderr ends with exactly one ``advaudit: error:`` line and holds no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("advaudit: error:")]
    assert "Traceback" not in err
    assert len(errors) == 1 and lines[-1] == errors[0], err


# -------------------------------------------------------------------------------- in process
def test_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert advaudit.__version__ in out and "advaudit" in out


def test_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "plugins" in out and "Exit codes" in out


@pytest.mark.parametrize("suffix", [".onnx", ".pt"], ids=["onnx", "torchscript"])
@pytest.mark.parametrize("name,data", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_info_with_data(capsys: pytest.CaptureFixture, name: str, data: str, suffix: str) -> None:
    model, npz = _sample(name, suffix, data)
    assert main(["info", str(model), "--data", str(npz), "--n", "32", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"model", "clean_accuracy", "throughput_images_per_s", "data"} <= set(result)
    m = result["model"]
    assert m["format"] == ("onnx" if suffix == ".onnx" else "torchscript")
    assert m["path"] == str(model) and len(m["sha256"]) == 64
    assert m["num_classes"] >= 10 and len(m["input_shape"]) == 3
    assert m["output_kind"] == "logits"
    assert m["gradients"]["available"] is True
    assert m["spec"]["range"] == [0.0, 1.0] and m["spec"]["source"]["range"] == "metadata"
    assert result["data"]["n"] == 32 and result["data"]["format"] == "npz"
    assert 0.8 < result["clean_accuracy"] <= 1.0
    assert result["throughput_images_per_s"] > 0

    # The default table: the same facts for a human, on stdout.
    assert main(["info", str(model), "--data", str(npz), "--n", "32", "--batch-size", "16"]) == 0
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())  # ignore the table's wrapping
    assert "clean accuracy" in out and f"{result['clean_accuracy']:.4f}" in out
    assert "throughput" in out and "images/s (batch 16)" in out
    assert "gradients" in out and "yes:" in out
    assert "loading" in captured.err and "Traceback" not in captured.err
    if suffix == ".onnx":
        assert "[batch, " in out  # symbolic dims survive the table (no markup eaten)


def test_info_quiet_json_keeps_stderr_clean(capsys: pytest.CaptureFixture) -> None:
    assert main(["-q", "info", str(MNIST_ONNX), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    result = json.loads(captured.out)
    assert "clean_accuracy" not in result  # no --data, no accuracy
    assert result["model"]["input_shape"] == [1, 28, 28]


def test_info_spec_flags_reach_the_model(capsys: pytest.CaptureFixture) -> None:
    args = ["info", str(MNIST_ONNX), "--range", "0,255", "--std", "255", "--format", "json"]
    assert main(args) == 0
    spec = json.loads(capsys.readouterr().out)["model"]["spec"]
    assert spec["range"] == [0.0, 255.0] and spec["std"] == [255.0]
    assert spec["source"]["range"] == "flag" and spec["source"]["layout"] == "metadata"


def test_click_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(MNIST_ONNX), "--layout", "sideways"]) == 2
    assert main(["info"]) == 2
    assert main(["no-such-command"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_plugins_lists_builtin_fgsm(capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "--format", "json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    fgsm = [p for p in listing["plugins"] if p["name"] == "fgsm"]
    assert len(fgsm) == 1
    assert fgsm[0]["kind"] == "attack" and fgsm[0]["origin"] == f"advaudit {advaudit.__version__}"
    assert fgsm[0]["summary"].startswith("Fast Gradient Sign Method")
    assert isinstance(listing["broken"], list)

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "fgsm" in out and "(built-in)" in out

    assert main(["plugins", "--kind", "defense", "--format", "json"]) == 0
    assert all(p["kind"] == "defense" for p in json.loads(capsys.readouterr().out)["plugins"])


# ------------------------------------------------------------------ errors, in subprocesses
@pytest.fixture(scope="module")
def error_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Run every error case at once (each is a fresh interpreter) and collect the results."""
    d = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    (d / "random.onnx").write_bytes(rng.bytes(4096))
    (d / "random.pt").write_bytes(rng.bytes(4096))
    blob = MNIST_ONNX.read_bytes()
    (d / "truncated.onnx").write_bytes(blob[: len(blob) // 2])
    proto = onnx.load(str(MNIST_ONNX))
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(proto, str(d / "opset99.onnx"))

    cases: dict[str, list[str]] = {
        "missing-model": ["info", str(d / "missing.onnx")],
        "random-bytes-onnx": ["info", str(d / "random.onnx")],
        "truncated-onnx": ["info", str(d / "truncated.onnx")],
        "opset-99": ["info", str(d / "opset99.onnx")],
        "random-bytes-pt": ["info", str(d / "random.pt")],
        "range-reversed": ["info", str(MNIST_ONNX), "--range", "1,0"],
        "data-wrong-shape": ["info", str(MNIST_ONNX), "--data", str(SAMPLE_MODELS / "data" / "cifar10_test_1k.npz")],
    }
    env = {k: v for k, v in os.environ.items() if k != "ADVAUDIT_LOAD_PLUGINS"}
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "advaudit", *args], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate()
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


ERROR_MESSAGES = {
    "missing-model": "model file not found",
    "random-bytes-onnx": "random.onnx is not a valid ONNX file",
    "truncated-onnx": "truncated.onnx is not a valid ONNX file",
    "opset-99": "ONNX Runtime cannot load opset99.onnx",
    "random-bytes-pt": "random.pt is not a TorchScript archive",
    "range-reversed": "flag range must be two numbers LO,HI with LO < HI",
    "data-wrong-shape": "data samples have shape (3, 32, 32) but the model takes (1, 28, 28)",
}


@pytest.mark.parametrize("case", list(ERROR_MESSAGES))
def test_errors_are_one_line_with_exit_code_2(error_runs: dict, case: str) -> None:
    run = error_runs[case]
    assert run.returncode == 2, run.stderr
    _assert_one_error_line(run.stderr)
    lines = run.stderr.strip().splitlines()
    assert ERROR_MESSAGES[case] in lines[-1]
    # Nothing else on stderr but the progress line: no warnings, no runtime logs.
    assert all(line.startswith("loading ") for line in lines[:-1]), run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize(
    "args,message",
    [
        (["--range", "zero,one"], "flag range must be numbers"),
        (["--mean", "0.1,0.2"], "mean has 2 values but the model has 1 input channels"),
        (["--data", "missing.npz"], "data not found"),
        (["--data", str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz"), "--offset", "1000"], "leaves none"),
        (["--data", str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz"), "--n", "0"], "--n must be positive"),
        (["--data", str(SAMPLE_MODELS / "data" / "cifar10_test_1k.npz"), "--data-format", "idx"], "not an IDX file"),
    ],
    ids=["range-not-numbers", "mean-channels", "data-missing", "empty-selection", "n-zero", "wrong-format"],
)
def test_more_input_errors_exit_2(capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    assert main(["-q", "info", str(MNIST_ONNX), *args]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert message in err.splitlines()[-1]


def test_labels_that_do_not_fit_the_model_exit_2(capsys: pytest.CaptureFixture) -> None:
    model, _ = _sample("cifar10_resnet20", ".onnx", "cifar10_test_1k")
    _, npz = _sample("gtsrb_cnn", ".onnx", "gtsrb_test_1k")  # 43 classes, same image size
    assert main(["-q", "info", str(model), "--data", str(npz)]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "labels are outside 0..9" in err
