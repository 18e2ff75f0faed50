"""`advaudit attack`: runner semantics, verification, report, gates and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from advaudit.attacks.runner import run_attacks
from advaudit.attacks.suites import AttackChoice, parse_attack
from advaudit.errors import UsageError
from advaudit.models import load_model
from advaudit.report.gates import evaluate_gates, parse_gate, should_fail

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudit", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def fgsm_run(mnist_sample):
    model, data = mnist_sample
    return run_attacks(model, data.x[:100], data.y[:100], [AttackChoice("fgsm")], [0.05, 0.3], seed=3)


def test_every_counted_example_is_verified_inside_budget_and_range(mnist_sample, fgsm_run):
    model, _ = mnist_sample
    run = fgsm_run
    for e in run.eps:
        ok = run.adv_by[e] >= 0
        assert ok.sum() > 0
        delta = run.adv[e][ok].astype(np.float64) - run.x[ok].astype(np.float64)
        assert np.abs(delta).max() <= e
        assert run.adv[e].min() >= 0.0 and run.adv[e].max() <= 1.0
        # independent re-check in ONNX Runtime
        labels = model.predict(run.adv[e][ok]).labels
        assert np.all(labels != run.y[ok])
        assert np.all(labels == run.adv_labels[e][ok])


def test_robust_accuracy_is_monotone_in_eps_and_consistent(fgsm_run):
    run = fgsm_run
    assert run.robust_by_eps[0.3] <= run.robust_by_eps[0.05] <= run.clean_accuracy
    row = [r for r in run.rows if r.eps == 0.3][0]
    assert row.robust_accuracy == pytest.approx(run.robust_by_eps[0.3])
    assert row.verified == int((run.adv_by[0.3] >= 0).sum())
    assert row.success_rate == pytest.approx(row.verified / round(run.clean_accuracy * run.n))


def test_cascade_runs_later_attacks_only_on_robust_samples(mnist_sample):
    model, data = mnist_sample
    x, y = data.x[:60], data.y[:60]
    choices = [AttackChoice("fgsm"), AttackChoice("pgd", {"steps": 10})]
    run = run_attacks(model, x, y, choices, [0.15], cascade=True, seed=0)
    fgsm_row, pgd_row = run.rows
    assert pgd_row.attacked == round(fgsm_row.robust_accuracy * len(x))
    assert pgd_row.robust_accuracy <= fgsm_row.robust_accuracy
    assert pgd_row.robust_accuracy == pytest.approx(run.robust_by_eps[0.15])


def test_same_seed_same_results(mnist_sample):
    model, data = mnist_sample
    x, y = data.x[:40], data.y[:40]
    a = run_attacks(model, x, y, [AttackChoice("pgd", {"steps": 5})], [0.1], seed=7)
    b = run_attacks(model, x, y, [AttackChoice("pgd", {"steps": 5})], [0.1], seed=7)
    assert np.array_equal(a.adv[0.1], b.adv[0.1])
    assert [r.robust_accuracy for r in a.rows] == [r.robust_accuracy for r in b.rows]


def test_targeted_run_counts_only_hits_on_the_target(mnist_sample):
    model, data = mnist_sample
    x, y = data.x[:40], data.y[:40]
    run = run_attacks(model, x, y, [AttackChoice("pgd", {"steps": 20})], [0.3], target="least-likely", seed=0)
    ok = run.adv_by[0.3] >= 0
    clean_lp = model.predict(x).log_probs
    assert ok.sum() > 0
    assert np.all(run.adv_labels[0.3][ok] == clean_lp.argmin(axis=1)[ok])


def test_eps_outside_range_is_refused(mnist_sample):
    model, data = mnist_sample
    with pytest.raises(UsageError):
        run_attacks(model, data.x[:4], data.y[:4], [AttackChoice("fgsm")], [1.5])


@pytest.mark.parametrize(
    "value,threshold,fails",
    [(0.5, 0.6, True), (0.6, 0.6, False), (0.7, 0.6, False), (0.5999999, 0.6, False), (0.0, 0.0, False), (0.99, 1.0,
                                                                                                          True)],
)
def test_should_fail_table(value, threshold, fails):
    assert should_fail(value, threshold) is fails


def test_gates_parse_and_evaluate():
    gates = [parse_gate("robust_accuracy=0.5"), parse_gate("clean_accuracy=0.9"), parse_gate("robust_accuracy@0.1=0.8")]
    res = evaluate_gates(gates, 0.95, {0.1: 0.85, 0.3: 0.4})
    assert [g["passed"] for g in res] == [False, True, True]
    assert res[0]["value"] == 0.4
    for bad in ("robust=0.5", "robust_accuracy", "robust_accuracy=abc", "clean_accuracy@0.1=0.5", "robust_accuracy=5"):
        with pytest.raises(UsageError):
            parse_gate(bad)
    with pytest.raises(UsageError):
        evaluate_gates([parse_gate("robust_accuracy@0.2=0.1")], 0.9, {0.1: 0.5})


def test_parse_attack_syntax():
    c = parse_attack("pgd:steps=20, restarts=2")
    assert c.name == "pgd" and c.params == {"steps": "20", "restarts": "2"}
    with pytest.raises(UsageError):
        parse_attack("pgd:steps")


def test_cli_report_gate_and_exit_codes(tmp_path):
    report = tmp_path / "r.json"
    grid = tmp_path / "g.png"
    adv = tmp_path / "adv.npz"
    args = ["attack", MNIST, "--data", MNIST_DATA, "--n", "60", "--attack", "fgsm", "--eps", "0.1", "--eps", "0.3",
            "--report", str(report), "--examples", str(grid), "--save-adv", str(adv)]
    r = cli(*args, "--fail-under", "robust_accuracy=0.9")
    assert r.returncode == 1, r.stderr
    rep = json.loads(report.read_text())
    for key in ("schema", "command", "model", "data", "seed", "clean_accuracy", "results", "robust_accuracy",
                "warnings", "gates", "passed"):
        assert key in rep
    assert rep["schema"] == "advaudit.report/1"
    assert rep["passed"] is False and rep["gates"][0]["passed"] is False
    assert rep["model"]["sha256"] and rep["model"]["gradient_source"]
    for row in rep["results"]:
        for key in ("attack", "params", "norm", "eps", "robust_accuracy", "success_rate", "verified", "time_s"):
            assert key in row
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(adv) as f:
        assert len(f["x"]) == rep["results"][-1]["verified"]
    r = cli(*args, "--fail-under", "robust_accuracy=0.0", "--format", "json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["passed"] is True


def test_cli_same_seed_same_report(tmp_path):
    outs = []
    for i in range(2):
        path = tmp_path / f"r{i}.json"
        r = cli("attack", MNIST, "--data", MNIST_DATA, "--n", "30", "--attack", "pgd:steps=5", "--eps", "0.2",
                "--seed", "4", "--report", str(path), "-q")
        assert r.returncode == 0, r.stderr
        rep = json.loads(path.read_text())
        for row in rep["results"]:
            row.pop("time_s")
        rep.pop("meta")
        rep.pop("command")
        outs.append(rep)
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--attack", "fgsm", "--eps", "2"], "outside the value range"),
        (["--attack", "nosuch"], "unknown attack"),
        (["--attack", "pgd:stepz=3"], "no parameter"),
        (["--attack", "pgd", "--targeted"], "--targeted and --target"),
        (["--attack", "fgsm", "--fail-under", "robust=1"], "bad gate"),
        (["--suite", "quick", "--attack", "fgsm"], "not both"),
    ],
)
def test_cli_bad_input_exits_2(extra, needle):
    r = cli("attack", MNIST, "--data", MNIST_DATA, "--n", "8", *extra)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("advaudit: error:")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0]
    assert "" not in r.stderr.strip().splitlines()  # no progress-bar debris


def _no_gradient_model(path) -> str:
    """A linear classifier ending in an ONNX op (Shrink) that onnx2torch cannot convert."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [784, 10], rng.normal(size=784 * 10).astype(np.float32) * 0.05)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 784])
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("Shrink", ["z"], ["logits"], lambd=0.0),
    ]
    graph = helper.make_graph(
        nodes, "nograd",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def test_gradient_attack_on_model_without_gradients_names_usable_attacks(tmp_path):
    path = _no_gradient_model(tmp_path / "nograd.onnx")
    model = load_model(path)
    assert not model.has_gradients and "onnx2torch" in model.gradients.note
    r = cli("attack", path, "--data", MNIST_DATA, "--n", "8", "--attack", "pgd")
    assert r.returncode == 2
    assert "square" in r.stderr and "substitute" in r.stderr and "Traceback" not in r.stderr


def test_targeted_only_attack_in_untargeted_run_aims_at_random_classes(mnist_sample):
    model, data = mnist_sample
    x, y = data.x[:30], data.y[:30]
    run = run_attacks(model, x, y, [AttackChoice("jsma")], [1.0], seed=0)
    ok = run.adv_by[1.0] >= 0
    assert ok.sum() > 0 and run.rows[0].minimum_norm
    assert np.all(model.predict(run.adv[1.0][ok]).labels != y[ok])
