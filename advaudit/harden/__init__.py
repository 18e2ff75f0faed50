"""Adversarial training (``advaudit harden``).

* :mod:`.inner`: inner maximisation (PGD, FGSM with random start, TRADES' KL attack);
* :mod:`.train`: :func:`adversarial_train` on any torch module;
* :mod:`.linear`: the closed-form adversarial logistic regression of the lecture notes;
* :mod:`.api`: :func:`harden` on a loaded :class:`~advaudit.models.Model`;
* :mod:`.export`: export in the input's format, checked against the trained module;
* :mod:`.evaluate`: before/after robust accuracy under the attack suites.
"""

from .api import harden, model_forward
from .export import export_hardened
from .linear import LogisticTwoClass, train_logistic_closed_form
from .train import METHODS, EpochStats, HardenConfig, HardenResult, adversarial_train

__all__ = [
    "METHODS", "EpochStats", "HardenConfig", "HardenResult", "LogisticTwoClass", "adversarial_train",
    "export_hardened", "harden", "model_forward", "train_logistic_closed_form",
]
