"""Scanner statistics tested against clean reference models of the same task.

The per-model tests (Neural Cleanse's :func:`~advaudit.backdoor.mad.gap_test` and the paper's MAD
rule, MM-BD's null over the other classes) compare a class with the *other classes of the same
model*.  Natural classes defeat them: an airplane in CIFAR-10 or a speed-limit sign in GTSRB is easy
to reach in every model, so its trigger is small (and its reachable margin large) in every clean
model, and a real backdoor on a harder class may look no more extreme than that (Neural Cleanse's
ratio floor exists because of this).  Given the scans of N clean models of the same task (same
clean images and settings), this test asks instead whether a class's statistic is more extreme
*than that class's statistic usually is*:

* a scanner declares a per-class statistic and which side is suspicious (Neural Cleanse: the mask
  L1 norm, low; MM-BD: the maximum margin, high); a model's per-class value is its log relative to
  the model's median class, ``r_k = median_j(log s_j) - log s_k`` (low side) or its negative (high
  side), which removes the model's overall scale; large ``r_k`` = suspicious;
* the references give each class's mean ``m_k`` and sample variance ``s_k^2`` (N - 1 degrees of
  freedom).  With N of 10-20 one variance per class is noisy and a single lucky small one would
  raise false alarms, while one pooled variance ignores that easy classes vary more.  The variances
  are therefore moderated as in limma (Smyth 2004, "Linear models and empirical Bayes methods for
  assessing differential expression"): ``s_k^2`` is taken as ``s0^2 * F(d, d0)``, ``d0`` and
  ``s0^2`` are fitted from all classes' variances by the moments of ``log s_k^2`` (limma's
  ``fitFDist``), and each class's posterior variance is ``(d0 s0^2 + d s_k^2) / (d0 + d)`` with
  ``d0 + d`` degrees of freedom (``d0`` infinite, i.e. pooling, when the variances are no more
  spread than chance makes them);
* a class's index is the predictive t statistic ``(r_k - m_k) / (s~_k sqrt(1 + 1/N))`` and its
  p-value ``K * P(t > index)`` (Bonferroni over the K classes, valid whatever their dependence).

Under the null (the scanned model is one more clean model of the task, and each class's log
statistic is normal across models) a scanner flags the model with probability at most ``alpha``.
No ratio floor is needed: the natural classes are what the references measure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special, stats

MIN_REFERENCES = 5
"""Fewer clean reference models give too few degrees of freedom for a per-label spread."""


SIDES = ("low", "high")


@dataclass(frozen=True)
class ClassReference:
    """The clean references' per-class distribution of a statistic (:func:`fit_reference`)."""

    mean: np.ndarray  # (K,) mean relative log statistic of each class
    variance: np.ndarray  # (K,) moderated variance of each class
    df: float  # degrees of freedom of the moderated variances (inf: pooled)
    prior_df: float  # d0 of the fitted prior (inf: the classes' variances are no more spread than chance)
    models: int  # N
    suspicious: str = "low"  # the side of the statistic a backdoor pushes its target to
    test_df: float = math.inf  # the test's degrees of freedom: min(df, the references' tail df)
    test_scale: float = 1.0  # the index is divided by this (>= 1; the references' tail scale)

    def describe(self) -> dict[str, object]:
        """The reference as the report records it (no infinities in JSON: None)."""
        def finite(v: float) -> float | None:
            return None if math.isinf(v) else round(v, 3)

        return {"models": self.models, "prior_df": finite(self.prior_df), "df": finite(self.df),
                "test_df": finite(self.test_df), "test_scale": round(self.test_scale, 3)}


@dataclass(frozen=True)
class ReferenceResult:
    index: np.ndarray  # (K,) predictive t of each class's relative log statistic against its references
    p_values: np.ndarray  # (K,) Bonferroni-corrected over the K classes
    flagged: np.ndarray  # (K,) p < alpha

    @property
    def p_value(self) -> float:
        return float(self.p_values.min())

    @property
    def top(self) -> int:
        """The most suspicious class."""
        return int(np.argmax(self.index))


def relative_logs(values: np.ndarray, suspicious: str = "low") -> np.ndarray:
    """Each class's log statistic relative to the model's median class along the last axis, signed so
    that the suspicious side is positive: ``median(log s) - log s`` for ``low`` (Neural Cleanse: how
    many times smaller a label's trigger is than the median one), ``log s - median(log s)`` for
    ``high``.  Values at or below 0 count as 1e-12 (the least suspicious on the high side)."""
    if suspicious not in SIDES:
        raise ValueError(f"suspicious must be low or high, got {suspicious!r}")
    logs = np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-12))
    r = np.median(logs, axis=-1, keepdims=True) - logs
    return r if suspicious == "low" else -r


