"""Neural Cleanse's reference rule: each label's trigger against the same label's triggers in clean
reference models (pure functions on simulated norms; one end-to-end scan of the bundled MNIST models)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from advaudit.backdoor.mad import gap_test
from advaudit.backdoor.reference import fit_prior, fit_reference, reference_test
from advaudit.cli import main

from .conftest import SAMPLE_MODELS

MNIST = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"
SCAN = ["--data", str(MNIST), "--n", "100", "--steps", "200", "--batch-size", "16", "-q"]
STATISTIC = {"neural-cleanse": "mask_l1", "mm-bd": "max_margin", "freeeagle": "tendency"}


def clean_norms(rng: np.random.Generator, models: int, label_mean: np.ndarray, label_sd: np.ndarray) -> np.ndarray:
    """Norms of clean models of one task: each label has its own typical size and spread across models
    (easy classes small), and each model its own overall scale."""
    scale = rng.normal(np.log(80), 0.3, size=(models, 1))
    return np.exp(scale + label_mean + rng.normal(size=(models, label_mean.size)) * label_sd)


def task(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    label_mean = rng.normal(0, 0.35, size=k)
    label_mean[0] = -1.3  # a natural easy class: 3.7x below the median in every clean model
    return label_mean, rng.uniform(0.08, 0.3, size=k)


def test_fit_prior_recovers_the_scaled_f_prior() -> None:
    """limma's moment fit: sample variances drawn as s0^2 * chi2(d) / d scaled by a prior on the true
    variances with d0 degrees of freedom give back d0 and s0^2."""
    rng = np.random.default_rng(0)
    d, d0, s0 = 17.0, 12.0, 0.04
    true = s0 * d0 / rng.chisquare(d0, size=20000)
    sample = true * rng.chisquare(d, size=true.size) / d
    fit_d0, fit_s0 = fit_prior(sample, d)
    assert fit_d0 == pytest.approx(d0, rel=0.2) and fit_s0 == pytest.approx(s0, rel=0.1)
    assert fit_prior(0.04 * rng.chisquare(d, 5000) / d, d)[0] > 100  # no spread beyond chance: (nearly) pooled


@pytest.mark.parametrize("k", [10, 43])
def test_false_alarm_rate_is_at_most_alpha_on_clean_models(k: int) -> None:
    """15 clean references of a task with an easy class and label-specific spreads; 600 further clean
    models: flagged in at most about alpha of them (Bonferroni over the labels)."""
    rng = np.random.default_rng(k)
    mean, sd = task(rng, k)
    flagged = []
    for _ in range(40):
        ref = fit_reference(clean_norms(rng, 15, mean, sd))
        flagged += [reference_test(n, ref, 0.05).flagged.any() for n in clean_norms(rng, 15, mean, sd)]
    assert 0.005 < np.mean(flagged) <= 0.07, np.mean(flagged)


def test_heavy_tailed_references_make_the_test_conservative() -> None:
    """Clean models whose per-class values have Student t (3 df) tails across models: the normal model
    alone flags far more than alpha; with the tail fitted to the references' own leave-one-out indices
    the rate comes back to about alpha.  Normal references get a much lighter fitted tail."""
    rng = np.random.default_rng(11)
    k = 10
    mean, sd = task(rng, k)

    def heavy(models: int) -> np.ndarray:
        scale = rng.normal(np.log(80), 0.3, size=(models, 1))
        return np.exp(scale + mean + rng.standard_t(3, size=(models, k)) * sd)

    fitted, normal, dfs = [], [], []
    for _ in range(40):
        ref = fit_reference(heavy(20))
        dfs.append(ref.test_df)
        plain = replace(ref, test_df=ref.df, test_scale=1.0)
        for n in heavy(15):
            fitted.append(reference_test(n, ref, 0.05).flagged.any())
            normal.append(reference_test(n, plain, 0.05).flagged.any())
    assert np.median(dfs) < 10 and np.mean(normal) > 0.1 and np.mean(fitted) <= 0.07, (
        np.median(dfs), np.mean(normal), np.mean(fitted))
    normal_dfs = [fit_reference(clean_norms(rng, 20, mean, sd)).test_df for _ in range(10)]
    assert np.median(normal_dfs) > 2 * np.median(dfs), (normal_dfs, dfs)


def test_a_trigger_smaller_than_its_label_usually_is_beats_a_natural_easy_class() -> None:
    """The case the per-model gap rule cannot decide: the easy class 0 sits 3.7x below the median in every
    clean model, and a backdoor on label 5 shrinks its trigger to 2.5x below the median.  The gap rule
    (floor 4.5) flags nothing and ranks the easy class first; the reference rule flags label 5 alone."""
    rng = np.random.default_rng(3)
    mean, sd = task(rng, 10)
    mean[5], sd[5] = 0.2, 0.15
    ref = fit_reference(clean_norms(rng, 15, mean, sd))
    model = clean_norms(rng, 1, mean, sd)[0]
    model[5] = np.exp(np.median(np.log(model))) / 2.5
    gap = gap_test(model)
    assert not gap.flagged.any() and int(np.argmax(gap.ratio)) == 0
    test = reference_test(model, ref, 0.05)
    assert test.flagged.tolist() == [i == 5 for i in range(10)] and test.p_value < 1e-3
    assert not reference_test(clean_norms(rng, 1, mean, sd)[0], ref, 0.05).flagged[0]


def test_fit_reference_needs_five_models() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        fit_reference(np.ones((4, 10)))


# --------------------------------------------------------------------------- the command


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def clean_report(tmp_path_factory) -> Path:
    """A real scan report of the bundled clean MNIST CNN (Neural Cleanse and MM-BD)."""
    path = tmp_path_factory.mktemp("ref") / "clean.json"
    assert main(["scan-backdoor", str(SAMPLE_MODELS / "mnist_cnn.onnx"), *SCAN, "--method", "all",
                 "--report", str(path)]) == 0
    return path


def write_references(report: Path, folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` reference reports: the clean scan's per-class statistics jittered by 15 % (log scale),
    each as another model."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    doc = json.loads(report.read_text())
    for i in range(count):
        ref = copy.deepcopy(doc)
        ref["model"]["sha256"] = f"{i + 1:064x}"
        for method, key in STATISTIC.items():
            for c in ref["evidence"][method]["classes"]:
                c[key] *= float(np.exp(rng.normal(0, 0.15)))
        (folder / f"ref{i}.json").write_text(json.dumps(ref))
    return folder


def reference_values(folder: Path, method: str) -> np.ndarray:
    return np.array([[c[STATISTIC[method]] for c in json.loads(f.read_text())["evidence"][method]["classes"]]
                     for f in sorted(folder.glob("*.json"))])


def test_cli_reference_rule_finds_the_badnets_target(clean_report, tmp_path, capsys) -> None:
    """The bundled BadNets MNIST model (target 7) against references built from the clean model's scan:
    every scanner decides by the reference test, Neural Cleanse and MM-BD flag label 7 alone, and the
    report's p-values are the reference tests of its own statistics."""
    refs = write_references(clean_report, tmp_path / "refs", 8)
    out = tmp_path / "bad.json"
    code, err = _run(capsys, "scan-backdoor", str(SAMPLE_MODELS / "mnist_badnets.onnx"), *SCAN, "--method", "all",
                     "--reference", str(refs), "--report", str(out))
    assert code == 0, err
    r = json.loads(out.read_text())
    nc, mm, fe = r["evidence"]["neural-cleanse"], r["evidence"]["mm-bd"], r["evidence"]["freeeagle"]
    assert nc["rule"] == "reference" and nc["reference"]["models"] == 8
    assert mm["null"] == "reference" and mm["reference"]["models"] == 8 and fe["reference"]["models"] == 8
    assert r["verdict"] == "backdoored" and r["suspected_targets"] == [7]
    assert nc["suspected_targets"] == [7] and mm["suspected_targets"] == [7]
    test = reference_test(np.array([c["mask_l1"] for c in nc["classes"]]),
                          fit_reference(reference_values(refs, "neural-cleanse")), 0.05)
    assert [c["reference_p_value"] for c in nc["classes"]] == pytest.approx(test.p_values.tolist())
    assert nc["p_value"] == pytest.approx(test.p_value)
    margins = np.array([c["max_margin"] for c in mm["classes"]])
    test = reference_test(margins, fit_reference(reference_values(refs, "mm-bd"), "high"), 0.05)
    assert mm["p_value"] == pytest.approx(test.p_value) and mm["top_class"] == test.top == 7
    tendencies = np.array([c["tendency"] for c in fe["classes"]])
    test = reference_test(tendencies, fit_reference(reference_values(refs, "freeeagle"), "high"), 0.05)
    assert fe["p_value"] == pytest.approx(test.p_value) and fe["top_class"] == test.top


