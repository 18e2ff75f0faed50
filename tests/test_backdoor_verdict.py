"""The calibrated backdoor verdict: Neural Cleanse's gap test, label selection, the Bonferroni
combination of scanners (pure functions and small fakes; no model is trained here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advaudit.backdoor.base import ClassEvidence, ScanResult
from advaudit.backdoor.labels import LabelPlan, parse_labels, plan_labels
from advaudit.backdoor.mad import gap_test, mad_outliers
from advaudit.backdoor.nc_schedule import NCConfig, Reconstruction
from advaudit.backdoor.scan import CombinedScan
from advaudit.errors import UsageError


def test_gap_test_false_alarm_rate_is_alpha_on_clean_like_norms() -> None:
    """Log-normal norms with no outlier (10 and 43 labels): flagged in about alpha of the models,
    where the paper's rule (MAD index > 2 on raw norms) flags several times as many."""
    rng = np.random.default_rng(7)
    for k in (10, 43):
        sets = np.exp(rng.normal(np.log(80), 0.25, size=(1500, k)))
        gap = np.mean([gap_test(n, min_ratio=1.0).flagged.any() for n in sets])
        paper = np.mean([mad_outliers(n).flagged.any() for n in sets])
        assert 0.02 <= gap <= 0.08, (k, gap)
        assert paper > max(0.12, 2 * gap), (k, paper, gap)


def test_gap_test_needs_a_real_gap() -> None:
    """The issue's clean model: norms 76-139 around a median of 95.8, two labels 12-20 % below it
    (paper anomaly indices 5.1 and 3.1): not flagged.  A trigger 5x smaller than the rest is."""
    clean = np.array([76.7, 84.0, 95.0, 95.5, 95.8, 95.8, 96.0, 96.5, 110.0, 139.0])
    assert mad_outliers(clean).flagged.any()  # the paper rule's false alarm
    result = gap_test(clean)
    assert not result.flagged.any() and result.p_value == 1.0  # no label reaches the ratio floor
    backdoored = clean.copy()
    backdoored[3] = 95.5 / 5
    result = gap_test(backdoored)
    assert result.flagged.tolist() == [i == 3 for i in range(10)]
    assert result.p_value < 0.01 and result.ratio[3] > 4.5


def test_gap_test_ratio_floor_and_alpha() -> None:
    norms = np.array([10.0, 60, 61, 62, 63, 64, 65, 66, 67, 68])
    assert gap_test(norms).flagged[0]
    assert not gap_test(norms, min_ratio=7.0).flagged.any()  # 10 is only 6.4x below the median
    assert not gap_test(norms, alpha=1e-6).flagged.any()  # p cannot go below 1 / (simulations + 1)


def test_gap_test_references_set_the_null_location() -> None:
    """Candidates chosen for being small are tested against unbiased references."""
    refs = np.array([50.0, 55, 60, 62, 65, 70, 75, 80])
    cands = np.array([8.0, 45.0])
    is_ref = np.arange(10) >= 2
    result = gap_test(np.concatenate([cands, refs]), reference=is_ref, labels=1000)
    assert result.flagged[0] and not result.flagged[1:].any()
    assert result.median == pytest.approx(np.sqrt(62 * 65))  # the median of the log norms


def test_gap_test_of_one_label_of_interest_against_more_references() -> None:
    """``--target-labels 7`` on a 10-class model optimises label 7 and 9 references: the null must
    cover the 10 norms given (it once simulated 1 label with 9 references and returned NaN p-values)."""
    norms = np.array([60.0, 61, 62, 63, 64, 65, 66, 10.0, 67, 68])
    with np.errstate(all="raise"):
        result = gap_test(norms, reference=np.arange(10) != 7, labels=1)
    assert np.isfinite(result.p_values).all()
    assert result.flagged.tolist() == [i == 7 for i in range(10)]
    assert result.p_values[7] == gap_test(norms, reference=np.arange(10) != 7).p_values[7]


def _result(method: str, p: float | None, flagged: bool, targets: list[int]) -> ScanResult:
    return ScanResult(method, "backdoored" if flagged else "clean", targets,
                      [ClassEvidence(t, t in targets) for t in range(3)], {}, evidence={"p_value": p})


def test_combined_verdict_is_bonferroni_over_scanners() -> None:
    nc, mm = _result("neural-cleanse", 0.03, True, [1]), _result("mm-bd", 0.5, False, [])
    scan = CombinedScan([nc, mm])
    assert scan.verdict == "clean" and scan.p_value == pytest.approx(0.06)  # 2 x 0.03 > 0.05
    assert CombinedScan([nc, mm], combine="any").verdict == "backdoored"  # the former rule
    assert CombinedScan([nc]).verdict == "backdoored"  # one scanner: its own test at alpha
    strong = _result("mm-bd", 0.001, True, [2])
    scan = CombinedScan([nc, strong])
    assert scan.verdict == "backdoored" and scan.suspected_targets == [2]  # only the scanner carrying it
    assert scan.describe()["p_values"] == {"neural-cleanse": 0.03, "mm-bd": 0.001}
    plugin = _result("plugin", None, True, [0])  # no p-value: counts by its verdict
    assert CombinedScan([plugin, mm]).suspected_targets == [0]
    with pytest.raises(UsageError):
        CombinedScan([nc], combine="median")


