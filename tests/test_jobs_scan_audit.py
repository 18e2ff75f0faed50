"""The scan-backdoor and audit jobs called from Python (``advaudit.api``): typed results whose
``metrics()`` agree with what ``advaudit report`` reads back from their ``to_report()``, and the
``--fail-on-backdoor`` gate recorded in the audit gate shape."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from advaudit import api
from advaudit.audit import load_config
from advaudit.gates import fail_on_backdoor
from advaudit.report.normalize import as_audit, scan_metrics
from advaudit.report.schema import validate_report

from .conftest import SAMPLE_MODELS

BADNETS = str(SAMPLE_MODELS / "mnist_badnets.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")


def test_scan_job_result_report_and_gate(tmp_path: Path) -> None:
    messages: list[str] = []
    options = api.ScanOptions(model=api.ModelOptions(path=BADNETS), method="mm-bd", steps=20,
                              gates=(fail_on_backdoor(),), report=str(tmp_path / "scan.json"))
    result = api.scan_backdoor(options, api.JobContext(log=messages.append))
    report = result.to_report()
    assert json.loads((tmp_path / "scan.json").read_text()) == report  # what --report wrote
    validate_report(report)
    assert result.metrics() == scan_metrics(report)
    assert result.metrics()["verdict"] == "backdoored" and not result.passed and report["passed"] is False
    assert report["gates"] == [{
        "gate": "backdoor == clean", "metric": "verdict", "op": "==", "threshold": "clean", "value": "backdoored",
        "passed": False, "baseline": None, "regressed": None,
        "reason": f"verdict backdoored (suspected target(s) {', '.join(map(str, report['suspected_targets']))})",
    }]
    rendered = as_audit(report)
    assert [g["metric"] for g in rendered["gates"]] == ["backdoor.verdict"] and not rendered["passed"]
    assert messages[0].endswith("with mm-bd (data-free)") and messages[-1] == f"wrote report {tmp_path / 'scan.json'}"
    assert not (tmp_path / "scan.json.partial").exists()  # the checkpoint is gone once the report is written


def test_scan_job_without_gates_passes_and_records_none() -> None:
    result = api.scan_backdoor(api.ScanOptions(model=api.ModelOptions(path=BADNETS), method="mm-bd", steps=20))
    assert result.passed and result.to_report()["gates"] == [] and "triggers_dir" not in result.to_report()


def test_audit_job_from_python(tmp_path: Path) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text(f"data: {DATA}\nn: 40\nsteps:\n  - kind: scan-backdoor\n    method: mm-bd\n    steps: 20\n"
                      "gates:\n  - backdoor == clean\n  - backdoor.mmbd_p_value < 0.5\n")
    options = api.AuditOptions(model=BADNETS, config=load_config(str(config)), report_dir=str(tmp_path / "out"),
                               formats=("md",))
    result = api.audit(options)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == result.to_report()
    assert result.metrics() == report["metrics"] and result.metrics()["backdoor.verdict"] == "backdoored"
    assert [g.passed for g in result.gates] == [False, True] and not result.passed and report["verdict"] == "fail"
    assert report["steps"][0]["report"]["gates"] == []  # the step's own scan records no gate
    assert (tmp_path / "out" / "report.md").is_file()


def test_scanner_params_pass_the_gap_floor_to_neural_cleanse_only() -> None:
    from types import SimpleNamespace

    from advaudit.jobs.scan import scanner_params

    model = SimpleNamespace(input_shape=(1, 28, 28))
    options = api.ScanOptions(model=api.ModelOptions(path=BADNETS), method="all", min_ratio=4.0, alpha=0.01)
    params = scanner_params(options, ["neural-cleanse", "mm-bd"], model)  # type: ignore[arg-type]
    assert params["neural-cleanse"]["min_ratio"] == 4.0 and params["neural-cleanse"]["alpha"] == 0.01
    assert "min_ratio" not in params["mm-bd"]
    default = scanner_params(replace(options, min_ratio=None), ["neural-cleanse"], model)  # type: ignore[arg-type]
    assert "min_ratio" not in default["neural-cleanse"]  # None: the scanner's own default
