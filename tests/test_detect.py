"""LCR detection: mutation operators, SPRT, calibration, detector, evaluation, STRIP, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from advaudit.attacks.runner import run_attacks
from advaudit.attacks.suites import AttackChoice
from advaudit.detect import Calibration, Mutation, SPRTDetector, STRIPDetector, auroc, calibrate, label_change_rates
from advaudit.detect.mutations import MUTATORS
from advaudit.detect.sprt import ADVERSARIAL, NORMAL, SPRT, UNDECIDED, sprt_round
from advaudit.errors import DataError, UsageError

from .conftest import SAMPLE_MODELS

MNIST = str(SAMPLE_MODELS / "mnist_cnn.onnx")
MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")


@pytest.mark.parametrize("name", sorted(MUTATORS))
def test_mutators_shape_range_grouping_and_determinism(name):
    x = torch.rand(3, 1, 28, 28)
    a = MUTATORS[name](x, 5, 0.2, 0.0, 1.0, torch.Generator().manual_seed(1))
    b = MUTATORS[name](x, 5, 0.2, 0.0, 1.0, torch.Generator().manual_seed(1))
    assert a.shape == (15, 1, 28, 28)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[0], a[1])  # different mutations of the same input
    # rows i*k..i*k+k-1 stay close to input i
    d = (a.reshape(3, 5, -1) - x.reshape(3, 1, -1)).abs().mean(dim=2)
    d_other = (a.reshape(3, 5, -1) - x.roll(1, 0).reshape(3, 1, -1)).abs().mean(dim=2)
    assert (d < d_other).float().mean() > 0.9


def test_sprt_thresholds_and_first_crossing():
    t = SPRT(kappa_nor=0.05, mu=1.2, sigma=0.03).check()
    assert t.p1 == pytest.approx(0.09) and t.p0 == pytest.approx(0.03)
    assert t.upper == pytest.approx(math.log(0.95 / 0.05))
    # input 0: label changes every time -> adversarial after a few; input 1: never -> normal; 2: too short
    changes = np.array([[1] * 6, [0] * 6, [0] * 6], dtype=bool)
    c0 = np.zeros(3, dtype=np.int64)
    n0 = np.array([0, 200, 0])
    dec, n, c = sprt_round(t, changes, c0, n0)
    assert dec[0] == ADVERSARIAL and dec[1] == NORMAL and dec[2] == UNDECIDED
    k = math.ceil(t.upper / math.log(t.p1 / t.p0))  # changes needed with no non-changes
    assert n[0] == k and c[0] == k
    assert t.log_ratio(np.array(c[0]), np.array(n[0])) >= t.upper
    assert t.log_ratio(np.array(k - 1), np.array(k - 1)) < t.upper  # it decided at the first crossing


@pytest.mark.parametrize(
    "kw", [dict(alpha=0.0), dict(alpha=0.5), dict(beta=0.7), dict(sigma=0.07), dict(sigma=-1.0), dict(mu=0.0)]
)
def test_sprt_rejects_bad_parameters(kw):
    with pytest.raises(UsageError):
        SPRT(**{"kappa_nor": 0.05, "mu": 1.2, "sigma": 0.03, **kw}).check()


@pytest.fixture(scope="module")
def mnist_detect(mnist_sample):
    model, data = mnist_sample
    x, y = data.x, data.y
    cal = calibrate(model, x[:100], y[:100], Mutation("brightness", 0.35), n_mutations=100)
    run = run_attacks(model, x[100:200], y[100:200], [AttackChoice("deepfool")], [0.3])
    adv = run.adv[0.3][run.adv_by[0.3] >= 0]
    return model, cal, x[100:200][model.predict(x[100:200]).labels == y[100:200]], adv


def test_calibration_is_mean_plus_one_sided_99_margin(mnist_detect, mnist_sample):
    model, cal, _, _ = mnist_detect
    _, data = mnist_sample
    x, y = data.x[:100], data.y[:100]
    lcr = label_change_rates(model, x[model.predict(x).labels == y], cal.mutation, 100)
    assert cal.lcr_mean == pytest.approx(lcr.mean())
    assert cal.kappa_nor == pytest.approx(lcr.mean() + 2.3263 * lcr.std(ddof=1) / math.sqrt(len(lcr)), rel=1e-3)
    assert cal.model_sha256 == model.sha256


def test_adversarial_inputs_have_higher_lcr_and_are_detected(mnist_detect):
    model, cal, normal, adv = mnist_detect
    assert len(adv) >= 30
    ln = label_change_rates(model, normal, cal.mutation, 100)
    la = label_change_rates(model, adv, cal.mutation, 100)
    assert la.mean() > 5 * ln.mean()
    assert auroc(ln, la) > 0.95
    det = SPRTDetector(model, cal)
    res = det(adv)
    assert (res.decision == ADVERSARIAL).mean() > 0.9
    assert np.all(res.error_bound[res.decision == ADVERSARIAL] == 0.05)
    assert res.mutations.mean() < 30
    same = det(adv)
    assert np.array_equal(same.decision, res.decision) and np.array_equal(same.mutations, res.mutations)


def test_max_mutations_leaves_inputs_undecided(mnist_detect):
    model, cal, normal, _ = mnist_detect
    res = SPRTDetector(model, cal, max_mutations=3)(normal[:20])
    assert np.all(res.mutations <= 3)
    assert (res.decision == UNDECIDED).any() and np.all(np.isnan(res.error_bound[res.decision == UNDECIDED]))


def test_calibration_round_trip_and_refusals(mnist_detect, tmp_path):
    model, cal, _, _ = mnist_detect
    cal.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert back.kappa_nor == cal.kappa_nor and back.mutation == cal.mutation
    back.model_sha256 = "0" * 64
    with pytest.raises(UsageError, match="another model"):
        SPRTDetector(model, back)
    with pytest.raises(UsageError):
        cal.check_for(model, Mutation("gaussian", 0.35))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError):
        Calibration.load(tmp_path / "bad.json")


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    neg, pos = rng.integers(0, 5, 40).astype(float), rng.integers(2, 8, 30).astype(float)
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert auroc(neg, pos) == pytest.approx(pairs)


def test_model_mutation_lcr(mnist_sample):
    model, data = mnist_sample
    cal = calibrate(model, data.x[:60], data.y[:60], Mutation("gf", 0.05), mutants=8)
    assert len(cal.mutation.mutants) == 8 and cal.n_mutations == 8
    before = model.predict(data.x[:20]).outputs
    lcr = label_change_rates(model, data.x[:20], cal.mutation, len(cal.mutation.mutants))
    assert np.all((0 <= lcr) & (lcr <= 1))
    # every mutant keeps >= 90% of the accuracy, and the model is restored afterwards
    np.testing.assert_allclose(model.predict(data.x[:20]).outputs, before)


class _Trojaned(torch.nn.Module):
    """The sample MNIST CNN with a hand-made backdoor: a bright 3x3 corner patch forces class 0."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        trig = (x[:, :, -4:-1, -4:-1].amin(dim=(1, 2, 3)) > 0.9).float()
        boost = torch.zeros_like(logits)
        boost[:, 0] = 50.0
        return logits + trig[:, None] * boost


