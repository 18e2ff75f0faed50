"""advaudit's Python API: one function per command, each taking a frozen options dataclass and
returning a typed result with ``.metrics()`` and ``.to_report()`` (see :mod:`advaudit.jobs`).

The command line calls these functions through this module (``api.attack(options, ctx)``), so a
test can replace one and check which options a command line builds.
"""

from __future__ import annotations

from .jobs.base import DataOptions, JobContext, JobResult, ModelOptions, Progress

# -- attack, defend, harden, purify ---------------------------------------------------------------
from .jobs.attack import AttackOptions, AttackResult, attack
from .jobs.defend import DefendOptions, DefendResult, defend
from .jobs.harden import HardenOptions, HardenResult, harden
from .jobs.purify import PurifyOptions, PurifyResult, TrainVqvaeOptions, VqvaeResult, purify, train_vqvae

# -- scan-backdoor, audit ---------------------------------------------------------------------------

# -- detect ------------------------------------------------------------------------------------------

__all__ = [
    "DataOptions", "JobContext", "JobResult", "ModelOptions", "Progress",
    # -- attack, defend, harden, purify
    "AttackOptions", "AttackResult", "attack", "DefendOptions", "DefendResult", "defend",
    "HardenOptions", "HardenResult", "harden",
    "PurifyOptions", "PurifyResult", "purify", "TrainVqvaeOptions", "VqvaeResult", "train_vqvae",

    # -- scan-backdoor, audit

    # -- detect

]
