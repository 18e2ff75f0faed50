"""STRIP from the command line (``--method strip``): calibrate, detect and evaluate on the backdoored
MNIST sample model with its trigger stamped on clean images, and on the clean sample model; the
reports pass the schema and render; LCR-only options are refused with another method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advaudit.report.schema import report_errors

from .conftest import SAMPLE_MODELS

BADNETS = str(SAMPLE_MODELS / "mnist_badnets.onnx")
MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
TRIGGER = SAMPLE_MODELS / "data" / "mnist_badnets_trigger.npz"
STRIP = "strip:overlays=16,frr=0.05"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudit", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 test images (from index 500, the trigger's target class left out) carrying the BadNets trigger."""
    with np.load(MNIST_DATA) as d:
        x, y = d["x"][500:650].astype(np.float32) / 255.0, d["y"][500:650]
    with np.load(TRIGGER) as t:
        mask, pattern, target = t["mask"], t["pattern"], int(t["target"])
    x = x[y != target][:100]
    path = tmp_path_factory.mktemp("strip") / "stamped.npz"
    np.savez(path, x=(x * (1 - mask) + pattern * mask).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    cal = tmp_path_factory.mktemp("cal") / "cal.json"
    return cal, cli("detect", "calibrate", BADNETS, "--data", MNIST_DATA, "--n", "200", "--method", STRIP,
                    "--out", str(cal))


def test_strip_calibration_keeps_threshold_and_pool(calibrated):
    cal, r = calibrated
    assert r.returncode == 0, r.stderr
    assert "entropy threshold" in r.stdout
    doc = json.loads(cal.read_text())
    assert doc["method"] == "strip" and doc["params"] == {"overlays": 16, "frr": 0.05}
    assert doc["pool_file"] == "cal.strip-pool.npz" and (cal.parent / "cal.strip-pool.npz").is_file()
    assert doc["threshold"] == -doc["extra"]["entropy_threshold"] and doc["n_inputs"] == 200


def test_strip_detect_flags_stamped_inputs_and_passes_clean_ones(calibrated, stamped, tmp_path):
    cal, _ = calibrated
    rep = tmp_path / "r.json"
    r = cli("detect", BADNETS, "--inputs", str(stamped), "--calibration", str(cal), "--report", str(rep),
            "--fail-on-adversarial")
    assert r.returncode == 1, r.stderr
    report = json.loads(rep.read_text())
    assert report_errors(report) == []
    assert report["method"] == "strip" and report["calibration"]["method"] == "strip"
    assert set(report["inputs"][0]) == {"index", "verdict", "label", "score"}
    assert report["totals"]["adversarial"] >= 0.9 * report["totals"]["n"]
    r = cli("detect", BADNETS, "--inputs", MNIST_DATA, "--offset", "300", "--n", "100", "--calibration", str(cal),
            "--format", "json")
    assert r.returncode == 0, r.stderr
    clean = json.loads(r.stdout)
    assert clean["totals"]["adversarial"] <= 15
    for fmt in ("md", "html", "junit"):
        r = cli("report", str(rep), "--format", fmt)
        assert r.returncode == 0, r.stderr
    assert "strip" in cli("report", str(rep), "--format", "md").stdout


def test_strip_evaluate_reports_auroc(stamped, tmp_path):
    rep, roc = tmp_path / "ev.json", tmp_path / "roc.png"
    r = cli("detect", "evaluate", BADNETS, "--clean", MNIST_DATA, "--n", "200", "--adversarial", str(stamped),
            "--method", STRIP, "--report", str(rep), "--roc", str(roc))
    assert r.returncode == 0, r.stderr
    assert "calibrated on 100 clean inputs" in r.stderr and "strip score and AUROC" in r.stdout
    ev = json.loads(rep.read_text())
    assert report_errors(ev) == []
    assert ev["kind"] == "detect-evaluate" and ev["method"] == "strip"
    assert ev["auroc_all"] > 0.95 and ev["decisions"]["recall"] > 0.8 and ev["n_normal"] == 100
    assert roc.read_bytes()[:4] == b"\x89PNG"
    for fmt in ("md", "html", "junit"):
        r = cli("report", str(rep), "--format", fmt)
        assert r.returncode == 0, r.stderr
    assert "AUROC" in cli("report", str(rep), "--format", "md").stdout


def test_strip_on_the_clean_sample_model(tmp_path):
    cal = tmp_path / "cal.json"
    r = cli("detect", "calibrate", MNIST, "--data", MNIST_DATA, "--n", "100", "--method", STRIP, "--out", str(cal))
    assert r.returncode == 0, r.stderr
    r = cli("detect", MNIST, "--inputs", MNIST_DATA, "--offset", "300", "--n", "50", "--calibration", str(cal),
            "--format", "md")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("## ")  # the shared Markdown report, as `advaudit report --format md`
    assert "\n| index | verdict | label | score |\n" in r.stdout  # with each input's verdict and score


@pytest.mark.parametrize("args", [["--mutation", "gaussian"], ["--radius", "0.1"], ["--mutations", "20"]])
def test_lcr_options_with_another_method_are_a_usage_error(tmp_path, args):
    r = cli("detect", "calibrate", MNIST, "--data", MNIST_DATA, "--method", "strip", *args,
            "--out", str(tmp_path / "c.json"))
    assert r.returncode == 2 and args[0] in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.json").exists()


def test_detect_with_another_methods_calibration_is_a_usage_error(calibrated):
    cal, _ = calibrated
    r = cli("detect", BADNETS, "--inputs", MNIST_DATA, "--n", "5", "--calibration", str(cal), "--method", "lcr")
    assert r.returncode == 2 and "is a strip calibration" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("detect", BADNETS, "--inputs", MNIST_DATA, "--n", "5", "--calibration", str(cal), "--alpha", "0.1")
    assert r.returncode == 2 and "--alpha is an LCR option" in r.stderr