def _pointing(method: str, p: float, top: int) -> ScanResult:
    result = _result(method, p, p < 0.05, [top] if p < 0.05 else [])
    result.evidence["top_class"] = top
    return result


def test_fisher_pools_scanners_that_agree_on_a_class() -> None:
    a, b = _pointing("neural-cleanse", 0.03, 2), _pointing("mm-bd", 0.04, 2)
    assert CombinedScan([a, b]).verdict == "clean"  # Bonferroni: 2 x 0.03
    scan = CombinedScan([a, b], combine="fisher")
    # one pool: chi2(4) tail at -2 ln(0.03 x 0.04) = exp(-h) (1 + h), h = -ln(0.0012)
    h = -math.log(0.03 * 0.04)
    assert scan.p_value == pytest.approx(math.exp(-h) * (1 + h))
    assert scan.verdict == "backdoored" and scan.suspected_targets == [2]
    assert scan.describe()["pools"] == [{"class": 2, "methods": ["neural-cleanse", "mm-bd"],
                                         "p_value": scan.p_value}]
    apart = CombinedScan([a, _pointing("mm-bd", 0.04, 1)], combine="fisher")  # disagreeing: Bonferroni over 2 pools
    assert apart.verdict == "clean" and apart.p_value == pytest.approx(0.06)
    weak = CombinedScan([_pointing("a", 0.5, 1), _pointing("b", 0.6, 1), _pointing("c", 0.001, 0)], combine="fisher")
    assert weak.verdict == "backdoored" and weak.suspected_targets == [0] and weak.p_value == pytest.approx(0.002)
    plugin = _result("plugin", None, True, [0])  # no p-value and no top class: p 0, pointing at its suspect
    assert CombinedScan([plugin, b], combine="fisher").suspected_targets == [0]


def test_fisher_rule_holds_its_false_alarm_rate_under_the_null() -> None:
    """Independent uniform p-values, tops drawn from 4 classes (scanners agree often): rate <= alpha."""
    rng = np.random.default_rng(0)
    draws = 4000
    ps, tops = rng.uniform(size=(draws, 3)), rng.integers(0, 4, size=(draws, 3))
    flagged = sum(CombinedScan([_pointing(m, float(p), int(t)) for m, p, t in zip("abc", prow, trow)],
                               combine="fisher").verdict == "backdoored" for prow, trow in zip(ps, tops))
    assert flagged / draws < 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)


def _fake_search(norms: np.ndarray) -> tuple[list[np.ndarray], object]:
    calls: list[np.ndarray] = []

    def search(targets: np.ndarray, config: NCConfig) -> Reconstruction:
        calls.append(np.asarray(targets))
        k = len(targets)
        return Reconstruction(np.asarray(targets), np.zeros((k, 1, 2, 2)), np.zeros((k, 1, 2, 2)),
                              norms[targets], np.ones(k, bool), np.full(k, config.steps), np.zeros(k))

    return calls, search


@pytest.mark.parametrize("k", [10, 43, 64])
def test_label_plan_optimises_every_label_up_to_64(k: int) -> None:
    # 43 (GTSRB) included: a 40-step warm-up cannot rank a concealed trigger that is no smaller than a natural one
    calls, search = _fake_search(np.arange(float(k)) + 1)
    plan = plan_labels(k, search, NCConfig(), torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    assert calls == [] and plan.optimised.tolist() == plan.references.tolist() == list(range(k))


def test_label_plan_warms_up_all_labels_then_keeps_candidates_and_random_references() -> None:
    norms = np.full(200, 80.0) + np.arange(200) % 17
    norms[123] = 5.0  # the backdoor target reaches the success threshold with the smallest mask
    calls, search = _fake_search(norms)
    plan = plan_labels(200, search, NCConfig(), torch.Generator().manual_seed(0), chunk=64)  # type: ignore[arg-type]
    assert [len(c) for c in calls] == [64, 64, 64, 8]  # the warm-up, in chunks
    assert 123 in plan.optimised and 123 not in plan.references
    assert len(plan.optimised) == 8 + 16 and len(plan.references) == 16 and len(plan.tested) == 200
    again = plan_labels(200, _fake_search(norms)[1], NCConfig(), torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    assert again.references.tolist() == plan.references.tolist()  # seeded


def test_label_plan_labels_of_interest() -> None:
    calls, search = _fake_search(np.arange(50.0) + 1)
    labels = parse_labels([7, 3, 7], 50)
    assert labels is not None and labels.tolist() == [3, 7]
    plan: LabelPlan = plan_labels(50, search, NCConfig(), torch.Generator().manual_seed(1),  # type: ignore[arg-type]
                                  labels=labels)
    assert calls == [] and plan.tested.tolist() == [3, 7]
    assert {3, 7} <= set(plan.optimised.tolist()) and not {3, 7} & set(plan.references.tolist())
    with pytest.raises(UsageError, match="not a class"):
        parse_labels([50], 50)
