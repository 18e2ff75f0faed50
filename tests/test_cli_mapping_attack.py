"""Command line -> job options for ``attack`` (and ``attack --defense``), ``harden`` and ``defend
purify`` / ``defend train-vqvae`` (coverage.py-style: one case per option pins
``options == DEFAULT with that field changed``; the jobs are replaced by recorders, so nothing runs).

Each ``*_CASES`` table is also read by ``tests/test_cli_mapping_complete.py``, which checks that every
option of every command appears in a table."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import pytest

from advaudit.api import (
    AttackOptions, DataOptions, DefendOptions, HardenOptions, ModelOptions, PurifyOptions, RepairOptions,
    TrainVqvaeOptions,
)
from advaudit.cli.sharding import recorded_command
from advaudit.errors import UsageError

from .conftest import SAMPLE_MODELS
from .support.cli_mapping import options_for

MODEL = str(SAMPLE_MODELS / "mnist_cnn.onnx")
DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")

Case = tuple[list[str], dict[str, Any]]


def apply(default: Any, changes: dict[str, Any]) -> Any:
    """``default`` with ``changes``; ``"model.x"`` / ``"data.x"`` (any sub-options field) change a nested field."""
    top = {k: v for k, v in changes.items() if "." not in k}
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            top[outer] = replace(top.get(outer, getattr(default, outer)), **{inner: value})
    return replace(default, **top)


def run(monkeypatch: pytest.MonkeyPatch, job: str, argv: list[str], recorded: bool = True) -> Any:
    """The options ``argv`` builds, with the recorded command checked and reset to the default."""
    monkeypatch.setattr(sys, "argv", ["advaudit", *argv])
    options = options_for(monkeypatch, job, argv)
    if hasattr(options, "command"):
        expected = recorded_command(argv) if recorded else argv
        assert options.command == " ".join(["advaudit", *expected])
        options = replace(options, command=type(options).command)
    return options


# Options every model-loading command shares (``model_options``), as changes of ``model``.
MODEL_CASES: list[Case] = [
    (["--spec", "spec.yaml"], {"model.spec_file": "spec.yaml"}),
    (["--range", "0,255"], {"model.range": "0,255"}),
    (["--mean", "0.5"], {"model.mean": "0.5"}),
    (["--std", "0.25"], {"model.std": "0.25"}),
    (["--layout", "nhwc"], {"model.layout": "nhwc"}),
    (["--input-shape", "1,28,28"], {"model.input_shape": "1,28,28"}),
    (["--device", "cuda"], {"model.device": "cuda"}),
    (["--max-model-size", "10"], {"model.max_size_mb": 10.0}),
]


def data_cases(field: str) -> list[Case]:
    """The data options (``data_options``) as changes of the options field ``field``."""
    return [
        (["--n", "50"], {f"{field}.n": 50}),
        (["--offset", "10"], {f"{field}.offset": 10}),
        (["--labels", "labels.idx"], {f"{field}.labels": "labels.idx"}),
        (["--data-format", "npz"], {f"{field}.format": "npz"}),
        (["--resize", "32"], {f"{field}.resize": "32"}),
        (["--crop", "28"], {f"{field}.crop": "28"}),
        (["--max-input-pixels", "1000"], {f"{field}.max_input_pixels": 1000}),
        (["--batch-size", "16"], {"batch_size": 16}),
    ]


# --- attack -----------------------------------------------------------------------------------------------

ATTACK = ["attack", MODEL, "--data", DATA]
ATTACK_DEFAULT = AttackOptions(model=ModelOptions(path=MODEL), data=DataOptions(path=DATA))
ATTACK_CASES: list[Case] = [
    (["--suite", "quick"], {"suite": "quick"}),
    (["--attack", "pgd:steps=5", "--attack", "fgsm"], {"attacks": ("pgd:steps=5", "fgsm")}),
    (["--eps", "0.1", "--eps", "0.3"], {"eps": (0.1, 0.3)}),
    (["--norm", "l2"], {"norm": "l2"}),
    (["--targeted", "--target", "least-likely"], {"target": "least-likely"}),
    (["--targeted", "--target", "3"], {"target": "3"}),
    (["--save-adv", "adv.npz"], {"save_adversarial": "adv.npz"}),
    (["--examples", "ex.png"], {"examples": "ex.png"}),
    (["--report", "r.json"], {"report": "r.json"}),
    (["--report", "r.json", "--resume"], {"report": "r.json", "resume": True}),
    (["--fail-under", "robust_accuracy=0.5"], {"fail_under": ("robust_accuracy=0.5",)}),
    (["--workers", "2"], {"workers": 2}),
    (["--precision", "bf16"], {"model.precision": "bf16"}),
    (["--seed", "5"], {"seed": 5, "data.seed": 5}),
    (["--format", "md"], {}),
    (["-q"], {}),
    (["-v"], {}),
    *MODEL_CASES,
    *data_cases("data"),
]


def test_attack_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    options = run(monkeypatch, "attack", ATTACK)
    assert options == ATTACK_DEFAULT
    # None / empty means the job's default: the standard suite, 8/255 of the range, batch fitted to the input
    assert options.suite is None and options.eps == () and options.batch_size is None and options.seed == 0


@pytest.mark.parametrize(("args", "changes"), ATTACK_CASES)
def test_attack_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "attack", [*ATTACK, *args]) == apply(ATTACK_DEFAULT, changes)


# --- attack --defense -------------------------------------------------------------------------------------

DEFEND = [*ATTACK, "--defense", "jpeg:quality=75"]
DEFEND_DEFAULT = DefendOptions(model=ModelOptions(path=MODEL), data=DataOptions(path=DATA),
                               defenses=("jpeg:quality=75",), adaptive="all")
DEFEND_CASES: list[Case] = [
    (["--defense", "bit-depth:bits=3"], {"defenses": ("jpeg:quality=75", "bit-depth:bits=3")}),
    (["--adaptive", "bpda"], {"adaptive": "bpda"}),
    (["--eot", "4"], {"eot": 4}),
    (["--eval-draws", "3"], {"eval_draws": 3}),
    (["--suite", "quick"], {"suite": "quick"}),
    (["--attack", "fgsm"], {"attacks": ("fgsm",)}),
    (["--eps", "0.2"], {"eps": (0.2,)}),
    (["--norm", "l2"], {"norm": "l2"}),
    (["--report", "d.json"], {"report": "d.json"}),
    (["--fail-under", "robust_accuracy=0.1"], {"fail_under": ("robust_accuracy=0.1",)}),
    (["--precision", "fp32"], {"model.precision": "fp32"}),
    (["--seed", "7"], {"seed": 7, "data.seed": 7}),
    *MODEL_CASES,
    *data_cases("data"),
]


def test_defend_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, "defend", DEFEND, recorded=False) == DEFEND_DEFAULT


@pytest.mark.parametrize(("args", "changes"), DEFEND_CASES)
def test_defend_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "defend", [*DEFEND, *args], recorded=False) == apply(DEFEND_DEFAULT, changes)


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2"], "--workers is not supported with --defense"),
    (["--report", "r.json", "--resume"], "--resume is not supported with --defense"),
    (["--save-adv", "a.npz"], "--save-adv is not supported with --defense"),
])
def test_defend_refused_combinations_call_no_job(monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                  message: str) -> None:
    with pytest.raises(UsageError) as exc:
        run(monkeypatch, "defend", [*DEFEND, *args], recorded=False)
    assert message in exc.value.message


@pytest.mark.parametrize(("args", "message"), [
    (["--adaptive", "bpda"], "--adaptive needs --defense"),
    (["--targeted"], "--targeted and --target go together"),
    (["--suite", "quick", "--attack", "fgsm"], "give --suite or --attack, not both"),
    (["--resume"], "--resume needs --report"),
])
def test_attack_refused_combinations_call_no_job(monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                  message: str) -> None:
    with pytest.raises(UsageError) as exc:
        run(monkeypatch, "attack", [*ATTACK, *args])
    assert message in exc.value.message


# --- harden -----------------------------------------------------------------------------------------------

HARDEN = ["harden", MODEL, "--data", DATA, "--eval-data", DATA, "--eps", "0.1"]
HARDEN_DEFAULT = HardenOptions(model=ModelOptions(path=MODEL), train=DataOptions(path=DATA),
                               eval=DataOptions(path=DATA), eps=0.1)
HARDEN_CASES: list[Case] = [
    (["--eval-n", "30"], {"eval.n": 30}),
    (["--eval-offset", "5"], {"eval.offset": 5}),
    (["--eval-suite", "quick"], {"eval_suites": ("quick",)}),
    (["--method", "trades"], {"method": "trades"}),
    (["--epochs", "3"], {"epochs": 3}),
    (["--steps", "4"], {"steps": 4}),
    (["--step-size", "0.02"], {"step_size": 0.02}),
    (["--lr", "0.01"], {"lr": 0.01}),
    (["--optimizer", "sgd"], {"optimizer": "sgd"}),
    (["--schedule", "constant"], {"schedule": "constant"}),
    (["--ramp", "0.5"], {"ramp": 0.5}),
    (["--beta", "3"], {"beta": 3.0}),
    (["--shift", "2"], {"shift": 2}),
    (["--precision", "fp32"], {"model.precision": "fp32"}),
    (["--train-batch", "32"], {"train_batch": 32}),
    (["--out", "h.onnx"], {"out": "h.onnx"}),
    (["--report", "h.json"], {"report": "h.json"}),
    (["--format", "json"], {}),
    (["--seed", "4"], {"seed": 4, "train.seed": 4, "eval.seed": 4}),
    (["--n", "64"], {"train.n": 64}),
    (["--offset", "8"], {"train.offset": 8}),
    (["--labels", "l.idx"], {"train.labels": "l.idx", "eval.labels": "l.idx"}),
    (["--data-format", "npz"], {"train.format": "npz", "eval.format": "npz"}),
    (["--resize", "32"], {"train.resize": "32", "eval.resize": "32"}),
    (["--crop", "28"], {"train.crop": "28", "eval.crop": "28"}),
    (["--max-input-pixels", "1000"], {"train.max_input_pixels": 1000, "eval.max_input_pixels": 1000}),
    (["--batch-size", "16"], {"batch_size": 16}),
    *MODEL_CASES,
]


def test_harden_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, "harden", HARDEN, recorded=False) == HARDEN_DEFAULT


@pytest.mark.parametrize(("args", "changes"), HARDEN_CASES)
def test_harden_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "harden", [*HARDEN, *args], recorded=False) == apply(HARDEN_DEFAULT, changes)


# --- repair -----------------------------------------------------------------------------------------------

REPAIR = ["repair", MODEL, "--data", DATA, "--eval-data", DATA]
REPAIR_DEFAULT = RepairOptions(model=ModelOptions(path=MODEL), data=DataOptions(path=DATA), eval=DataOptions(path=DATA))
REPAIR_CASES: list[Case] = [
    (["--eval-n", "30"], {"eval.n": 30}),
    (["--scan-n", "100"], {"scan_n": 100}),
    (["--target-labels", "3,1"], {"target_labels": (3, 1)}),
    (["--scan", "s.json"], {"scan_report": "s.json"}),
    (["--rounds", "2"], {"rounds": 2}),
    (["--min-rounds", "1"], {"min_rounds": 1}),
    (["--reversals", "4"], {"reversals": 4}),
    (["--keep-below", "0.8"], {"keep_below": 0.8}),
    (["--epochs", "4"], {"epochs": 4}),
    (["--lr", "0.001"], {"lr": 0.001}),
    (["--ratio", "0.3"], {"ratio": 0.3}),
    (["--train-batch", "32"], {"train_batch": 32}),
    (["--out", "r.onnx"], {"out": "r.onnx"}),
    (["--report", "r.json"], {"report": "r.json"}),
    (["--format", "md"], {}),
    (["--seed", "4"], {"seed": 4, "data.seed": 4, "eval.seed": 4}),
    (["--n", "64"], {"data.n": 64}),
    (["--offset", "8"], {"data.offset": 8}),
    (["--labels", "l.idx"], {"data.labels": "l.idx", "eval.labels": "l.idx"}),
    (["--data-format", "npz"], {"data.format": "npz", "eval.format": "npz"}),
    (["--resize", "32"], {"data.resize": "32", "eval.resize": "32"}),
    (["--crop", "28"], {"data.crop": "28", "eval.crop": "28"}),
    (["--max-input-pixels", "1000"], {"data.max_input_pixels": 1000, "eval.max_input_pixels": 1000}),
    *MODEL_CASES,
]


def test_repair_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, "repair", REPAIR, recorded=False) == REPAIR_DEFAULT


@pytest.mark.parametrize(("args", "changes"), REPAIR_CASES)
def test_repair_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "repair", [*REPAIR, *args], recorded=False) == apply(REPAIR_DEFAULT, changes)


def test_repair_refuses_batch_size_and_bad_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="batch-size"):
        run(monkeypatch, "repair", [*REPAIR, "--batch-size", "8"], recorded=False)
    with pytest.raises(UsageError, match="class indices"):
        run(monkeypatch, "repair", [*REPAIR, "--target-labels", "a"], recorded=False)


# --- defend purify / train-vqvae --------------------------------------------------------------------------

PURIFY = ["defend", "purify", "--defense", "jpeg", "--data", DATA, "--out", "p.npz"]
PURIFY_DEFAULT = PurifyOptions(defenses=("jpeg",), data=DataOptions(path=DATA), out="p.npz")
PURIFY_CASES: list[Case] = [
    (["--defense", "kmeans:k=4"], {"defenses": ("jpeg", "kmeans:k=4")}),
    (["--range", "0,255"], {"range": "0,255"}),
    (["--seed", "2"], {"seed": 2, "data.seed": 2}),
    (["-q"], {}),
    *data_cases("data"),
]


def test_purify_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, "purify", PURIFY) == PURIFY_DEFAULT


@pytest.mark.parametrize(("args", "changes"), PURIFY_CASES)
def test_purify_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "purify", [*PURIFY, *args]) == apply(PURIFY_DEFAULT, changes)


VQVAE = ["defend", "train-vqvae", "--data", DATA, "--out", "v.safetensors"]
VQVAE_DEFAULT = TrainVqvaeOptions(data=DataOptions(path=DATA), out="v.safetensors")
VQVAE_CASES: list[Case] = [
    (["--epochs", "2"], {"epochs": 2}),
    (["--lr", "0.002"], {"lr": 0.002}),
    (["--hidden", "8"], {"hidden": 8}),
    (["--codes", "16"], {"codes": 16}),
    (["--dim", "4"], {"dim": 4}),
    (["--beta", "0.5"], {"beta": 0.5}),
    (["--noise", "0.1"], {"noise": 0.1}),
    (["--range", "0,255"], {"range": "0,255"}),
    (["--seed", "9"], {"seed": 9, "data.seed": 9}),
    *data_cases("data"),
]


def test_train_vqvae_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, "train_vqvae", VQVAE) == VQVAE_DEFAULT


@pytest.mark.parametrize(("args", "changes"), VQVAE_CASES)
def test_train_vqvae_option(monkeypatch: pytest.MonkeyPatch, args: list[str], changes: dict[str, Any]) -> None:
    assert run(monkeypatch, "train_vqvae", [*VQVAE, *args]) == apply(VQVAE_DEFAULT, changes)
