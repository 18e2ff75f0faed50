"""Run one or several backdoor scanners and combine their verdicts.

The combined verdict is calibrated (``combine="bonferroni"``, the default): every scanner turns its
statistic into a p-value against its own per-model null (Neural Cleanse: the gap test of
:func:`~advaudit.backdoor.mad.gap_test`; MM-BD: the same test on its log margins), and the model is
flagged when ``M * min(p) < alpha`` for M scanners, so the false-alarm rate on clean models stays at
most ``alpha`` (Bonferroni holds whatever the dependence between the scanners).  A scanner that
reports no p-value (the paper rule of Neural Cleanse, a plugin) counts as p = 0 when it flags and
1 when not.  ``combine="any"`` is the former rule: flagged when any scanner flags.  The suspected
targets are those of the scanners that carry the verdict, most significant first.  The per-class
table is the first trigger-reconstruction method's (Neural Cleanse), with each other method's flags
merged in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PluginError, UsageError
from ..models import Model
from ..registry import get_registry
from ..progress import Progress
from .base import BackdoorScanner, ScanResult, adopt_shape, check_model, check_per_class

if TYPE_CHECKING:
    from .units import ScanUnits

KIND = "backdoor-scanner"
DEFAULT_ORDER = ("neural-cleanse", "mm-bd")


COMBINE_RULES = ("bonferroni", "any")


def check_combine(rule: str) -> str:
    """``rule`` if it is a combination rule, else a one-line UsageError."""
    if rule not in COMBINE_RULES:
        raise UsageError(f"unknown combination rule {rule!r}", f"use one of {', '.join(COMBINE_RULES)}")
    return rule


def method_p_value(result: ScanResult) -> float:
    """A scanner's p-value: its own, else 0 when it flags and 1 when not."""
    p = result.evidence.get("p_value")
    if p is None:
        return 0.0 if result.backdoored else 1.0
    return float(p)


@dataclass
class CombinedScan:
    results: list[ScanResult]
    time_s: float = 0.0
    alpha: float = 0.05
    combine: str = "bonferroni"
    verdict: str = field(init=False)
    suspected_targets: list[int] = field(init=False)
    p_value: float | None = field(init=False)

    def __post_init__(self) -> None:
        check_combine(self.combine)
        m = len(self.results)
        ps = [method_p_value(r) for r in self.results]
        if self.combine == "any":
            carrying = [r for r in self.results if r.backdoored]
            self.p_value = None
        else:
            self.p_value = min(1.0, m * min(ps)) if ps else 1.0
            carrying = [r for r, p in sorted(zip(self.results, ps), key=lambda rp: rp[1])
                        if r.backdoored and m * p < self.alpha]
        self.verdict = "backdoored" if carrying else "clean"
        seen: list[int] = []
        for r in carrying:
            seen += [t for t in r.suspected_targets if t not in seen]
        self.suspected_targets = seen

    def describe(self) -> dict[str, Any]:
        """How the verdict was combined, as the report records it."""
        return {
            "rule": self.combine, "alpha": self.alpha, "p_value": self.p_value,
            "p_values": {r.method: method_p_value(r) for r in self.results},
        }

    @property
    def primary(self) -> ScanResult:
        """The result whose per-class table heads the report (one with trigger norms if any)."""
        for r in self.results:
            if r.masks is not None:
                return r
        return self.results[0]

    def classes(self) -> list[dict[str, Any]]:
        rows = [c.to_dict() for c in self.primary.classes]
        for r in self.results:
            if r is self.primary:
                continue
            for row, c in zip(rows, r.classes):
                row["flagged"] = bool(row["flagged"] or c.flagged)
                row[f"flagged_by_{r.method}"] = c.flagged
        if len(self.results) > 1:
            for row, c in zip(rows, self.primary.classes):
                row[f"flagged_by_{self.primary.method}"] = c.flagged
        return rows


def method_names(method: str) -> list[str]:
    """``all`` -> every registered scanner (built-ins first, in DEFAULT_ORDER); else the one name."""
    names = get_registry().names(KIND)
    if method == "all":
        ordered = [n for n in DEFAULT_ORDER if n in names]
        return ordered + sorted(n for n in names if n not in ordered)
    if method not in names:
        raise PluginError(f"unknown backdoor scanner {method!r}", f"available: {', '.join(names + ['all'])}")
    return [method]


def build_scanner(name: str, params: dict[str, Any]) -> BackdoorScanner:
    cls = get_registry().get(KIND, name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise PluginError(f"{name}: {exc}") from None


def scan_model(
    model: Model,
    x: np.ndarray | None,
    y: np.ndarray | None,
    *,
    methods: list[str] | tuple[str, ...] = ("neural-cleanse",),
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    units: ScanUnits | None = None,
    alpha: float = 0.05,
    combine: str = "bonferroni",
) -> CombinedScan:
    """Validate everything first (so bad input fails before any work), then run each method.

    ``units``: a scanner whose result it holds is not run again; each finished scanner is saved
    there, and scanners that can resume (Neural Cleanse) keep their search state there as they go."""
    check_combine(combine)
    params = params or {}
    scanners = [build_scanner(m, params.get(m, {})) for m in methods]
    adopt_shape(model, x)
    k = check_model(model)
    for s in scanners:
        check_per_class(s.name, s.min_per_class, y, k)
    results: list[ScanResult] = []
    for s in scanners:
        result = units.load(s.name) if units is not None else None
        if result is None:
            state = None if units is None else units.search(s.name)
            result = s.scan(model, x, y, seed=seed, progress=progress, state=state)
            if units is not None:
                units.save(result)
        results.append(result)
    return CombinedScan(results, sum(r.time_s for r in results), alpha=alpha, combine=combine)
