"""Pin the command line -> job options mapping without running a job (coverage.py-style CLI tests).

``options_for(monkeypatch, "attack", ["attack", MODEL, "--data", DATA, ...])`` replaces
``advaudit.api.attack`` with a recorder, runs the command line in-process and returns the options
object the command built (the recorder stops the command there).  Commands must call jobs through
the module attribute (``from .. import api`` ... ``api.attack(options, ctx)``).
"""

from __future__ import annotations

from typing import Any, Sequence

import click
import pytest

import advaudit.api as api
from advaudit.cli import cli
from advaudit.cli.common import Output


class JobCalled(Exception):
    """Raised by the recorder: carries the job's name and options."""

    def __init__(self, job: str, options: Any) -> None:
        super().__init__(job)
        self.job = job
        self.options = options


def options_for(monkeypatch: pytest.MonkeyPatch, job: str, argv: Sequence[str]) -> Any:
    """The options ``argv`` passes to ``api.<job>`` (fails if the command calls no job, or another)."""

    def recorder(name: str) -> Any:
        def record(options: Any, *args: Any, **kwargs: Any) -> Any:
            raise JobCalled(name, options)
        return record

    for name in api.__all__:
        if callable(getattr(api, name, None)) and name[0].islower():
            monkeypatch.setattr(api, name, recorder(name))
    try:
        cli.main(args=list(argv), prog_name="advaudit", standalone_mode=False, obj=Output(quiet=True))
    except JobCalled as called:
        assert called.job == job, f"{' '.join(argv)} called api.{called.job}, expected api.{job}"
        return called.options
    except click.exceptions.Exit:
        pass
    raise AssertionError(f"{' '.join(argv)} did not call api.{job}")
