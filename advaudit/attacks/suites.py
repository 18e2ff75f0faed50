"""Attack suites and the ``NAME[:key=value,...]`` syntax of ``--attack``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..params import parse_spec


@dataclass(frozen=True)
class AttackChoice:
    """An attack name with its hyperparameters, as written on the command line."""

    name: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())


@dataclass(frozen=True)
class Suite:
    """A list of attacks; with ``cascade`` each attack runs only on the samples still robust."""

    name: str
    attacks: tuple[AttackChoice, ...]
    cascade: bool
    description: str


SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick",
        (AttackChoice("fgsm"), AttackChoice("pgd", {"steps": 20})),
        cascade=False,
        description="FGSM and PGD-20: a fast first look.",
    ),
    "standard": Suite(
        "standard",
        (AttackChoice("apgd-ce"), AttackChoice("apgd-dlr"), AttackChoice("square")),
        cascade=True,
        description="AutoAttack's cascade: APGD-CE, then targeted APGD-DLR, then Square, each on the samples still "
                    "robust.",
    ),
    "paper": Suite(
        "paper",
        (
            AttackChoice("fgsm"),
            AttackChoice("pgd"),
            AttackChoice("cw-l2"),
            AttackChoice("deepfool"),
            AttackChoice("jsma"),
            AttackChoice("substitute"),
        ),
        cascade=False,
        description="The papers' attack set: FGSM, PGD, C&W L2, DeepFool, JSMA, substitute black-box.",
    ),
}


def parse_attack(text: str) -> AttackChoice:
    """``pgd:steps=20,restarts=2`` -> AttackChoice("pgd", {"steps": "20", "restarts": "2"})."""
    name, params = parse_spec(text, "attack")
    return AttackChoice(name, params)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}", f"choose one of {', '.join(SUITES)}")
    return SUITES[name]


def resolve_choices(suite: str | None, attacks: list[str] | tuple[str, ...] | None) -> tuple[list[AttackChoice], bool]:
    """The attacks to run and whether they cascade: a named suite, or ``NAME[:k=v,...]`` texts
    (default: the standard suite)."""
    if suite and attacks:
        raise UsageError("give a suite or a list of attacks, not both")
    if attacks:
        return [parse_attack(a) for a in attacks], False
    s = get_suite(suite or "standard")
    return list(s.attacks), s.cascade