def _trigamma_inverse(x: float) -> float:
    """The y with trigamma(y) = x (limma's Newton iteration)."""
    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_prior(variances: np.ndarray, df: float) -> tuple[float, float]:
    """limma's ``fitFDist``: ``(d0, s0^2)`` of the scaled-F prior of sample variances with ``df``
    degrees of freedom, by the mean and variance of their logs.  ``d0`` is inf when the logs are no
    more spread than chi-square sampling alone explains."""
    z = np.log(np.maximum(np.asarray(variances, dtype=np.float64), 1e-300))
    e = z - special.digamma(df / 2) + math.log(df / 2)
    excess = float(e.var(ddof=1)) - float(special.polygamma(1, df / 2))
    if excess <= 0:
        return math.inf, float(math.exp(e.mean()))
    d0 = 2 * _trigamma_inverse(excess)
    return d0, float(math.exp(e.mean() + special.digamma(d0 / 2) - math.log(d0 / 2)))


def _moderated(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-class mean, moderated variance, its degrees of freedom and the prior's ``d0`` of the
    relative logs ``r`` (N, K)."""
    mean, var, d = r.mean(axis=0), r.var(axis=0, ddof=1), float(len(r) - 1)
    d0, s0 = fit_prior(var, d)
    if math.isinf(d0):
        return mean, np.full_like(var, s0), math.inf, d0
    return mean, (d0 * s0 + d * var) / (d0 + d), d0 + d, d0


def _predictive(r: np.ndarray, mean: np.ndarray, variance: np.ndarray, models: int) -> np.ndarray:
    return (r - mean) / np.sqrt(np.maximum(variance, 1e-24) * (1 + 1 / models))


def fit_tail(r: np.ndarray) -> tuple[float, float]:
    """``(df, scale)`` of a Student t fitted (maximum likelihood, location 0) to the references'
    leave-one-out predictive indices: each reference model's classes scored against the other N - 1.
    Under normality they follow the predictive t and the fit gives a large ``df`` and a scale near 1;
    heavy tails across models (a clean model whose class lies 5 predictive SDs out) give a small ``df``."""
    z = []
    for i in range(len(r)):
        mean, var, _, _ = _moderated(np.delete(r, i, axis=0))
        z.append(_predictive(r[i], mean, var, len(r) - 1))
    df, _, scale = stats.t.fit(np.concatenate(z), floc=0)
    return float(df), float(scale)


def fit_reference(values: np.ndarray, suspicious: str = "low") -> ClassReference:
    """The reference of N clean models' per-class statistics ``values`` (N, K): moderated per-class
    variances, and the tail checked against the references themselves (:func:`fit_tail`): the test
    uses ``min(df, tail df)`` degrees of freedom and divides the index by ``max(1, tail scale)``, so
    references with heavier tails than the normal model make it more conservative, never less."""
    n_models = np.asarray(values).shape[0]
    if np.ndim(values) != 2 or n_models < MIN_REFERENCES:
        raise ValueError(f"a reference needs the statistics of at least {MIN_REFERENCES} models, as an (N, K) array")
    r = relative_logs(values, suspicious)
    mean, var, df, d0 = _moderated(r)
    tail_df, tail_scale = fit_tail(r)
    return ClassReference(mean, var, df, d0, n_models, suspicious, min(df, tail_df), max(1.0, tail_scale))


def scanner_reference(name: str, values: Sequence[Sequence[float]] | None, suspicious: str) -> ClassReference | None:
    """A scanner's ``reference=`` argument fitted (None stays None); too few models is a UsageError."""
    from ..errors import UsageError

    if values is None:
        return None
    try:
        return fit_reference(np.asarray(values, dtype=np.float64), suspicious)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}", "give more clean reference scans with --reference") from None


def check_classes(name: str, reference: ClassReference, classes: int) -> None:
    """A reference of another class count than the model's is a UsageError."""
    from ..errors import UsageError

    if classes != reference.mean.size:
        raise UsageError(f"{name}: the reference scans have {reference.mean.size} classes, the model {classes}",
                         "give scans of clean models of the same task")


def scanner_test(name: str, values: np.ndarray, reference: ClassReference, alpha: float) -> ReferenceResult:
    """:func:`reference_test` for a scanner (:func:`check_classes` first)."""
    check_classes(name, reference, np.asarray(values).size)
    return reference_test(values, reference, alpha)


def reference_test(values: np.ndarray, reference: ClassReference, alpha: float) -> ReferenceResult:
    """Each class's statistic against the same class in the references (see the module docstring)."""
    r = relative_logs(values, reference.suspicious)
    if r.shape != reference.mean.shape:
        raise ValueError(f"the scan has {r.size} classes, the reference {reference.mean.size}")
    index = _predictive(r, reference.mean, reference.variance, reference.models) / reference.test_scale
    df = reference.test_df
    tail = stats.norm.sf(index) if math.isinf(df) else stats.t.sf(index, df)
    p = np.minimum(1.0, r.size * tail)
    return ReferenceResult(index, p, p < alpha)


