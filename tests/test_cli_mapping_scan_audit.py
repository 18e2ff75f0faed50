"""Command line -> job options for ``scan-backdoor`` and ``audit`` (coverage.py-style: one case per
option pins ``options == replace(DEFAULT, field=value)``; the jobs are replaced by recorders, so
nothing runs)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from advaudit.audit import load_config
from advaudit.cli.sharding import recorded_command
from advaudit.errors import UsageError
from advaudit.gates import fail_on_backdoor
from advaudit.jobs import DataOptions, ModelOptions
from advaudit.audit.job import AuditOptions
from advaudit.jobs.scan import ScanOptions

from .conftest import SAMPLE_MODELS
from .support.cli_mapping import options_for

MODEL = str(SAMPLE_MODELS / "mnist_badnets.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")


def _options(monkeypatch: pytest.MonkeyPatch, job: str, argv: list[str]) -> Any:
    """The options ``argv`` builds, with the recorded command checked and then reset to the default
    (so each case pins only the option it is about)."""
    monkeypatch.setattr(sys, "argv", ["advaudit", *argv])
    options = options_for(monkeypatch, job, argv)
    assert options.command == " ".join(["advaudit", *recorded_command(argv)])  # without --workers, --resume
    return replace(options, command=type(options).command)


# --- scan-backdoor ---------------------------------------------------------------------------------------

SCAN = ["scan-backdoor", MODEL, "--data", DATA]
SCAN_DEFAULT = ScanOptions(model=ModelOptions(path=MODEL), data=DataOptions(path=DATA))


def _scan(monkeypatch: pytest.MonkeyPatch, *extra: str) -> ScanOptions:
    return _options(monkeypatch, "scan_backdoor", [*SCAN, *extra])


def _model(**changes: Any) -> ScanOptions:
    return replace(SCAN_DEFAULT, model=replace(SCAN_DEFAULT.model, **changes))


def _data(**changes: Any) -> ScanOptions:
    assert SCAN_DEFAULT.data is not None
    return replace(SCAN_DEFAULT, data=replace(SCAN_DEFAULT.data, **changes))


def test_scan_defaults(monkeypatch):
    options = _scan(monkeypatch)
    assert options == SCAN_DEFAULT
    # one place for the defaults: None means "the job's default" (300 images, Neural Cleanse's batch 32)
    assert options.data is not None and options.data.n is None and options.batch_size is None
    assert options.seed == 0 and options.gates == () and options.method == "neural-cleanse"


SCAN_CASES = [
    (["--method", "all"], replace(SCAN_DEFAULT, method="all")),
    (["--method", "mm-bd"], replace(SCAN_DEFAULT, method="mm-bd")),
    (["--steps", "7"], replace(SCAN_DEFAULT, steps=7)),
    (["--nc-rule", "paper", "--anomaly-threshold", "2.5"], replace(SCAN_DEFAULT, nc_rule="paper",
                                                                    anomaly_threshold=2.5)),
    (["--alpha", "0.01"], replace(SCAN_DEFAULT, alpha=0.01)),
    (["--min-ratio", "3.5"], replace(SCAN_DEFAULT, min_ratio=3.5)),
    (["--reference", "a.json", "--reference", "refs"], replace(SCAN_DEFAULT, reference=("a.json", "refs"))),
    (["--method", "freeeagle", "--reference", "refs"], replace(SCAN_DEFAULT, method="freeeagle", reference=("refs",))),
    (["--nc-rule", "reference", "--reference", "refs"],
     replace(SCAN_DEFAULT, nc_rule="reference", reference=("refs",))),
    (["--combine", "any"], replace(SCAN_DEFAULT, combine="any")),
    (["--target-labels", "7,3"], replace(SCAN_DEFAULT, target_labels=(7, 3))),
    (["--batch-size", "16"], replace(SCAN_DEFAULT, batch_size=16)),
    (["--triggers-dir", "trig"], replace(SCAN_DEFAULT, triggers_dir="trig")),
    (["--report", "r.json"], replace(SCAN_DEFAULT, report="r.json")),
    (["--report", "r.json", "--resume"], replace(SCAN_DEFAULT, report="r.json", resume=True)),
    (["--fail-on-backdoor"], replace(SCAN_DEFAULT, gates=(fail_on_backdoor(),))),
    (["--format", "md"], SCAN_DEFAULT),
    (["-q"], SCAN_DEFAULT),
    (["--seed", "5"], replace(_data(seed=5), seed=5)),
    (["--n", "50"], _data(n=50)),
    (["--offset", "10"], _data(offset=10)),
    (["--labels", "labels.idx"], _data(labels="labels.idx")),
    (["--data-format", "npz"], _data(format="npz")),
    (["--resize", "32"], _data(resize="32")),
    (["--crop", "28"], _data(crop="28")),
    (["--max-input-pixels", "1000"], _data(max_input_pixels=1000)),
    (["--spec", "spec.yaml"], _model(spec_file="spec.yaml")),
    (["--range", "0,255"], _model(range="0,255")),
    (["--mean", "0.5"], _model(mean="0.5")),
    (["--std", "0.25"], _model(std="0.25")),
    (["--layout", "nhwc"], _model(layout="nhwc")),
    (["--input-shape", "1,28,28"], _model(input_shape="1,28,28")),
    (["--device", "cuda"], _model(device="cuda")),
    (["--max-model-size", "10"], _model(max_size_mb=10.0)),
]


@pytest.mark.parametrize("extra, expected", SCAN_CASES)
def test_scan_option(monkeypatch, extra, expected):
    assert _scan(monkeypatch, *extra) == expected


def test_scan_data_free(monkeypatch):
    argv = ["scan-backdoor", MODEL, "--method", "mm-bd"]
    assert _options(monkeypatch, "scan_backdoor", argv) == replace(SCAN_DEFAULT, data=None, method="mm-bd")


@pytest.mark.parametrize("argv, message", [
    (["scan-backdoor", MODEL], "--method neural-cleanse needs clean labelled images"),
    ([*SCAN, "--method", "mm-bd", "--anomaly-threshold", "2"], "--anomaly-threshold applies to neural-cleanse"),
    ([*SCAN, "--anomaly-threshold", "2"], "--anomaly-threshold is the paper rule's threshold"),
    ([*SCAN, "--method", "mm-bd", "--min-ratio", "3"], "--min-ratio is Neural Cleanse's gap-rule floor"),
    ([*SCAN, "--nc-rule", "paper", "--min-ratio", "3"], "--min-ratio is Neural Cleanse's gap-rule floor"),
    ([*SCAN, "--method", "mm-bd", "--target-labels", "3"], "--target-labels applies to neural-cleanse"),
    ([*SCAN, "--target-labels", "3,x"], "is not a list of class indices"),
    ([*SCAN, "--resume"], "--resume needs --report"),
    ([*SCAN, "--nc-rule", "reference"], "--nc-rule reference needs scans of clean reference models"),
    ([*SCAN, "--nc-rule", "gap", "--reference", "refs"], "--reference tests Neural Cleanse against the references"),
    ([*SCAN, "--reference", "refs", "--target-labels", "1"], "--target-labels does not apply with --reference"),
])
def test_scan_refused_combinations_call_no_job(monkeypatch, argv, message):
    with pytest.raises(UsageError) as exc:
        _options(monkeypatch, "scan_backdoor", argv)
    assert message in exc.value.message


# --- audit ------------------------------------------------------------------------------------------------

CONFIG = f"""\
data: {DATA}
n: 40
steps:
  - kind: scan-backdoor
    method: mm-bd
