"""Property-based and mutation fuzzing of every loader and command entry point (issue 18).

Hypothesis (fixed seed: ``derandomize=True``) draws cases from ``tests/fuzz``: hostile models (ONNX,
TorchScript, ``.pt2``; byte mutations of ``sample_models/``), data (npz, IDX, image folders), YAML
configurations, calibration and report JSON, and option values, for every command.  Each case must keep
the command-line contract (``tests.fuzz.harness.check``): exit 2 with one ``advaudit: error:`` line for
invalid input, 0 for valid input, 1 only with a gate, never 3 or a traceback; no file left behind by a
failing run and a sentinel at the output path unchanged; inputs untouched; no pickle or YAML payload run.

Cases that could hang (device files, FIFOs, cyclic graphs, alias bombs) run in a worker process with a
time limit (hang detection); the rest run in this process.  ``benchmarks/fuzz.py --minutes N`` runs the
same generators for as long as asked.  The targeted tests below pin the internal-error path (exit 3,
``-v`` traceback, worker processes) and that no output option ever leaves a partial or clobbered file.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advaudit.cli import main
from advaudit.distributed import WorkerCrash, _raise_worker_error, run_sharded
from advaudit.errors import EXIT_INPUT, EXIT_INTERNAL, UsageError

from .fuzz import ENTRY_POINTS, Seeds, Worker, describe, run_case
from .fuzz import inputs as gen
from .fuzz.harness import SENTINEL, Case
from .fuzz.seeds import audit_config

EXAMPLES = {
    "info": 30,
    "attack": 15,
    "scan-backdoor": 10,
    "detect-calibrate": 8,
    "detect": 12,
    "detect-evaluate": 6,
    "defend-purify": 10,
    "defend-train-vqvae": 5,
    "harden": 4,
    "audit": 10,
    "report": 15,
    "plugins": 5,
}
"""Cases per entry point in CI (the long run draws thousands: benchmarks/fuzz.py)."""
HANG_LIMIT = 120.0
"""Seconds a hang-prone case may take in the worker process before it counts as a hang."""


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    return Seeds(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


def _run(case: Case, worker: Worker | None) -> None:
    mode = "worker" if case.hang_prone else "inprocess"
    outcome, problems = run_case(case, mode, timeout=HANG_LIMIT, worker=worker)
    assert not problems, describe(case, outcome, problems)


@pytest.mark.parametrize("entry", sorted(EXAMPLES))
def test_entry_point_keeps_the_contract(
    entry: str, seeds: Seeds, worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Random hostile cases of one entry point (shrunk by Hypothesis to a minimal failing one)."""
    assert set(EXAMPLES) == set(ENTRY_POINTS)
    root = tmp_path_factory.mktemp(f"fuzz-{entry}")
    count = iter(range(10**6))

    @settings(
        derandomize=True,
        max_examples=EXAMPLES[entry],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def check_one(seed: int) -> None:
        # The generators keep their own distributions (mostly hostile, some valid); Hypothesis picks the
        # seeds. benchmarks/fuzz.py --seed draws cases as random.Random(f"{seed}:{i}"); here it is Random(seed).
        case = ENTRY_POINTS[entry](random.Random(seed), seeds, root / f"case-{next(count)}")
        _run(case, worker)

    check_one()


# ------------------------------------------------------------------- values and documents from Hypothesis
VALUE_TEMPLATES: list[tuple[str, ...]] = [
    ("info", "{model}", "--data", "{data}", "--n", "2", "--range"),
    ("info", "{model}", "--data", "{data}", "--mean"),
    ("info", "{model}", "--data", "{data}", "--std"),
    ("info", "{model}", "--input-shape"),
    ("info", "{model}", "--data", "{data}", "--n"),
    ("info", "{model}", "--data", "{data}", "--offset"),
    ("info", "{model}", "--data", "{data}", "--resize"),
    ("info", "{model}", "--data", "{data}", "--crop"),
    ("info", "{model}", "--max-model-size"),
    ("info", "{model}", "--device"),
    ("info", "{model}", "--data", "{data}", "--n", "2", "--seed"),
    ("info", "{model}", "--data", "{data}", "--labels"),
    ("attack", "{model}", "--data", "{data}", "--n", "2", "--attack", "fgsm", "--eps"),
    ("attack", "{model}", "--data", "{data}", "--n", "2", "--eps", "0.1", "--attack"),
    ("attack", "{model}", "--data", "{data}", "--n", "2", "--attack", "fgsm", "--fail-under"),
    ("detect", "{model}", "--inputs", "{data}", "--calibration", "{cal}", "--n", "2", "--max-mutations", "20", "--mu"),
    (
        "detect",
        "calibrate",
        "{model}",
        "--data",
        "{data}",
        "--n",
        "12",
        "--mutations",
        "10",
        "--out",
        "{out}",
        "--radius",
    ),
    ("defend", "purify", "--data", "{data}", "--n", "2", "--out", "{out}.npz", "--defense"),
]
TEXT_VALUES = st.one_of(
    st.text(max_size=24),
    st.floats().map(repr),
    st.integers().map(str),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=16), min_size=1, max_size=4).map(
        lambda v: ",".join(map(repr, v))
    ),
    st.sampled_from(["0,1", "1,8,8", "8", "pgd:steps=2", "gaussian", "robust_accuracy=0.5", "from-name", "cpu"]),
)