def images_digest(x: np.ndarray) -> str:
    """sha256 of the clean images a scan searched on (canonical float32), so that a reference scan can
    be checked to have used the same ones."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


@dataclass(frozen=True)
class ReferenceNeeds:
    """What a scanner reads from a reference report: the per-class field of its evidence, the settings
    that must match the scan's (they shape the statistic), and whether the clean images must too."""

    key: str
    settings: dict[str, Any]
    same_images: bool


@dataclass(frozen=True)
class ReferenceScans:
    """The per-class statistics of clean reference models read from their scan reports
    (:func:`read_reference_scans`): for each scanner, one row of K values per model."""

    values: dict[str, tuple[tuple[float, ...], ...]]
    files: tuple[str, ...]


def read_reference_scans(
    paths: Sequence[str], needs: dict[str, ReferenceNeeds], *, classes: int, images_sha256: str | None,
    model_sha256: str | None,
) -> ReferenceScans:
    """The statistics that each scanner in ``needs`` reads from the scan reports in ``paths`` (files, or
    folders whose ``*.json`` are read), checked to be usable as references for a scan of a
    ``classes``-class model on the images whose digest is ``images_sha256``: each report has every
    scanner's evidence with a value for every class, made with the same settings (and images, where
    the scanner reads them); each reference model once, and none the scanned model."""
    from ..errors import DataError

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.json") if f.is_file())
            if not found:
                raise DataError(f"--reference {p} holds no scan reports (*.json)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"--reference {p} does not exist", "give scan reports of clean reference models")
    values: dict[str, list[tuple[float, ...]]] = {m: [] for m in needs}
    seen: dict[str, Path] = {}
    for f in dict.fromkeys(f.resolve() for f in files):
        doc = read_scan_report(f)
        sha = str((doc.get("model") or {}).get("sha256"))
        if model_sha256 is not None and sha == model_sha256:
            raise DataError(f"reference {f} is a scan of the model under test",
                            "references are scans of other, clean models of the same task")
        if sha in seen:
            raise DataError(f"references {seen[sha]} and {f} scan the same model", "give each reference model once")
        seen[sha] = f
        for method, need in needs.items():
            values[method].append(_class_values(f, doc, method, need, classes, images_sha256))
    if len(seen) < MIN_REFERENCES:
        raise DataError(f"--reference gives {len(seen)} scan report(s); the test needs at least {MIN_REFERENCES}",
                        "scan more clean reference models (10-20 is typical)")
    return ReferenceScans({m: tuple(v) for m, v in values.items()}, tuple(str(f) for f in seen.values()))


def read_scan_report(path: str | Path, role: str = "reference", *, evidence: bool = True) -> dict[str, Any]:
    """A scan-backdoor report, named ``role`` in its one-line errors; ``evidence``: it must also hold
    the scanners' evidence (the reference tests read it; ``repair --scan`` reads only the verdict)."""
    from ..errors import DataError
    from ..safeio import parse_json, read_text

    text = read_text(path, role, missing=(f"{role} {path} does not exist", "give scan reports written by --report"))
    try:
        doc = parse_json(text, f"{role} {path}")
    except json.JSONDecodeError as exc:
        raise DataError(f"cannot read {role} {path}: {exc}", "give scan reports written by --report") from None
    if not isinstance(doc, dict) or doc.get("kind") != "scan-backdoor" or (
            evidence and not isinstance(doc.get("evidence"), dict)):
        raise DataError(f"{role} {path} is not a scan-backdoor report",
                        "make one with: advaudit scan-backdoor MODEL --data CLEAN --method all --report FILE")
    return doc


def _class_values(path: Path, doc: dict[str, Any], method: str, need: ReferenceNeeds, classes: int,
                  images_sha256: str | None) -> tuple[float, ...]:
    """One scanner's per-class statistic in a reference report, checked (see :func:`read_reference_scans`)."""
    from ..errors import DataError

    ev = doc["evidence"].get(method)
    if not isinstance(ev, dict):
        raise DataError(f"reference {path} has no {method} evidence",
                        f"scan the references with the same --method (it must run {method})")
    if need.same_images and ev.get("images_sha256") != images_sha256:
        raise DataError(f"reference {path} was scanned on other clean images",
                        "scan the references and the model with the same --data, --n, --offset and --seed")
    differ = [k for k in need.settings if (ev.get("params") or {}).get(k) != need.settings[k]]
    if differ:
        raise DataError(f"reference {path} used other {method} settings ({', '.join(differ)})",
                        "scan the references with the same --steps and --batch-size")
    row = ev.get("classes") or []
    got = [c.get(need.key) if isinstance(c, dict) and c.get("optimised", True) else None for c in row]
    good = [float(v) for v in got if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(got) != classes or len(good) != classes:
        raise DataError(f"reference {path} has no {method} {need.key} for each of the {classes} classes",
                        "scan each reference with every class searched (up to 64 classes a scan does; above, "
                        "list every label in --target-labels)")
    return tuple(good)
