"""``kind: harden`` in an audit: the harden job as a step (same report as ``advaudit harden`` with the
same options and seed), its metrics gated like any other step's, its config validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advaudit.audit import load_config
from advaudit.audit.config import ConfigError
from advaudit.checkpoint import comparable
from advaudit.cli import main

from .conftest import SAMPLE_MODELS

MODEL = str(SAMPLE_MODELS / "mnist_cnn.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")

STEP = """\
data: {data}
seed: 0
steps:
  - kind: harden
    eps: 0.1
    epochs: 1
    n: 96
    eval_n: 40
    eval_suites: [quick]
gates:
  - {gate}
"""


def _audit(tmp_path: Path, gate: str) -> tuple[int, dict]:
    config = tmp_path / "audit.yaml"
    config.write_text(STEP.format(data=DATA, gate=gate))
    out = tmp_path / "out"
    rc = main(["audit", MODEL, "--config", str(config), "--report-dir", str(out), "-q"])
    return rc, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict]:
    tmp = tmp_path_factory.mktemp("harden-audit")
    rc, report = _audit(tmp, "harden.robust_accuracy >= 0.0")
    return tmp, rc, report


def test_harden_step_runs_and_reports_its_metrics(passing: tuple[Path, int, dict]) -> None:
    tmp, rc, report = passing
    assert rc == 0 and report["verdict"] == "pass"
    step = report["steps"][0]
    assert step["kind"] == "harden" and step["status"] == "done" and step["report"]["kind"] == "harden"
    m = step["metrics"]
    assert m["clean_accuracy"] == m["clean_accuracy_after"] == step["report"]["after"]["clean_accuracy"]
    assert m["robust_accuracy"] == m["robust_accuracy@quick_after"]
    assert m["robust_accuracy_before"] == step["report"]["before"]["robust_accuracy"]["quick"]
    hardened = tmp / "out" / step["artifacts"]["hardened"]
    assert hardened.is_file() and hardened.suffix == ".onnx"
    assert step["report"]["hardened"]["path"] == str(hardened)


def test_a_failing_gate_on_the_harden_step_fails_the_audit(tmp_path: Path) -> None:
    rc, report = _audit(tmp_path, "harden.clean_accuracy >= 1.01")
    assert rc == 1 and report["verdict"] == "fail"
    assert report["gates"][0]["metric"] == "harden.clean_accuracy" and report["gates"][0]["passed"] is False


def test_step_report_equals_the_harden_command(passing: tuple[Path, int, dict], tmp_path: Path) -> None:
    _, _, audit = passing
    out, report = tmp_path / "h.onnx", tmp_path / "h.json"
    rc = main(["harden", MODEL, "--data", DATA, "--eval-data", DATA, "--eps", "0.1", "--epochs", "1", "--n", "96",
               "--eval-n", "40", "--eval-suite", "quick", "--seed", "0", "--out", str(out), "--report", str(report),
               "-q"])
    assert rc == 0
    cli = json.loads(report.read_text())
    step = audit["steps"][0]["report"]

    def same(r: dict) -> dict:
        r = comparable(r)
        for key in ("command", "meta"):
            r.pop(key, None)
        r["hardened"] = {k: v for k, v in r["hardened"].items() if k != "path"}
        r["hardened"]["export"] = {k: v for k, v in r["hardened"]["export"].items() if k != "path"}
        return r

    assert same(step) == same(cli)  # same training, same export bytes (sha256), same before/after figures


@pytest.mark.parametrize(("step", "message"), [
    ("  - kind: harden\n    epochs: 1\n", "'eps' is required"),
    ("  - kind: harden\n    eps: 0.1\n    method: magic\n", "'magic' is not one of"),
    ("  - kind: harden\n    eps: 0.1\n    eval_data: missing.npz\n", "missing.npz does not exist"),
])
def test_bad_harden_steps_are_config_errors(tmp_path: Path, step: str, message: str) -> None:
    config = tmp_path / "audit.yaml"
    text = f"data: {DATA}\nsteps:\n{step}"
    with pytest.raises(ConfigError, match=message):
        load_config(config, text=text)