gates:
  - backdoor == clean
"""


@pytest.fixture
def audit_case(tmp_path, monkeypatch):
    """(run argv -> options, the default options) for a config in ``tmp_path``."""
    config = tmp_path / "audit.yaml"
    config.write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    default = AuditOptions(model=MODEL, config=load_config(str(config)))
    base = ["audit", MODEL, "--config", str(config)]

    def run(*extra: str) -> AuditOptions:
        return _options(monkeypatch, "audit", [*base, *extra])

    return run, default


def test_audit_defaults(audit_case):
    run, default = audit_case
    options = run()
    assert options == default
    assert options.seed is options.workers is options.device is options.tolerance is None  # -> the config's
    assert options.report_dir == "audit-report" and options.config.gates[0].metric == "backdoor.verdict"


AUDIT_CASES = [
    (["--report-dir", "out"], {"report_dir": "out"}),
    (["--baseline", "old.json"], {"baseline": "old.json"}),
    (["--tolerance", "0.05"], {"tolerance": 0.05}),
    (["--format", "html", "--format", "junit"], {"formats": ("html", "junit")}),
    (["--seed", "3"], {"seed": 3}),
    (["--workers", "2"], {"workers": 2}),
    (["--device", "cuda"], {"device": "cuda"}),
    (["--resume"], {"resume": True}),
    (["-q"], {}),
]


@pytest.mark.parametrize("extra, changes", AUDIT_CASES)
def test_audit_option(audit_case, extra, changes):
    run, default = audit_case
    assert run(*extra) == replace(default, **changes)


def test_audit_without_model_or_with_a_bad_tolerance_calls_no_job(audit_case, monkeypatch):
    run, _ = audit_case
    with pytest.raises(UsageError, match="missing MODEL"):
        _options(monkeypatch, "audit", ["audit"])
    with pytest.raises(UsageError, match="--tolerance must be in"):
        run("--tolerance", "nan")
    assert not Path("audit-report").exists()
