"""Run one or several backdoor scanners and combine their verdicts.

The combined verdict is calibrated (``combine="bonferroni"``, the default): every scanner turns its
statistic into a p-value against its own per-model null (Neural Cleanse: the gap test of
:func:`~advaudit.backdoor.mad.gap_test`; MM-BD: the same test on its log margins), and the model is
flagged when ``M * min(p) < alpha`` for M scanners, so the false-alarm rate on clean models stays at
most ``alpha`` (Bonferroni holds whatever the dependence between the scanners).  A scanner that
reports no p-value (the paper rule of Neural Cleanse, a plugin) counts as p = 0 when it flags and
1 when not.  ``combine="fisher"`` also uses the class each scanner points at (its ``top_class``
evidence, else its first suspect): the scanners that point at the same class are pooled with
Fisher's method, and the pools are Bonferroni-corrected by their number ``G`` (model p-value
``G * min_pool p``).  Under the null the pooled p-values are uniform given which scanners agree, so
the false-alarm rate stays at most ``alpha`` when the scanners' p-values are independent; when all
scanners disagree it is the Bonferroni rule.  ``combine="any"`` is the former rule: flagged when
any scanner flags.  The suspected targets are those of the scanners (or pools) that carry the
verdict, most significant first.  The per-class table is the first trigger-reconstruction method's
(Neural Cleanse), with each other method's flags merged in.
"""

from __future__ import annotations

import math
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


COMBINE_RULES = ("bonferroni", "fisher", "any")


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


def fisher_p_value(ps: list[float]) -> float:
    """Fisher's method: P(chi2 with 2n degrees of freedom > -2 sum ln p), in closed form (even degrees)."""
    if min(ps) <= 0.0:
        return 0.0
    half = -sum(math.log(p) for p in ps)  # x / 2
    term, total = 1.0, 1.0
    for k in range(1, len(ps)):
        term *= half / k
        total += term
    return min(1.0, math.exp(-half) * total)


def pointed_class(result: ScanResult) -> int | None:
    """The class a scanner points at, flagged or not: its ``top_class`` evidence, else its first suspect."""
    top = result.evidence.get("top_class")
    if top is None and result.suspected_targets:
        top = result.suspected_targets[0]
    return None if top is None else int(top)


def agreement_pools(results: list[ScanResult]) -> list[tuple[int | None, list[ScanResult], float]]:
    """The scanners grouped by the class they point at (one pool each for those that point at none), with
    each pool's Fisher p-value, most significant first."""
    keyed: dict[tuple[str, int], list[ScanResult]] = {}
    for i, r in enumerate(results):
        top = pointed_class(r)
        keyed.setdefault(("class", top) if top is not None else ("alone", i), []).append(r)
    pools = [(key[1] if key[0] == "class" else None, rs, fisher_p_value([method_p_value(r) for r in rs]))
             for key, rs in keyed.items()]
    return sorted(pools, key=lambda pool: pool[2])


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
        if self.combine == "fisher":
            self._fisher()
            return
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

    def _fisher(self) -> None:
        pools = agreement_pools(self.results)
        g = len(pools)
        self.p_value = min(1.0, g * pools[0][2]) if pools else 1.0
        self.verdict = "backdoored" if self.p_value < self.alpha else "clean"
        seen: list[int] = []
        for top, rs, p in pools:
            if g * p >= self.alpha:
                break
            pointed = [top] if top is not None else [t for r in rs for t in r.suspected_targets]
            seen += [t for t in pointed if t not in seen]
        self.suspected_targets = seen

    def describe(self) -> dict[str, Any]:
        """How the verdict was combined, as the report records it."""
        out: dict[str, Any] = {
            "rule": self.combine, "alpha": self.alpha, "p_value": self.p_value,
            "p_values": {r.method: method_p_value(r) for r in self.results},
        }
        if self.combine == "fisher":
            out["pools"] = [{"class": top, "methods": [r.method for r in rs], "p_value": p}
                            for top, rs, p in agreement_pools(self.results)]
        return out

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


def needs_clean_data(method: str) -> bool:
    """Whether ``method`` (a scanner name or ``all``) needs clean labelled images: some scanner it runs
    asks for images of every class (``min_per_class > 0``).  An unknown name counts as needing them."""
    try:
        names = method_names(method)
    except PluginError:
        return True
    registry = get_registry()
    return any(registry.get(KIND, m).min_per_class > 0 for m in names)


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
