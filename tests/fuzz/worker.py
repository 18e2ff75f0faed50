"""A fuzz worker: ``python -m tests.fuzz.worker`` reads one case per line (JSON, :meth:`Case.to_json`)
on stdin, runs it in this process (:func:`~tests.fuzz.harness.run_inprocess`), writes the
:class:`~tests.fuzz.harness.Outcome` to ``<case work>/outcome.json`` and answers ``done`` on stdout.

Its own stdout is the answer channel only: file descriptor 1 is pointed at /dev/null, so nothing a
case prints (the capture in ``run_inprocess`` aside) can garble the protocol.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict


def serve() -> None:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's stdout, now /dev/null

    from .harness import Case, run_inprocess

    for line in sys.stdin:
        if not line.strip():
            continue
        case = Case.from_json(json.loads(line))
        outcome = run_inprocess(case)
        tmp = case.work / "outcome.json.part"
        tmp.write_text(json.dumps(asdict(outcome)))
        os.replace(tmp, case.work / "outcome.json")
        channel.write("done\n")


if __name__ == "__main__":
    serve()
