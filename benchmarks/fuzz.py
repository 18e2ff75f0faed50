"""The long fuzz run of issue 18: random cases across every entry point until the time is up.

    python benchmarks/fuzz.py --minutes 30 [--seed 0] [--out fuzz-out] [--timeout 90] [--entry attack]...

The cases are those of ``tests/test_fuzz.py`` (``tests/fuzz``: hostile models, data, configurations,
calibrations, reports and option values, byte-level mutations of ``sample_models/``), drawn at random
with a seeded generator, and checked against the same contract (``tests.fuzz.harness.check``): the exit
code (2 for invalid input, 0 for valid input, 1 only where a gate was asked for, never 3), one
``advaudit: error:`` line for exit 2, no traceback, no file left in the output folder but those a
successful run writes (a sentinel at the output path unchanged by a failing run), inputs untouched, no
payload run, and an exit within ``--timeout`` seconds (hang detection).

Cases run in a long-lived worker process (``tests/fuzz/worker.py``: in-process speed, and a case that
hangs is killed with its worker); cases marked hang-prone (device files, FIFOs as inputs) run as
``python -m advaudit -q ...`` subprocesses.  A failing case keeps its folder under ``OUT/failures/``
(the generated inputs, ``problems.txt`` with the violations, the command line and the output) and a
``repro.sh`` that regenerates and runs the same case: ``--seed S --replay ENTRY:I``.  Prints per entry point
the cases tried and the failures by kind, then a total; exits 1 if any case failed.  Run it with
``nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz import ENTRY_POINTS, Seeds, Worker, describe, run_case  # noqa: E402
from tests.fuzz.harness import Case, Outcome  # noqa: E402

CATEGORIES = ("hang", "traceback", "internal", "exit-code", "stderr", "files", "payload")


def categorize(outcome: Outcome, problems: list[str]) -> set[str]:
    """The failure kinds of one case (a case can fail several ways at once)."""
    found = set()
    for p in problems:
        if p.startswith("hang") or outcome.timed_out:
            found.add("hang")
        elif p.startswith("internal error"):
            found.add("internal")
        elif p.startswith("exit "):
            found.add("exit-code")
        elif p.startswith("a traceback"):
            found.add("traceback")
        elif "exactly one" in p:
            found.add("stderr")
        elif p.startswith("a payload"):
            found.add("payload")
        else:
            found.add("files")
    return found


def save_failure(case: Case, outcome: Outcome, problems: list[str], folder: Path) -> Path:
    """Keep the case's folder (its inputs, and its outputs as the failed run left them) with problems.txt."""
    dst = folder / case.work.name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(
        case.work,
        dst,
        symlinks=True,
        ignore_dangling_symlinks=True,
        ignore=lambda d, names: [n for n in names if (Path(d) / n).is_fifo()],
    )
    (dst / "problems.txt").write_text(
        describe(case, outcome, problems)
        + "\n\nstdout:\n"
        + outcome.stdout[-4000:]
        + "\n\nstderr:\n"
        + outcome.stderr[-8000:]
    )
    return dst


def build(entry: str, seed: int, i: int, seeds: Seeds, cases_dir: Path) -> Case:
    """Case ``i`` of the run with ``seed``: the same inputs and command line every time."""
    return ENTRY_POINTS[entry](random.Random(f"{seed}:{i}"), seeds, cases_dir / f"{entry}-{i:06d}")


