"""Run one fuzz case and check the command-line contract.

A :class:`Case` is one ``advaudit -q ...`` command on generated inputs in its own folder (``in/`` for
inputs, ``out/`` for outputs and the working directory).  It runs

* in this process (:func:`run_inprocess`: ``advaudit.cli.main`` with stdout and stderr captured at the
  file-descriptor level, so C++ runtime logs count too), or
* as ``python -m advaudit -q ...`` with a timeout (:func:`run_subprocess`), for cases that could hang, or
* in a long-lived worker process with a timeout (:class:`Worker`, used by ``benchmarks/fuzz.py``): the
  speed of the first with the hang detection of the second.

:func:`check` then applies the contract to the :class:`Outcome` and returns the violations (empty when
the case passed):

* the exit code is one the case allows (2 for invalid input, 0 where the input is valid, 1 only where a
  gate was asked for); 3 (internal error) never is;
* exit 2 prints exactly one non-empty line on stderr, ``advaudit: error: ...``;
* no ``Traceback`` anywhere in the output;
* the command finished within the time limit (hang detection);
* no file or folder appears under ``out/`` but those a successful run writes (no temporary files ever),
  a file that was there before a failing run (a sentinel at the ``--report`` path) is unchanged, and
  the inputs under ``in/`` are never modified;
* the marker files that a payload would create (a pickle calling ``open``, a YAML tag) do not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .seeds import REPO

SENTINEL = b"sentinel: an earlier run's output that a failing run must leave alone\n"
EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass
class Case:
    """One command on generated inputs.

    ``argv`` follows ``advaudit -q``; paths in it are absolute (``work/in/...``, ``work/out/...``).
    ``outputs`` are paths relative to ``out/`` that a successful run may create (a folder allows
    everything below it); ``kept_on_failure`` those a failing run may leave too (an audit keeps its
    finished steps for ``--resume``).  ``sentinels`` are ``out/`` files written before the run.
    """

    entry: str
    kind: str
    argv: list[str]
    work: Path
    allowed: frozenset[int]
    outputs: tuple[str, ...] = ()
    kept_on_failure: tuple[str, ...] = ()
    sentinels: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    hang_prone: bool = False
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    loose_outputs: bool = False  # a damaged command line: a successful run may write whatever it then means

    @property
    def inputs(self) -> Path:
        return self.work / "in"

    @property
    def out(self) -> Path:
        return self.work / "out"

    def command_line(self) -> str:
        """The command as a shell line (run in ``out/``)."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + "python -m advaudit -q " + " ".join(shlex.quote(a) for a in self.argv)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["work"] = str(self.work)
        d["allowed"] = sorted(self.allowed)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["work"] = Path(d["work"])
        d["allowed"] = frozenset(d["allowed"])
        for key in ("outputs", "kept_on_failure", "sentinels", "markers"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Outcome:
    code: int | None  # None: killed after the time limit
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


# ---------------------------------------------------------------------------------------------- running
def _print_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _fresh_warnings() -> Iterator[None]:
    """Python's default warning filters, printing to (the captured) stderr, every location shown anew:
    what ``python -m advaudit`` would print, whatever pytest did to the filters."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")  # simplefilter prepends: the ignores below take precedence
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _print_warning
        yield


@contextlib.contextmanager
def _captured() -> Iterator[dict[str, str]]:
    """Capture Python's sys.stdout/sys.stderr and file descriptors 1 and 2 (C++ logs) into ``box``."""
    box: dict[str, str] = {}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        py_out, py_err = io.StringIO(), io.StringIO()
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = py_out, py_err
        try:
            yield box
        finally:
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            fd_out.seek(0)
            fd_err.seek(0)
            box["stdout"] = py_out.getvalue() + fd_out.read().decode("utf-8", "replace")
            box["stderr"] = py_err.getvalue() + fd_err.read().decode("utf-8", "replace")


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_inprocess(case: Case) -> Outcome:
    """``advaudit.cli.main(["-q", *argv])`` in this process, in ``case.out``; no time limit."""
    import traceback

    from advaudit.cli import main

    cwd = os.getcwd()
    start = time.perf_counter()
    code: int | None
    with _captured() as box, _fresh_warnings(), _environ(case.env):
        os.chdir(case.out)
        try:
            code = main(["-q", *case.argv])
        except KeyboardInterrupt:
            raise
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # an exception that escaped main(): the contract's worst case
            sys.stderr.write(traceback.format_exc())
            code = None
        finally:
            os.chdir(cwd)
    return Outcome(code, box["stdout"], box["stderr"], time.perf_counter() - start)


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a case's subprocess: this one's, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_subprocess(case: Case, timeout: float) -> Outcome:
    """``python -m advaudit -q ...`` in ``case.out``, killed (with its children) after ``timeout`` seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "advaudit", "-q", *case.argv],
        cwd=case.out,
        env=subprocess_env(case.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return Outcome(
            None,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.perf_counter() - start,
            timed_out=True,
        )
    return Outcome(
        proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.perf_counter() - start
    )


class Worker:
    """A long-lived ``python -m tests.fuzz.worker`` that runs cases in-process, one at a time; a case
    that outlives its time limit kills the worker (a hang), and the next case starts a new one."""

    STARTUP = 60.0
    """Extra seconds for a fresh worker's first case (it imports torch and the runtimes)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.fresh = True
        self.starts = 0

    def _start(self) -> subprocess.Popen:
        self.starts += 1
        self.fresh = True
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"],
            cwd=REPO,
            env=subprocess_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def run(self, case: Case, timeout: float) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        result = case.work / "outcome.json"
        result.unlink(missing_ok=True)
        start = time.perf_counter()
        proc.stdin.write((json.dumps(case.to_json()) + "\n").encode())
        proc.stdin.flush()
        limit = timeout + (self.STARTUP if self.fresh else 0.0)
        ready, _, _ = select.select([proc.stdout], [], [], limit)
        line = proc.stdout.readline() if ready else None
        spent = time.perf_counter() - start
        if line is not None and line.strip() == b"done" and result.is_file():
            self.fresh = False
            outcome = Outcome(**json.loads(result.read_text()))
            result.unlink()
            if outcome.seconds > timeout:  # finished, but over the limit: a hang all the same
                outcome.timed_out, outcome.code = True, None
            return outcome
        self.close()
        if line is None:
            return Outcome(None, "", f"killed after {spent:.0f} s without an exit", spent, timed_out=True)
        return Outcome(None, "", f"the worker process died after {spent:.1f} s (crash or out-of-memory kill)", spent)

    def close(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None


# ------------------------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir", "link", "other"
    digest: str


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path below ``root`` (links not followed) with its kind and, for files, a content digest."""
    found: dict[str, Entry] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            try:
                st = p.lstat()
            except OSError:
                continue
            import stat as _stat

            if _stat.S_ISLNK(st.st_mode):
                found[rel] = Entry("link", os.readlink(p))
            elif _stat.S_ISDIR(st.st_mode):
                found[rel] = Entry("dir", "")
            elif _stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                found[rel] = Entry("file", h.hexdigest())
            else:
                found[rel] = Entry("other", str(st.st_mode))
    return found


def _covered(rel: str, allowed: tuple[str, ...]) -> bool:
    """``rel`` is one of ``allowed`` or below one of them, or a folder above one of them."""
    for a in allowed:
        a = a.rstrip("/")
        if rel == a or rel.startswith(a + "/") or a.startswith(rel + "/"):
            return True
    return False


def prepare(case: Case) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """Write the sentinels; return the snapshots of ``out/`` and ``in/`` to compare after the run."""
    case.out.mkdir(parents=True, exist_ok=True)
    for rel in case.sentinels:
        p = case.out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(SENTINEL)
    return snapshot(case.out), snapshot(case.inputs)


def check(case: Case, outcome: Outcome, before: tuple[dict[str, Entry], dict[str, Entry]]) -> list[str]:
    """The contract's violations for ``case`` (see the module docstring); empty when it held."""
    problems: list[str] = []
    err_lines = [ln for ln in outcome.stderr.splitlines() if ln.strip()]
    last = err_lines[-1][:300] if err_lines else "(no stderr)"
    if outcome.timed_out or outcome.code is None:
        problems.append(f"hang or escaped exception: no exit code after {outcome.seconds:.1f} s ({last})")
    elif outcome.code == EXIT_INTERNAL:
        problems.append(f"internal error (exit 3): {last}")
    elif outcome.code not in case.allowed:
        problems.append(f"exit {outcome.code}, expected {'/'.join(map(str, sorted(case.allowed)))}: {last}")
    if "Traceback" in outcome.stdout or "Traceback" in outcome.stderr:
        problems.append("a traceback was printed")
    if outcome.code == EXIT_INPUT:
        if len(err_lines) != 1 or not err_lines[0].startswith("advaudit: error: "):
            shown = " | ".join(ln[:160] for ln in err_lines[:4]) or "(nothing)"
            problems.append(
                f"exit 2 must print exactly one 'advaudit: error:' line on stderr, got {len(err_lines)}: {shown}"
            )
    succeeded = outcome.code in (EXIT_OK, EXIT_GATE)
    out_before, in_before = before
    out_after, in_after = snapshot(case.out), snapshot(case.inputs)
    may_create = case.outputs if succeeded else case.kept_on_failure
    for rel, entry in sorted(out_after.items()):
        name = rel.rsplit("/", 1)[-1]
        if name.endswith(".tmp") and name.startswith("."):
            problems.append(f"temporary file left behind: out/{rel}")
        elif rel not in out_before and not _covered(rel, may_create) and not (succeeded and case.loose_outputs):
            problems.append(f"unexpected {entry.kind} created: out/{rel}")
        elif rel in out_before and out_before[rel] != entry and not (succeeded and _covered(rel, case.outputs)):
            problems.append(f"existing out/{rel} was changed by a {'successful' if succeeded else 'failing'} run")
    for rel in sorted(set(out_before) - set(out_after)):
        if not (succeeded and _covered(rel, case.outputs)):
            problems.append(f"existing out/{rel} was removed")
    if in_after != in_before:
        changed = sorted(set(in_after.items()) ^ set(in_before.items()))
        problems.append(f"inputs were modified: {', '.join(sorted({'in/' + r for r, _ in changed})[:4])}")
    for marker in case.markers:
        if os.path.lexists(marker):
            problems.append(f"a payload ran: {marker} exists")
    return problems


def run_case(
    case: Case, mode: str = "inprocess", timeout: float = 120.0, worker: Worker | None = None
) -> tuple[Outcome, list[str]]:
    """Prepare, run (``inprocess``, ``subprocess`` or ``worker``) and check one case."""
    before = prepare(case)
    if mode == "subprocess":
        outcome = run_subprocess(case, timeout)
    elif mode == "worker":
        assert worker is not None
        outcome = worker.run(case, timeout)
    else:
        outcome = run_inprocess(case)
    return outcome, check(case, outcome, before)


def describe(case: Case, outcome: Outcome, problems: list[str]) -> str:
    """A failure report: the violations, the command line, and the output's tail."""
    lines = [f"[{case.entry}/{case.kind}] {'; '.join(problems)}", f"  cd {case.out} && {case.command_line()}"]
    if case.note:
        lines.append(f"  note: {case.note}")
    tail = (outcome.stderr.strip().splitlines() or ["(no stderr)"])[-12:]
    lines += [f"  stderr: {ln[:240]}" for ln in tail]
    return "\n".join(lines)