def test_any_option_value_gives_a_result_or_one_error_line(
    seeds: Seeds, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hypothesis's own strings and numbers (unicode, NUL, huge, NaN) as the value of each option."""
    root = tmp_path_factory.mktemp("fuzz-values")
    count = iter(range(10**6))

    @settings(derandomize=True, max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(template=st.sampled_from(VALUE_TEMPLATES), value=TEXT_VALUES)
    def check_one(template: tuple[str, ...], value: str) -> None:
        work = root / f"case-{next(count)}"
        values = {
            "model": str(seeds.onnx),
            "data": str(seeds.npz),
            "cal": str(seeds.calibration),
            "out": str(work / "out" / "o"),
        }
        argv = [a.format(**values) for a in template] + [value]
        outputs = ("o", "o.npz")
        _run(_case(work, template[0], argv, {0, 1, 2}, outputs=outputs, kind=f"{template[-1]} {value!r}"), None)

    check_one()


DOCUMENTS = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ).map(lambda tree: json.dumps(tree).encode()),
)
DOCUMENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "calibration.json": ("detect", "{model}", "--inputs", "{data}", "--calibration", "{doc}", "--n", "2"),
    "report.json": ("report", "{doc}", "--format", "md"),
    "spec.yaml": ("info", "{model}", "--spec", "{doc}"),
    "audit.yaml": ("audit", "{model}", "--config", "{doc}", "--report-dir", "{out}"),
    "labels.csv": ("info", "{model}", "--data", "{flat}", "--labels", "{doc}"),
    "baseline.json": ("audit", "{model}", "--config", "{config}", "--report-dir", "{out}", "--baseline", "{doc}"),
}


