"""The command line -> job options mapping of ``detect calibrate``, ``detect`` and ``detect evaluate``:
one case per option, each pinning ``options == replace(DEFAULT, field=value)`` with the jobs mocked
(:func:`tests.support.cli_mapping.options_for`).  The detect commands take no ``--batch-size`` (the
detectors batch their own queries); ``-q``, ``-v`` and ``--format`` only change what is printed."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import pytest

from advaudit.jobs.base import DataOptions, ModelOptions
from advaudit.jobs.detect import DetectCalibrateOptions, DetectOptions
from advaudit.jobs.detect_evaluate import DetectEvaluateOptions

from .support.cli_mapping import options_for

MODEL, DATA, ADV, CAL = "model.onnx", "clean.npz", "adv.npz", "cal.json"

MODEL_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--spec", "spec.yaml"], {"spec_file": "spec.yaml"}),
    (["--range", "0,255"], {"range": "0,255"}),
    (["--mean", "0.5"], {"mean": "0.5"}),
    (["--std", "0.25"], {"std": "0.25"}),
    (["--layout", "nhwc"], {"layout": "nhwc"}),
    (["--input-shape", "1,28,28"], {"input_shape": "1,28,28"}),
    (["--device", "cuda"], {"device": "cuda"}),
    (["--max-model-size", "10"], {"max_size_mb": 10.0}),
]
DATA_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--data-format", "npz"], {"format": "npz"}),
    (["--labels", "labels.txt"], {"labels": "labels.txt"}),
    (["--n", "10"], {"n": 10}),
    (["--offset", "3"], {"offset": 3}),
    (["--resize", "32"], {"resize": "32"}),
    (["--crop", "28"], {"crop": "28"}),
    (["--max-input-pixels", "1000"], {"max_input_pixels": 1000}),
]


def _run(monkeypatch: pytest.MonkeyPatch, job: str, argv: list[str]) -> Any:
    """The options ``advaudit ARGV`` gives ``api.<job>`` (``sys.argv`` set as the command line would)."""
    monkeypatch.setattr(sys, "argv", ["advaudit", *argv])
    return options_for(monkeypatch, job, argv)


# ----------------------------------------------------------------------------------- detect calibrate
def _calibrate_base(tmp_path: Any) -> tuple[list[str], DetectCalibrateOptions]:
    out = str(tmp_path / "cal.json")
    argv = ["detect", "calibrate", MODEL, "--data", DATA, "--out", out]
    return argv, DetectCalibrateOptions(model=ModelOptions(path=MODEL), data=DataOptions(path=DATA), out=out)


CALIBRATE_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--method", "strip:overlays=16"], {"method": "strip:overlays=16"}),
    (["--mutation", "gaussian"], {"mutation": "gaussian"}),
    (["--radius", "0.2"], {"radius": "0.2"}),
    (["--mutations", "50"], {"n_mutations": 50}),
]


def test_calibrate_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    argv, default = _calibrate_base(tmp_path)
    assert _run(monkeypatch, "detect_calibrate", argv) == default


@pytest.mark.parametrize(("args", "changes"), CALIBRATE_CASES)
def test_calibrate_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, args: list[str],
                          changes: dict[str, Any]) -> None:
    argv, default = _calibrate_base(tmp_path)
    assert _run(monkeypatch, "detect_calibrate", argv + args) == replace(default, **changes)


def test_calibrate_seed_picks_the_sample_and_seeds_the_detector(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    argv, default = _calibrate_base(tmp_path)
    got = _run(monkeypatch, "detect_calibrate", argv + ["--seed", "5"])
    assert got == replace(default, seed=5, data=replace(default.data, seed=5))


@pytest.mark.parametrize(("args", "changes"), MODEL_CASES)
def test_calibrate_model_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, args: list[str],
                                changes: dict[str, Any]) -> None:
    argv, default = _calibrate_base(tmp_path)
    got = _run(monkeypatch, "detect_calibrate", argv + args)
    assert got == replace(default, model=replace(default.model, **changes))


@pytest.mark.parametrize(("args", "changes"), DATA_CASES)
def test_calibrate_data_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, args: list[str],
                               changes: dict[str, Any]) -> None:
    argv, default = _calibrate_base(tmp_path)
    got = _run(monkeypatch, "detect_calibrate", argv + args)
    assert got == replace(default, data=replace(default.data, **changes))


# --------------------------------------------------------------------------------------------- detect
RUN_ARGV = ["detect", MODEL, "--inputs", ADV, "--calibration", CAL]
RUN_DEFAULT = DetectOptions(model=ModelOptions(path=MODEL), inputs=DataOptions(path=ADV), calibration=CAL)

RUN_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--method", "strip"], {"method": "strip"}),
    (["--alpha", "0.1"], {"alpha": 0.1}),
    (["--beta", "0.2"], {"beta": 0.2}),
    (["--mu", "1.5"], {"mu": 1.5}),
    (["--sigma", "0.01"], {"sigma": 0.01}),
    (["--max-mutations", "50"], {"max_mutations": 50}),
    (["--fail-on-adversarial"], {"fail_on_adversarial": True}),
]


def _run_expected(argv: list[str], **changes: Any) -> DetectOptions:
    return replace(RUN_DEFAULT, command=" ".join(["advaudit", *argv]), **changes)


def test_detect_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(monkeypatch, "detect", RUN_ARGV) == _run_expected(RUN_ARGV)


@pytest.mark.parametrize(("args", "changes"), RUN_CASES)
def test_detect_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = RUN_ARGV + args
    assert _run(monkeypatch, "detect", argv) == _run_expected(argv, **changes)


def test_detect_report_and_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    argv = RUN_ARGV + ["--report", str(tmp_path / "r.json"), "--seed", "4"]
    expected = _run_expected(argv, report=str(tmp_path / "r.json"), seed=4, inputs=replace(RUN_DEFAULT.inputs, seed=4))
    assert _run(monkeypatch, "detect", argv) == expected


@pytest.mark.parametrize(("args", "changes"), MODEL_CASES)
def test_detect_model_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = RUN_ARGV + args
    expected = _run_expected(argv, model=replace(RUN_DEFAULT.model, **changes))
    assert _run(monkeypatch, "detect", argv) == expected


@pytest.mark.parametrize(("args", "changes"), DATA_CASES)
def test_detect_data_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = RUN_ARGV + args
    expected = _run_expected(argv, inputs=replace(RUN_DEFAULT.inputs, **changes))
    assert _run(monkeypatch, "detect", argv) == expected


# ------------------------------------------------------------------------------------ detect evaluate
EVAL_ARGV = ["detect", "evaluate", MODEL, "--clean", DATA, "--adversarial", ADV]
EVAL_DEFAULT = DetectEvaluateOptions(model=ModelOptions(path=MODEL), clean=DataOptions(path=DATA), adversarial=ADV)

EVAL_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["--calibration", CAL], {"calibration": CAL}),
    (["--method", "strip:frr=0.05"], {"method": "strip:frr=0.05"}),
    (["--mutation", "brightness"], {"mutation": "brightness"}),
    (["--radius", "0.4"], {"radius": "0.4"}),
    (["--lcr-mutations", "60"], {"lcr_mutations": 60}),
    (["--alpha", "0.1"], {"alpha": 0.1}),
    (["--beta", "0.2"], {"beta": 0.2}),
    (["--mu", "1.5"], {"mu": 1.5}),
    (["--sigma", "0.01"], {"sigma": 0.01}),
    (["--max-mutations", "50"], {"max_mutations": 50}),
]


def _eval_expected(argv: list[str], **changes: Any) -> DetectEvaluateOptions:
    recorded = [a for a in argv if a not in ("--resume",)]
    if "--workers" in recorded:
        i = recorded.index("--workers")
        recorded = recorded[:i] + recorded[i + 2 :]
    return replace(EVAL_DEFAULT, command=" ".join(["advaudit", *recorded]), **changes)


def test_evaluate_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(monkeypatch, "detect_evaluate", EVAL_ARGV) == _eval_expected(EVAL_ARGV)


@pytest.mark.parametrize(("args", "changes"), EVAL_CASES)
def test_evaluate_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = EVAL_ARGV + args
    assert _run(monkeypatch, "detect_evaluate", argv) == _eval_expected(argv, **changes)


def test_evaluate_outputs_resume_workers_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    report, roc = str(tmp_path / "r.json"), str(tmp_path / "roc.png")
    argv = EVAL_ARGV + ["--report", report, "--roc", roc, "--resume", "--workers", "2", "--seed", "7"]
    expected = _eval_expected(argv, report=report, roc=roc, resume=True, workers=2, seed=7,
                              clean=replace(EVAL_DEFAULT.clean, seed=7))
    assert _run(monkeypatch, "detect_evaluate", argv) == expected


@pytest.mark.parametrize(("args", "changes"), MODEL_CASES)
def test_evaluate_model_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = EVAL_ARGV + args
    expected = _eval_expected(argv, model=replace(EVAL_DEFAULT.model, **changes))
    assert _run(monkeypatch, "detect_evaluate", argv) == expected


@pytest.mark.parametrize(("args", "changes"), DATA_CASES)
def test_evaluate_data_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    argv = EVAL_ARGV + args
    expected = _eval_expected(argv, clean=replace(EVAL_DEFAULT.clean, **changes))
    assert _run(monkeypatch, "detect_evaluate", argv) == expected


def test_lcr_defaults_come_from_the_detector() -> None:
    """One place for the LCR defaults: every options class reads LCRDetector's."""
    from advaudit.detect.lcr import LCRDetector

    lcr = LCRDetector()
    for options in (DetectCalibrateOptions, DetectOptions, DetectEvaluateOptions):
        for name in ("mutation", "radius", "alpha", "beta", "mu", "sigma", "max_mutations"):
            if hasattr(options, name):
                assert getattr(options, name) == getattr(lcr, name)
    assert DetectCalibrateOptions.n_mutations == DetectEvaluateOptions.lcr_mutations == lcr.n_mutations


@pytest.mark.parametrize("argv", [RUN_ARGV, EVAL_ARGV, ["detect", "calibrate", MODEL, "--data", DATA, "--out", CAL]])
def test_detect_commands_refuse_a_batch_size_they_would_ignore(argv: list[str]) -> None:
    from click.testing import CliRunner

    from advaudit.cli import cli

    result = CliRunner().invoke(cli, [*argv, "--batch-size", "16"])
    assert result.exit_code == 2 and "No such option '--batch-size'" in result.output