def test_strip_flags_inputs_that_carry_a_trigger(mnist_sample, tmp_path):
    from advaudit.models import load_model

    _, data = mnist_sample
    net = torch.jit.load(str(SAMPLE_MODELS / "mnist_cnn.pt")).eval()
    path = tmp_path / "trojaned.pt"
    extra = {"advaudit.json": json.dumps({"range": [0, 1], "input_shape": [1, 28, 28]})}
    torch.jit.save(torch.jit.trace(_Trojaned(net), torch.zeros(2, 1, 28, 28)), str(path), _extra_files=extra)
    model = load_model(path)
    strip = STRIPDetector(overlays=16, frr=0.02)
    cal = strip.calibrate(model, data.x[:100], data.y[:100])
    clean = strip.decide(model, cal, data.x[100:160])
    assert clean.flagged.mean() < 0.15
    stamped = data.x[100:160].copy()
    stamped[:, :, -4:-1, -4:-1] = 1.0
    assert np.all(model.predict(stamped).labels == 0)
    assert strip.decide(model, cal, stamped).flagged.mean() > 0.9
    assert -strip.score(model, cal, stamped).mean() < -clean.score.mean()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudit", *args], capture_output=True, text=True)


def test_cli_calibrate_detect_evaluate(tmp_path):
    adv, cal, rep, roc = (tmp_path / n for n in ("adv.npz", "cal.json", "r.json", "roc.png"))
    r = cli("attack", MNIST, "--data", MNIST_DATA, "--offset", "300", "--n", "80", "--attack", "deepfool",
            "--eps", "0.3", "--save-adv", str(adv), "-q")
    assert r.returncode == 0, r.stderr
    r = cli("detect", "calibrate", MNIST, "--data", MNIST_DATA, "--n", "100", "--mutations", "50", "--out", str(cal))
    assert r.returncode == 0, r.stderr
    assert "kappa_nor" in r.stdout
    r = cli("detect", MNIST, "--inputs", str(adv), "--calibration", str(cal), "--report", str(rep),
            "--fail-on-adversarial")
    assert r.returncode == 1, r.stderr
    report = json.loads(rep.read_text())
    assert report["schema"] == "advaudit.report/1" and report["totals"]["adversarial"] > 0
    assert {"verdict", "lcr", "mutations", "error_bound"} <= set(report["inputs"][0])
    r = cli("detect", "evaluate", MNIST, "--clean", MNIST_DATA, "--n", "100", "--adversarial", str(adv),
            "--calibration", str(cal), "--lcr-mutations", "50", "--roc", str(roc), "--format", "json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["auroc"]["deepfool"] > 0.9 and 0 <= ev["sprt"]["precision"] <= 1
    assert roc.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--calibration", "nope.json"], "calibration file not found"),
        (["--calibration", "CAL", "--alpha", "0.6"], "--alpha"),
        (["--calibration", "CAL", "--sigma", "5"], "--sigma"),
    ],
)
def test_cli_detect_bad_input(tmp_path, args, needle):
    cal = tmp_path / "cal.json"
    r = cli("detect", "calibrate", MNIST, "--data", MNIST_DATA, "--n", "40", "--mutations", "20", "--out", str(cal))
    assert r.returncode == 0, r.stderr
    args = [str(cal) if a == "CAL" else a for a in args]
    r = cli("detect", MNIST, "--inputs", MNIST_DATA, "--n", "5", *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kappa,sigma", [(0.05, 0.03), (0.11, 0.05), (0.01, 0.005)])
def test_sprt_min_normal_is_the_first_acceptance(kappa: float, sigma: float) -> None:
    t = SPRT(kappa_nor=kappa, mu=1.2, sigma=sigma).check()
    n = t.min_normal
    zero = np.zeros(1)
    assert t.log_ratio(zero, np.array([n])) <= t.lower < t.log_ratio(zero, np.array([n - 1]))


def test_darken_only_darkens_within_radius():
    x = torch.rand(4, 1, 28, 28)
    d = MUTATORS["darken"](x, 50, 0.3, 0.0, 1.0, torch.Generator().manual_seed(0))
    xs = x.repeat_interleave(50, dim=0)
    assert torch.all(d <= xs + 1e-7) and torch.all(d >= (xs - 0.3).clamp(min=0) - 1e-6)
    offsets = (xs - d).amax(dim=(1, 2, 3))  # pixels at 1 before the shift show the offset
    assert offsets.max() > 0.25 and offsets.min() < 0.05


def test_chained_mutation_applies_each_step_in_order():
    x = torch.full((2, 1, 28, 28), 0.8)
    m = Mutation.parse("darken+pixel", None).check()
    assert m.steps == [("darken", 0.5), ("pixel", 0.05)] and m.radius_text == "0.5,0.05"
    gray, colour = np.zeros((2, 1, 28, 28), np.float32), np.zeros((2, 3, 32, 32), np.float32)
    assert Mutation().resolve(gray) == m  # the default, auto, by channel count
    assert Mutation().resolve(colour) == Mutation("brightness", 0.5)
    with pytest.raises(UsageError, match="explicit --mutation"):
        Mutation.parse("auto", "0.5")
    from advaudit.detect.mutations import chain

    out = chain(m.steps, x, 40, 0.0, 1.0, torch.Generator().manual_seed(3)).reshape(80, -1)
    mode = out.median(dim=1).values  # the darkened level of each mutation
    assert torch.all(mode <= 0.8) and mode.min() < 0.5
    reset = (out - mode[:, None]).abs() > 1e-6  # pixels the second step reset
    assert 0.03 < reset.float().mean() < 0.07


@pytest.mark.parametrize(
    "operator,radius,needle",
    [
        ("darken+pixel", "0.5", "one value per operator"),
        ("darken+nope", None, "unknown mutation 'nope'"),
        ("nai+pixel", None, "unknown mutation 'nai'"),
        ("pixel", "0.5,x", "comma-separated numbers"),
        ("darken+pixel", "0.5,1.5", "(0, 1]"),
    ],
)
def test_mutation_parse_rejects_bad_settings(operator, radius, needle):
    with pytest.raises(UsageError) as e:
        Mutation.parse(operator, radius).check()
    assert needle in str(e.value)


def test_chained_calibration_round_trip(mnist_sample, tmp_path):
    model, data = mnist_sample
    cal = calibrate(model, data.x[:40], data.y[:40], Mutation.parse("darken+pixel", "0.4,0.03"), n_mutations=20)
    cal.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["mutation"]["radius"] == [0.4, 0.03]
    back = Calibration.load(tmp_path / "c.json")
    assert back.mutation == cal.mutation
    back.check_for(model, Mutation.parse("darken+pixel", [0.4, 0.03]))
    with pytest.raises(UsageError, match="--radius 0.4,0.03"):
        back.check_for(model, Mutation.parse("darken+pixel"))


def test_normal_inputs_stop_exactly_at_the_first_acceptance(mnist_detect):
    """The rounds never overshoot the count at which an input without label changes is accepted."""
    model, cal, normal, _ = mnist_detect
    det = SPRTDetector(model, cal)
    res = det(normal)
    quiet = (res.decision == NORMAL) & (res.changes == 0)
    assert quiet.any() and np.all(res.mutations[quiet] == det.test.min_normal)


def test_cli_bad_chained_radius_is_a_one_line_error(tmp_path):
    for args, needle in [(["--mutation", "darken+pixel", "--radius", "0.5"], "one value per operator"),
                         (["--radius", "0.5"], "goes with an explicit --mutation")]:
        r = cli("detect", "calibrate", MNIST, "--data", MNIST_DATA, "--n", "20", *args, "--out",
                str(tmp_path / "c.json"))
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.json").exists()


def test_calibration_without_label_changes_keeps_a_usable_kappa(mnist_sample):
    """No change in N mutations: kappa_nor is the 99% upper bound 1 - 0.01^(1/N), not 0."""
    model, data = mnist_sample
    cal = calibrate(model, data.x[:10], data.y[:10], Mutation("gaussian", 0.001), n_mutations=10)
    assert cal.lcr_mean == 0
    assert cal.kappa_nor == pytest.approx(1 - 0.01 ** (1 / (cal.n_inputs * 10)))
    SPRTDetector(model, cal)  # a valid test: sigma < mu * kappa_nor


def test_detector_contract_lcr_through_the_registry(mnist_detect, tmp_path):
    """get_detector finds LCR through the registry; its calibration file has no "method" (old files
    load as LCR); decide gives the SPRT's verdicts with the LCR per-input arrays."""
    from advaudit.detect import Detector, get_detector, load_calibration
    from advaudit.detect.lcr import LCRDetector

    model, cal, _, adv = mnist_detect
    det = get_detector("lcr", mu="1.2", max_mutations="500")
    assert isinstance(det, LCRDetector) and isinstance(det, Detector) and det.mu == 1.2 and det.max_mutations == 500
    cal.save(tmp_path / "c.json")
    assert "method" not in json.loads((tmp_path / "c.json").read_text())
    method, back = load_calibration(tmp_path / "c.json")
    assert method == "lcr" and back.kappa_nor == cal.kappa_nor
    dec = det.decide(model, back, adv[:40])
    res = SPRTDetector(model, cal)(adv[:40])
    assert np.array_equal(dec.verdict, res.verdict) and np.array_equal(dec.extra["mutations"], res.mutations)
    assert dec.totals()["adversarial"] == res.totals()["adversarial"]
    assert list(dec.totals()) == ["n", "adversarial", "normal", "undecided", "mean_mutations", "time_s", "ms_per_input"]
    assert np.allclose(det.score(model, back, adv[:5]), label_change_rates(model, adv[:5], cal.mutation, 200))


def test_get_detector_refuses_unknown_names_and_parameters():
    from advaudit.detect import get_detector
    from advaudit.errors import PluginError

    with pytest.raises(PluginError, match="unknown detector 'nope'"):
        get_detector("nope")
    with pytest.raises(PluginError, match="has no parameter 'steps'"):
        get_detector("strip", steps="3")
    with pytest.raises(PluginError, match="not a valid int"):
        get_detector("strip", overlays="many")
    with pytest.raises(UsageError, match="frr must be in"):
        get_detector("strip", frr="0.7")