def _edit(report: Path, out: Path, fn) -> Path:
    doc = json.loads(report.read_text())
    fn(doc)
    out.write_text(json.dumps(doc))
    return out


@pytest.mark.parametrize("case,needle", [
    ("four", "needs at least 5"),
    ("other_images", "other clean images"),
    ("other_steps", "other neural-cleanse settings (steps)"),
    ("not_a_report", "not a scan-backdoor report"),
    ("no_mmbd", "has no mm-bd evidence"),
    ("same_model_twice", "scan the same model"),
    ("model_under_test", "the model under test"),
    ("partial", "has no neural-cleanse mask_l1 for each of the 10 classes"),
    ("missing", "does not exist"),
])
def test_cli_bad_references_exit_2(clean_report, tmp_path, capsys, case, needle) -> None:
    refs = write_references(clean_report, tmp_path / "refs", 4 if case == "four" else 6)
    first = refs / "ref0.json"
    if case == "other_images":
        _edit(first, first, lambda d: d["evidence"]["neural-cleanse"].update(images_sha256="0" * 64))
    elif case == "other_steps":
        _edit(first, first, lambda d: d["evidence"]["neural-cleanse"]["params"].update(steps=1000))
    elif case == "not_a_report":
        first.write_text("[1, 2]")
    elif case == "no_mmbd":
        _edit(first, first, lambda d: d["evidence"].pop("mm-bd"))
    elif case == "same_model_twice":
        _edit(first, refs / "copy.json", lambda d: None)
    elif case == "model_under_test":
        sha = json.loads(clean_report.read_text())["model"]["sha256"]
        _edit(first, first, lambda d: d["model"].update(sha256=sha))
    elif case == "partial":
        _edit(first, first, lambda d: d["evidence"]["neural-cleanse"]["classes"][3].update(optimised=False))
    target = str(tmp_path / "nothing") if case == "missing" else str(refs)
    method = ["--method", "all"] if case == "no_mmbd" else []
    code, err = _run(capsys, "scan-backdoor", str(SAMPLE_MODELS / "mnist_cnn.onnx"), *SCAN, *method,
                     "--reference", target)
    assert code == 2 and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("extra,needle", [
    (["--reference", "x.json", "--nc-rule", "paper"], "--reference tests Neural Cleanse against the references"),
    (["--reference", "x.json", "--min-ratio", "3"], "--min-ratio is Neural Cleanse's gap-rule floor"),
])
def test_cli_reference_flag_combinations_exit_2(capsys, extra, needle) -> None:
    code, err = _run(capsys, "scan-backdoor", str(SAMPLE_MODELS / "mnist_cnn.onnx"), *SCAN, *extra)
    assert code == 2 and needle in err and "Traceback" not in err, err