def test_any_document_gives_a_result_or_one_error_line(seeds: Seeds, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis's bytes and JSON trees as every document advaudit reads (JSON, YAML, labels lists)."""
    root = tmp_path_factory.mktemp("fuzz-documents")
    count = iter(range(10**6))
    config = root / "audit.yaml"
    config.write_text(audit_config(seeds.npz))

    @settings(derandomize=True, max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(sorted(DOCUMENT_TEMPLATES)), content=DOCUMENTS)
    def check_one(name: str, content: bytes) -> None:
        work = root / f"case-{next(count)}"
        (work / "in").mkdir(parents=True)
        doc = work / "in" / name
        doc.write_bytes(content)
        values = {
            "model": str(seeds.onnx),
            "data": str(seeds.npz),
            "doc": str(doc),
            "out": str(work / "out" / "audit"),
            "flat": str(seeds.image_folder / "0"),
            "config": str(config),
        }
        argv = [a.format(**values) for a in DOCUMENT_TEMPLATES[name]]
        allowed = {0, 2} if name in ("spec.yaml", "labels.csv", "baseline.json") else {2}
        outputs = ("audit",) if "audit" in argv else ()
        kept = ("audit",) if "audit" in argv else ()
        _run(
            _case(
                work,
                argv[0],
                argv,
                allowed | ({1} if "audit" in argv else set()),
                outputs=outputs,
                kept_on_failure=kept,
                kind=f"{name} {content[:40]!r}",
            ),
            None,
        )

    check_one()


# ------------------------------------------------------------------------- inputs that could hang
def _case(work: Path, entry: str, argv: list[str], allowed: set[int], **kw: Any) -> Case:
    (work / "out").mkdir(parents=True, exist_ok=True)
    return Case(entry=entry, kind=kw.pop("kind", entry), argv=argv, work=work, allowed=frozenset(allowed), **kw)


def _external_at(dst: Path, location: str) -> Path:
    """The tiny ONNX model in ``dst`` with its last weight stored as external data at ``location``."""
    from onnx import TensorProto

    from .fuzz.seeds import tiny_onnx_proto

    proto = tiny_onnx_proto()
    w2 = next(t for t in proto.graph.initializer if t.name == "w2")
    w2.ClearField("raw_data")
    del w2.float_data[:]
    w2.data_location = TensorProto.EXTERNAL
    entry = w2.external_data.add()
    entry.key, entry.value = "location", location
    dst.mkdir(parents=True, exist_ok=True)
    path = dst / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def hang_prone_cases(seeds: Seeds, root: Path) -> list[Case]:
    """Inputs that block or never end when read naively: device files, FIFOs, cycles, alias bombs."""
    cases = []
    d = root / "dev-zero-external"
    cases.append(_case(d, "info", ["info", str(_external_at(d / "in", "/dev/zero"))], {2}, hang_prone=True))
    d = root / "link-urandom-external"
    model = _external_at(d / "in", "w.bin")
    os.symlink("/dev/urandom", model.parent / "w.bin")
    cases.append(_case(d, "info", ["info", str(model)], {2}, hang_prone=True))
    d = root / "cycle"
    rnd = random.Random(0)
    made = None
    while made is None or "self-loop" not in made.kind and "cycle" not in made.kind:
        made = gen.onnx_graph(rnd, seeds, d / "in" / f"g{rnd.random()}")
    cases.append(_case(d, "info", ["info", str(made.path)], {2}, hang_prone=True, kind=made.kind))
    d = root / "fifo-data"
    fifo = d / "in" / "x.npz"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    cases.append(_case(d, "info", ["info", str(seeds.onnx), "--data", str(fifo)], {2}, hang_prone=True))
    d = root / "dev-zero-calibration"
    cases.append(
        _case(
            d,
            "detect",
            ["detect", str(seeds.onnx), "--inputs", str(seeds.npz), "--calibration", "/dev/zero", "--n", "2"],
            {2},
            hang_prone=True,
        )
    )
    d = root / "fifo-report"
    fifo = d / "in" / "report.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    cases.append(_case(d, "report", ["report", str(fifo)], {2}, hang_prone=True))
    d = root / "dev-zero-spec"
    cases.append(_case(d, "info", ["info", str(seeds.onnx), "--spec", "/dev/zero"], {2}, hang_prone=True))
    d = root / "urandom-audit-data"
    cfg = d / "in" / "audit.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(audit_config(seeds.npz).replace(json.dumps(str(seeds.npz)), '"/dev/urandom"'))
    cases.append(
        _case(
            d,
            "audit",
            ["audit", str(seeds.onnx), "--config", str(cfg), "--report-dir", str(d / "out" / "a")],
            {2},
            hang_prone=True,
        )
    )
    d = root / "billion-laughs"
    cfg = d / "in" / "audit.yaml"
    cfg.parent.mkdir(parents=True)
    parts = ["&a0 [" + ", ".join(["0.1"] * 9) + "]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)
    ]
    cfg.write_text(audit_config(seeds.npz).replace("    eps: [0.1, 0.3]", "    eps: [" + ", ".join(parts) + "]"))
    cases.append(
        _case(
            d,
            "audit",
            ["audit", str(seeds.onnx), "--config", str(cfg), "--report-dir", str(d / "out" / "a")],
            {2},
            hang_prone=True,
        )
    )
    d = root / "recursive-yaml"
    cfg = d / "in" / "audit.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(audit_config(seeds.npz).replace("    eps: [0.1, 0.3]", "    eps: &e [0.1, *e]"))
    cases.append(
        _case(
            d,
            "audit",
            ["audit", str(seeds.onnx), "--config", str(cfg), "--report-dir", str(d / "out" / "a")],
            {2},
            hang_prone=True,
        )
    )
    d = root / "artifact-dev-zero"
    report = json.loads(seeds.reports["attack"].read_text())
    report["examples"] = "/dev/zero"
    (d / "in").mkdir(parents=True)
    (d / "in" / "r.json").write_text(json.dumps(report))
    cases.append(_case(d, "report", ["report", str(d / "in" / "r.json"), "--format", "html"], {0}, hang_prone=True))
    return cases


def test_inputs_that_could_hang_are_refused_in_time(seeds: Seeds, worker: Worker, tmp_path: Path) -> None:
    for case in hang_prone_cases(seeds, tmp_path):
        _run(case, worker)


# ------------------------------------------------------------------------------------ internal errors
def _boom(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("synthetic bug\nsecond line")


def test_an_unexpected_exception_is_exit_3_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("advaudit.cli.plugins_cmd.get_registry", _boom)
    assert main(["plugins"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "advaudit: internal error: ValueError: synthetic bug (run with --verbose for the traceback; please report it)"
    ]
    assert main(["-v", "plugins"]) == EXIT_INTERNAL  # the traceback only with -v (before or after the command)
    err = capsys.readouterr().err
    assert err.startswith("advaudit: internal error: ValueError") and "Traceback" in err and "_boom" in err
    assert main(["plugins", "--verbose"]) == EXIT_INTERNAL and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc,code,text",
    [
        (
            MemoryError("Unable to allocate 1.00 TiB"),
            EXIT_INPUT,
            "advaudit: error: out of memory (Unable to allocate 1.00 TiB); lower --batch-size or --n",
        ),
        (KeyboardInterrupt(), 130, "advaudit: aborted"),
        (UsageError("bad", "fix it"), EXIT_INPUT, "advaudit: error: bad; fix it"),
    ],
)
def test_other_exceptions_map_to_their_exit_codes(
    exc: BaseException, code: int, text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr("advaudit.cli.plugins_cmd.get_registry", raise_it)
    assert main(["plugins"]) == code
    assert capsys.readouterr().err.strip().splitlines() == [text]


def test_click_usage_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["plugins", "--kind", "nosuch"]) == EXIT_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advaudit: error: Invalid value for '--kind'")
    assert lines[0].endswith("see 'advaudit plugins --help'")


def _crashes_on_rank_1(*, shard: Any) -> int:
    if shard.rank == 1:
        raise ValueError("worker bug")
    return sum(shard.map(lambda v: v, [1, 2, 3]))  # rank 0 waits here for rank 1, which is gone


def test_an_unexpected_exception_in_a_worker_maps_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(WorkerCrash) as err:
        run_sharded(_crashes_on_rank_1, 2)
    crash = err.value
    assert crash.type_name == "ValueError" and crash.detail == "worker bug (in worker 1)"
    assert "Traceback" in crash.remote_traceback and "_crashes_on_rank_1" in crash.remote_traceback
    # as the CLI prints it (cli._unexpected), and a worker's MemoryError stays a MemoryError (exit 2)
    from advaudit.cli import _unexpected

    assert _unexpected(crash, verbose=0) == EXIT_INTERNAL
    assert capsys.readouterr().err.strip() == (
        "advaudit: internal error: ValueError: worker bug (in worker 1) "
        "(run with --verbose for the traceback; please report it)"
    )
    (tmp_path / "crash-1.pkl").write_bytes(pickle.dumps(("MemoryError", "cannot allocate", "Traceback ...", True)))
    with pytest.raises(MemoryError):
        _raise_worker_error(tmp_path)


# ----------------------------------------------------------------------------- output files, per option
OUTPUTS: dict[str, tuple[list[str], str]] = {
    # option of a command: (the command with {out} for the checked output path, the output's name)
    "attack --report": (
        ["attack", "{model}", "--data", "{data}", "--n", "2", "--attack", "fgsm", "--report", "{out}"],
        "r.json",
    ),
    "attack --save-adv": (
        ["attack", "{model}", "--data", "{data}", "--n", "2", "--attack", "fgsm", "--save-adv", "{out}"],
        "adv.npz",
    ),
    "attack --examples": (
        ["attack", "{model}", "--data", "{data}", "--n", "2", "--attack", "fgsm", "--examples", "{out}"],
        "g.png",
    ),
    "scan-backdoor --report": (
        ["scan-backdoor", "{model}", "--method", "mm-bd", "--steps", "1", "--report", "{out}"],
        "r.json",
    ),
    "scan-backdoor --triggers-dir": (
        [
            "scan-backdoor",
            "{model}",
            "--data",
            "{data}",
            "--steps",
            "1",
            "--n",
            "15",
            "--seed",
            "0",
            "--triggers-dir",
            "{out}",
        ],
        "triggers",
    ),
    "detect calibrate --out": (
        ["detect", "calibrate", "{model}", "--data", "{data}", "--mutations", "10", "--out", "{out}"],
        "c.json",
    ),
    "detect --report": (
        ["detect", "{model}", "--inputs", "{data}", "--calibration", "{cal}", "--n", "2", "--report", "{out}"],
        "r.json",
    ),
    "detect evaluate --roc": (
        [
            "detect",
            "evaluate",
            "{model}",
            "--clean",
            "{data}",
            "--adversarial",
            "{adv}",
            "--lcr-mutations",
            "10",
            "--roc",
            "{out}",
        ],
        "roc.png",
    ),
    "detect evaluate --report": (
        [
            "detect",
            "evaluate",
            "{model}",
            "--clean",
            "{data}",
            "--adversarial",
            "{adv}",
            "--lcr-mutations",
            "10",
            "--report",
            "{out}",
        ],
        "r.json",
    ),
    "defend purify --out": (
        ["defend", "purify", "--defense", "bit-depth", "--data", "{data}", "--out", "{out}"],
        "p.npz",
    ),
    "defend train-vqvae --out": (
        ["defend", "train-vqvae", "--data", "{data}", "--epochs", "1", "--hidden", "4", "--out", "{out}"],
        "v.safetensors",
    ),
    "harden --out": (
        [
            "harden",
            "{model}",
            "--data",
            "{data}",
            "--eval-data",
            "{data}",
            "--eps",
            "0.1",
            "--epochs",
            "1",
            "--out",
            "{out}",
        ],
        "h.onnx",
    ),
    "harden --report": (
        [
            "harden",
            "{model}",
            "--data",
            "{data}",
            "--eval-data",
            "{data}",
            "--eps",
            "0.1",
            "--epochs",
            "1",
            "--out",
            "{dir}/h.onnx",
            "--report",
            "{out}",
        ],
        "r.json",
    ),
    "audit --report-dir": (["audit", "{model}", "--config", "{config}", "--report-dir", "{out}"], "audit"),
    "report --out": (["report", "{report}", "--format", "html", "--out", "{out}"], "r.html"),
}


@pytest.mark.parametrize("option", sorted(OUTPUTS))
def test_no_output_is_clobbered_or_left_half_written(option: str, seeds: Seeds, tmp_path: Path) -> None:
    """Every option that writes files, three ways to fail: an unreadable input, the output under a file,
    the output naming an input.  Each exits 2, creates nothing, and leaves an earlier file at the output
    path (and the input) as they were."""
    template, name = OUTPUTS[option]
    out = tmp_path / "out"
    out.mkdir()
    config = tmp_path / "audit.yaml"
    config.write_text(audit_config(seeds.npz))
    data = tmp_path / "data.npz"
    data.write_bytes(seeds.npz.read_bytes())
    values = {
        "model": str(seeds.onnx),
        "data": str(data),
        "cal": str(seeds.calibration),
        "dir": str(out),
        "adv": str(seeds.adversarial),
        "config": str(config),
        "report": str(seeds.reports["attack"]),
    }
    target = out / name
    if "." in name:
        target.write_bytes(SENTINEL)
    (out / "blocker").write_text("a file where a folder is needed\n")
    first_input = next(k for k in ("model", "data", "report") if any("{" + k + "}" in a for a in template))
    copy = tmp_path / f"input-copy{Path(values[first_input]).suffix}"
    copy.write_bytes(Path(values[first_input]).read_bytes())
    values[first_input] = str(copy)
    runs = {
        "unreadable input": (
            [a.format(**{**values, first_input: str(tmp_path / "missing.bin")}, out=target) for a in template]
        ),
        "output under a file": [a.format(**values, out=out / "blocker" / name) for a in template],
        "output is an input": [a.format(**values, out=copy) for a in template],
    }
    if name == "audit":  # a folder output: a file in its place
        runs["output is an input"] = [a.format(**values, out=out / "blocker") for a in template]
    for why, argv in runs.items():
        before = sorted(
            (p.relative_to(tmp_path).as_posix(), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*")
        )
        assert main(["-q", *argv]) == EXIT_INPUT, f"{why}: {argv}"
        after = sorted(
            (p.relative_to(tmp_path).as_posix(), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*")
        )
        assert after == before, why


def test_write_atomic_writes_into_a_fifo_without_replacing_it(seeds: Seeds, tmp_path: Path) -> None:
    """``--out /dev/stdout`` style: a FIFO or device at the path is written to, never renamed over."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert main(["-q", "report", str(seeds.reports["detect"]), "--format", "md", "--out", str(fifo)]) == 0
    reader.join(timeout=60)
    assert fifo.is_fifo() and got and got[0].startswith(b"#")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_byte_mutations_are_reproducible() -> None:
    """The mutators are pure functions of the data and the seeded generator (reproducers stay valid)."""
    from .fuzz import mutate as mu

    data = bytes(range(256)) * 4
    a = mu.mutate_bytes(data, random.Random(5))
    b = mu.mutate_bytes(data, random.Random(5))
    assert a == b and a[0] != data
    tree = {"a": [1, 2, {"b": "c"}], "d": 1.5}
    assert mu.mutate_tree(tree, random.Random(1))[1] == mu.mutate_tree(tree, random.Random(1))[1]
    assert np.all(
        np.frombuffer(mu.truncate(data, random.Random(2)), np.uint8)
        == np.frombuffer(data, np.uint8)[: len(mu.truncate(data, random.Random(2)))]
    )
