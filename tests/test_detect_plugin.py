"""A third-party detector end to end: the example plugin package (``plugins/advaudit-example``)
installed with pip into a folder of its own, then ``advaudit plugins --kind detector`` lists its
``max-softmax`` and ``detect calibrate`` / ``detect`` / ``detect evaluate --method max-softmax`` run it
in subprocesses, as ``tests/test_registry.py`` does for the example attack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advaudit.report.schema import report_errors

from .conftest import REPO, SAMPLE_MODELS

PLUGIN_SRC = REPO / "plugins" / "advaudit-example"
MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADVAUDIT_LOAD_PLUGINS", "PYTHONPATH")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed with pip --target (from a copy, so the build leaves nothing behind)."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, env=_env(PIP_NO_CACHE_DIR="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (site / "advaudit_example" / "detector.py").is_file()
    return site


def _advaudit(site: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m advaudit ARGS`` with the plugin's site (and this checkout's advaudit) importable."""
    return subprocess.run([sys.executable, "-m", "advaudit", *args], cwd=REPO, capture_output=True, text=True,
                          env=_env(PYTHONPATH=os.pathsep.join([str(site), str(REPO)])))


def test_plugin_detector_is_listed(plugin_site: Path) -> None:
    r = _advaudit(plugin_site, "plugins", "--kind", "detector", "--format", "json")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    names = {p["name"]: p for p in listing["plugins"]}
    assert {"lcr", "strip", "max-softmax"} <= set(names)
    assert names["max-softmax"]["kind"] == "detector" and names["max-softmax"]["origin"] == "advaudit-example 0.1.0"
    assert not listing["broken"]


def test_plugin_detector_calibrates_detects_and_evaluates(plugin_site: Path, tmp_path: Path) -> None:
    cal, rep, adv = tmp_path / "cal.json", tmp_path / "r.json", tmp_path / "adv.npz"
    r = _advaudit(plugin_site, "detect", "calibrate", MNIST, "--data", MNIST_DATA, "--n", "200",
                  "--method", "max-softmax:frr=0.1", "--out", str(cal))
    assert r.returncode == 0, r.stderr
    assert "threshold = " in r.stdout and "max-softmax" in r.stdout
    doc = json.loads(cal.read_text())
    assert doc["method"] == "max-softmax" and doc["params"] == {"frr": 0.1} and doc["n_inputs"] == 200

    r = _advaudit(plugin_site, "detect", MNIST, "--inputs", MNIST_DATA, "--offset", "300", "--n", "100",
                  "--calibration", str(cal), "--report", str(rep))
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    assert report_errors(report) == []
    assert report["method"] == "max-softmax" and report["detector"] == {"frr": 0.1}
    assert all(0.0 <= row["score"] <= 1.0 for row in report["inputs"])
    assert report["totals"]["adversarial"] <= 30  # about frr of clean inputs

    r = _advaudit(plugin_site, "attack", MNIST, "--data", MNIST_DATA, "--offset", "400", "--n", "40",
                  "--attack", "deepfool", "--eps", "0.3", "--save-adv", str(adv), "-q")
    assert r.returncode == 0, r.stderr
    r = _advaudit(plugin_site, "detect", "evaluate", MNIST, "--clean", MNIST_DATA, "--n", "200",
                  "--adversarial", str(adv), "--calibration", str(cal), "--method", "max-softmax", "--format", "json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert report_errors(ev) == []
    assert ev["method"] == "max-softmax" and ev["auroc"]["deepfool"] > 0.8


def test_unknown_detector_is_a_one_line_error(plugin_site: Path, tmp_path: Path) -> None:
    r = _advaudit(plugin_site, "detect", "calibrate", MNIST, "--data", MNIST_DATA, "--method", "no-such",
                  "--out", str(tmp_path / "c.json"))
    assert r.returncode != 0 and "unknown detector 'no-such'" in r.stderr and "max-softmax" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