def replay(items: list[str], seed: int, timeout: float, seeds: Seeds, cases_dir: Path) -> int:
    """Run the ``--replay ENTRY:I`` cases of ``seed`` again; 1 if any still fails."""
    worker = Worker()
    failed = 0
    try:
        for item in items:
            entry, _, index = item.partition(":")
            case = build(entry, seed, int(index), seeds, cases_dir)
            outcome, problems = run_case(case, "subprocess" if case.hang_prone else "worker", timeout, worker)
            failed += bool(problems)
            shown = describe(case, outcome, problems) if problems else f"{item} exit {outcome.code}: {case.kind[:100]}"
            print(f"{'FAIL' if problems else 'ok  '} {shown}", flush=True)
    finally:
        worker.close()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="How long to run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the case sequence (same seed, same cases).")
    parser.add_argument("--out", type=Path, help="Folder for seeds, cases and failures (default: a temporary one).")
    parser.add_argument("--timeout", type=float, default=90.0, help="Seconds a case may run before it is a hang.")
    parser.add_argument("--entry", action="append", choices=sorted(ENTRY_POINTS), help="Only these entry points.")
    parser.add_argument("--max-cases", type=int, help="Stop after this many cases.")
    parser.add_argument(
        "--replay",
        action="append",
        metavar="ENTRY:I",
        help="Only run case I of ENTRY of this --seed again (repeatable).",
    )
    args = parser.parse_args(argv)

    root = args.out or Path(tempfile.mkdtemp(prefix="advaudit-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    seeds = Seeds(root / "seeds")
    print(f"advaudit fuzz: seed {args.seed}, {args.minutes:g} min, folder {root}; building seed files ...", flush=True)
    seeds.build_all()
    cases_dir, failures_dir = root / "cases", root / "failures"
    shutil.rmtree(cases_dir, ignore_errors=True)
    cases_dir.mkdir()
    failures_dir.mkdir(exist_ok=True)

    entries = args.entry or sorted(ENTRY_POINTS)
    if args.replay:
        return replay(args.replay, args.seed, args.timeout, seeds, cases_dir)
    pick = random.Random(args.seed)
    tried: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    modes: Counter[str] = Counter()
    generator_errors = 0
    worker = Worker()
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    last_report = start
    i = 0
    try:
        while time.monotonic() < deadline and (args.max_cases is None or i < args.max_cases):
            entry = pick.choice(entries)
            work = cases_dir / f"{entry}-{i:06d}"
            try:
                case = build(entry, args.seed, i, seeds, cases_dir)
            except Exception:  # a bug in the fuzzer's own generators: say so, never count it against advaudit
                generator_errors += 1
                print(f"generator error in {entry} case {i}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                shutil.rmtree(work, ignore_errors=True)
                i += 1
                continue
            mode = "subprocess" if case.hang_prone else "worker"
            outcome, problems = run_case(case, mode, timeout=args.timeout, worker=worker)
            modes[mode] += 1
            tried[entry] += 1
            if problems:
                failed[entry] += 1
                for k in categorize(outcome, problems):
                    kinds[entry][k] += 1
                kept = save_failure(case, outcome, problems, failures_dir)
                again = f"python benchmarks/fuzz.py --seed {args.seed} --out {root} --minutes 0 --replay {entry}:{i}"
                (kept / "repro.sh").write_text(f"#!/bin/sh\n# regenerates and runs the same case\n{again}\n")
                print(f"FAIL {describe(case, outcome, problems)}\n  inputs: {kept}\n  again: {again}", flush=True)
            shutil.rmtree(work, ignore_errors=True)
            i += 1
            now = time.monotonic()
            if now - last_report > 60:
                last_report = now
                print(
                    f"... {sum(tried.values())} cases, {sum(failed.values())} failures, {(now - start) / 60:.1f} min",
                    flush=True,
                )
    finally:
        worker.close()

    elapsed = (time.monotonic() - start) / 60
    header = f"{'entry point':<20} {'cases':>6} {'failed':>6} " + " ".join(f"{c:>9}" for c in CATEGORIES)
    print(
        f"\nadvaudit fuzz summary: seed {args.seed}, {elapsed:.1f} min, per-case limit {args.timeout:g} s, "
        f"{modes['worker']} in the worker process, {modes['subprocess']} as subprocesses"
    )
    print(header)
    print("-" * len(header))
    for entry in sorted(ENTRY_POINTS):
        if entry in entries:
            print(
                f"{entry:<20} {tried[entry]:>6} {failed[entry]:>6} "
                + " ".join(f"{kinds[entry][c]:>9}" for c in CATEGORIES)
            )
    total = Counter[str]()
    for entry in kinds:
        total.update(kinds[entry])
    print("-" * len(header))
    print(
        f"{'total':<20} {sum(tried.values()):>6} {sum(failed.values()):>6} "
        + " ".join(f"{total[c]:>9}" for c in CATEGORIES)
    )
    if generator_errors:
        print(f"fuzzer generator errors (not advaudit failures): {generator_errors}")
    if failed:
        print(f"reproducers: {failures_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
