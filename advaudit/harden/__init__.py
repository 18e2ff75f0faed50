"""Adversarial training (``advaudit harden``).

* :mod:`.inner`: inner maximisation (PGD, FGSM with random start, TRADES' KL attack);
* :mod:`.train`: :func:`adversarial_train` on any torch module;
* :mod:`.api`: :func:`harden` on a loaded :class:`~advaudit.models.Model`;
* :mod:`.export`: export in the input's format, checked against the trained module;
* :mod:`.evaluate`: before/after robust accuracy under the attack suites.

The closed-form adversarial logistic regression that the tests compare PGD training with is test-only
code: ``advaudit_testing.linear`` in ``plugins/advaudit-testing``.
"""

from .api import harden, model_forward
from .export import export_hardened
from .train import METHODS, EpochStats, HardenConfig, HardenResult, adversarial_train

__all__ = [
    "METHODS", "EpochStats", "HardenConfig", "HardenResult", "adversarial_train", "export_hardened", "harden",
    "model_forward",
]
