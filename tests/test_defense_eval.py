"""Defended evaluation: blind vs BPDA vs BPDA+EOT, the attack CLI's --defense, and defend purify."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advaudit.attacks.suites import AttackChoice
from advaudit.cli import main
from advaudit.defenses import build_stack
from advaudit.defenses.defended import DefendedModel
from advaudit.defenses.evaluate import evaluate_defense

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
CIFAR_DATA = str(SAMPLE_MODELS / "data" / "cifar10_test_1k.npz")


@pytest.fixture(scope="module")
def jpeg_eval(mnist_sample):
    model, data = mnist_sample
    return evaluate_defense(
        model, data.x[:32], data.y[:32], build_stack(["jpeg:quality=50"]),
        [AttackChoice("pgd", {"steps": 10})], [0.2], modes=("blind", "bpda"), seed=0,
    )


def test_bpda_beats_blind_and_the_gap_is_flagged(jpeg_eval):
    ev = jpeg_eval
    blind, bpda = ev.modes["blind"].robust_by_eps[0.2], ev.modes["bpda"].robust_by_eps[0.2]
    assert bpda < blind  # the adaptive attacker does better than the preprocessor-blind one
    assert ev.robust_accuracy == bpda  # the honest figure is the lowest
    assert ev.undefended_robust_by_eps[0.2] <= blind  # purification helps only against the blind attacker
    assert blind - bpda >= 0.1
    assert any("only looks strong under blind" in w for w in ev.warnings)


def test_undefended_column_attacks_every_sample_the_undefended_model_gets_right(mnist_sample):
    model, data = mnist_sample
    # 1-bit quantisation after a strong blur ruins clean accuracy; the undefended figure must not inherit that
    ev = evaluate_defense(
        model, data.x[:16], data.y[:16], build_stack(["gaussian:sigma=3", "bit-depth:bits=1"]),
        [AttackChoice("pgd", {"steps": 10})], [0.3], modes=("blind",), seed=0,
    )
    assert ev.clean_accuracy < ev.clean_accuracy_undefended
    assert ev.undefended_robust_by_eps[0.3] <= 0.1


def test_verification_goes_through_the_real_defence(mnist_sample, jpeg_eval):
    model, data = mnist_sample
    defended = DefendedModel(model, build_stack(["jpeg:quality=50"]))
    clean = defended.predict(data.x[:32]).labels == data.y[:32]
    assert jpeg_eval.clean_accuracy == pytest.approx(clean.mean())


def test_randomised_stack_reports_expected_accuracy_over_draws(mnist_sample):
    model, data = mnist_sample
    ev = evaluate_defense(
        model, data.x[:12], data.y[:12], build_stack(["tvm:iters=5,drop=0.7"]),
        [AttackChoice("fgsm")], [0.2], modes=("bpda", "bpda+eot"), eot=3, eval_draws=3, seed=1,
    )
    assert ev.randomized and ev.eval_draws == 3 and ev.eot == 3
    # expected accuracy over 3 draws of 12 samples: a multiple of 1/36
    for m in ev.modes.values():
        v = m.robust_by_eps[0.2] * 36
        assert abs(v - round(v)) < 1e-6
    again = evaluate_defense(
        model, data.x[:12], data.y[:12], build_stack(["tvm:iters=5,drop=0.7"]),
        [AttackChoice("fgsm")], [0.2], modes=("bpda", "bpda+eot"), eot=3, eval_draws=3, seed=1,
    )
    robust = ev.to_dict()["modes"]["bpda+eot"]["robust_accuracy"]
    assert again.to_dict()["modes"]["bpda+eot"]["robust_accuracy"] == robust
    assert any("randomised" in w for w in evaluate_defense(
        model, data.x[:4], data.y[:4], build_stack(["kmeans:k=4"]), [AttackChoice("fgsm")], [0.1], modes=("bpda",),
        eval_draws=1,
    ).warnings)


def test_attack_cli_defense_adaptive_all_report(tmp_path, capsys):
    rep = tmp_path / "r.json"
    rc = main(["-q", "attack", MNIST, "--data", MNIST_DATA, "--n", "16", "--attack", "fgsm", "--eps", "0.3",
               "--defense", "bit-depth:bits=2", "--defense", "median", "--adaptive", "all", "--report", str(rep),
               "--fail-under", "robust_accuracy=0.99"])
    assert rc == 1  # the gate applies to the honest (lowest) robust accuracy
    r = json.loads(rep.read_text())
    assert r["schema"] == "advaudit.report/1" and r["kind"] == "attack"
    d = r["defense"]
    assert d["stack"] == ["bit-depth:bits=2", "median:window=3"]
    assert set(d["modes"]) == {"blind", "bpda", "bpda+eot"}
    assert d["modes"]["bpda+eot"]["note"].startswith("no randomised defence")
    for m in d["modes"].values():
        assert m["results"][0]["attack"] == "fgsm" and 0 <= m["robust_accuracy"] <= 1
    assert r["clean_accuracy"] == d["clean_accuracy"]
    assert r["robust_accuracy"] == min(m["robust_accuracy"] for m in d["modes"].values())
    assert "0.3" in d["robust_accuracy_undefended_by_eps"]
    out = capsys.readouterr().out
    assert "blind" in out and "bpda+eot" in out and "worst case" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--defense", "nope"], "unknown defense 'nope'"),
        (["--defense", "jpeg:qual=3"], "no parameter 'qual'"),
        (["--defense", "tvm:drop=1.5"], "drop must be"),
        (["--adaptive", "bpda"], "--adaptive needs --defense"),
        (["--defense", "jpeg", "--targeted", "--target", "random"], "not supported with --defense"),
    ],
)
def test_attack_cli_bad_defence_input_exits_2(args, message, capsys):
    rc = main(["attack", MNIST, "--data", MNIST_DATA, "--n", "4", "--attack", "fgsm", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_defend_purify_writes_npz(tmp_path, capsys):
    out = tmp_path / "p.npz"
    rc = main(["-q", "defend", "purify", "--defense", "kmeans:k=4", "--defense", "bit-depth:bits=3",
               "--data", CIFAR_DATA, "--n", "6", "--out", str(out)])
    assert rc == 0
    with np.load(out) as f:
        x, y = f["x"], f["y"]
        assert str(f["defense"]) == "kmeans:k=4,iters=20 + bit-depth:bits=3"
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.uint8 and len(y) == 6
    for img in x:
        assert len(np.unique(img.reshape(3, -1).T, axis=0)) <= 4
    out = str(tmp_path / "q.npz")
    assert main(["defend", "purify", "--defense", "kmeans:zz=1", "--data", CIFAR_DATA, "--out", out]) == 2
    assert not (tmp_path / "q.npz").exists()
