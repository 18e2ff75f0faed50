"""Cases for every entry point: a command line over generated inputs and hostile option values.

``ENTRY_POINTS[name](rng, seeds, work) -> Case`` builds one case for ``advaudit <name>``: inputs from
:mod:`.inputs` (hostile most of the time), a few options set to hostile values (:data:`MODEL_OPTIONS`,
:data:`DATA_OPTIONS` and each command's own table; each value says whether it is valid), output files
with a sentinel already in place or at a hostile path, and once in a while a damaged command line.  The
case's allowed exit codes follow from the inputs and values: 2 when any is invalid, 0 when all are
valid, either when some are unknown, and 1 only where a gate was asked for.

A valid case stays cheap (the tiny model, a few images, few attack steps), so that a run of thousands
of cases fits in minutes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Callable

from . import inputs as gen
from .harness import Case
from .inputs import Made, worst
from .seeds import SAMPLE_FILES, SAMPLE_MODELS, Seeds

Values = list[tuple[str, str]]

SPEC_FLAGS = {"--range": "range", "--mean": "mean", "--std": "std", "--layout": "layout", "--input-shape": "input"}
"""Model flags and the spec field (as named in the spec and metadata generators' kinds) each overrides."""
CHECKPOINTED = ("attack", "scan-backdoor", "detect-evaluate")
REPEATABLE = {"--eps", "--attack", "--defense", "--fail-under", "--format", "--eval-suite"}
"""Options given several times on purpose (all values count)."""
"""Commands that keep ``REPORT.partial/`` after a failed run, for ``--resume`` (advaudit/checkpoint.py)."""

MODEL_OPTIONS: dict[str, Values] = {
    "--range": [
        ("0,1", "ok"),
        ("1,0", "error"),
        ("0,inf", "error"),
        ("nan,1", "error"),
        ("a,b", "error"),
        ("0", "error"),
        ("", "error"),
        ("0,1,2", "error"),
        ("-1e400,0", "error"),
        ("0,255", "any"),
        ("-1,1", "any"),
        ("0,1e-30", "any"),
    ],
    "--mean": [("0", "ok"), ("0.5", "any"), ("0.1,0.2", "error"), ("nan", "any"), ("inf", "any"), ("x", "error")],
    "--std": [("1", "ok"), ("0", "error"), ("-1", "error"), ("nan", "error"), ("inf", "any"), ("1e-320", "any")],
    "--layout": [("nchw", "ok"), ("nhwc", "any"), ("sideways", "error")],
    "--input-shape": [
        ("1,8,8", "ok"),
        ("0,8,8", "error"),
        ("inf", "error"),
        ("nan", "error"),
        ("1e400", "error"),
        ("-1,8,8", "error"),
        ("1,8,8,8", "error"),
        ("a", "error"),
        ("", "error"),
        ("3,8,8", "any"),
        ("1,9,9", "any"),
        ("99999,99999,99999", "any"),
    ],
    "--device": [
        ("cpu", "ok"),
        ("cuda", "any"),
        ("tpu", "error"),
        ("meta", "any"),
        ("cuda:99", "any"),
        ("", "any"),
        ("cpu:0", "any"),
    ],
    "--max-model-size": [
        ("2048", "ok"),
        ("0", "error"),
        ("-1", "error"),
        ("nan", "error"),
        ("inf", "ok"),
        ("abc", "error"),
        ("1e-9", "error"),
    ],
}
DATA_OPTIONS: dict[str, Values] = {
    "--n": [
        ("2", "any"),
        ("30", "ok"),
        ("0", "error"),
        ("-1", "error"),
        ("abc", "error"),
        ("1.5", "error"),
        ("99999999999999999999", "ok"),
    ],
    "--offset": [
        ("0", "ok"),
        ("-1", "error"),
        ("1", "ok"),
        ("30", "any"),  # past the end of the 30 images, unless an edit added one
        ("99999999999999999999", "error"),
        ("x", "error"),
    ],
    "--seed": [("0", "ok"), ("-1", "error"), ("18446744073709551616", "error"), ("abc", "error"), ("123456789", "ok")],
    "--batch-size": [("1", "ok"), ("0", "error"), ("-1", "error"), ("x", "error"), ("99999999999", "ok")],
    "--resize": [
        ("8", "ok"),
        ("8,8", "ok"),
        ("0", "error"),
        ("-1", "error"),
        ("a", "error"),
        ("1,2,3", "error"),
        ("4", "error"),
        ("99999", "error"),
        ("8x8", "ok"),
        ("", "ok"),
    ],
    "--crop": [("8", "ok"), ("4", "error"), ("16", "error"), ("0", "error"), ("8,8", "ok"), ("x", "error")],
    "--data-format": [
        ("bogus", "error"),
        ("idx", "any"),
        ("cifar10-batch", "any"),
        ("images", "any"),
        ("image-folder", "any"),
    ],
    "--labels": [("from-name", "any"), ("/dev/null", "any")],
}
IMAGE_ONLY_OPTIONS: dict[str, Values] = {
    **DATA_OPTIONS,
    "--resize": [
        ("8", "ok"),
        ("4,4", "any"),
        ("0", "error"),
        ("-1", "error"),
        ("a", "error"),
        ("1,2,3", "error"),
        ("99999", "any"),
    ],
    "--crop": [("8", "ok"), ("16", "ok"), ("0", "error"), ("x", "error")],
}
"""The data options of commands without a model (defend purify, train-vqvae): any image size is fine."""

EPS: Values = [
    ("0.1", "ok"),
    ("0.3", "ok"),
    ("nan", "error"),
    ("inf", "error"),
    ("-inf", "error"),
    ("-0.1", "error"),
    ("0", "error"),
    ("abc", "error"),
    ("", "error"),
    ("1e400", "error"),
    ("2", "error"),
    ("1e-300", "any"),
    ("1", "ok"),
]
SPRT: dict[str, Values] = {
    "--alpha": [("0.05", "ok"), ("0", "error"), ("1", "error"), ("nan", "error"), ("-1", "error"), ("0.5", "error")],
    "--beta": [("0.05", "ok"), ("0", "error"), ("0.7", "error"), ("inf", "error")],
    "--mu": [("1.2", "ok"), ("0", "error"), ("-1", "error"), ("nan", "error"), ("inf", "error"), ("1e-9", "any")],
    "--sigma": [("0.01", "any"), ("0", "error"), ("-1", "error"), ("nan", "error"), ("inf", "error")],
    "--max-mutations": [("20", "ok"), ("0", "error"), ("-5", "error"), ("x", "error")],
}
MUTATION: dict[str, Values] = {
    "--mutation": [
        ("auto", "ok"),
        ("gaussian", "ok"),
        ("darken+pixel", "ok"),
        ("gf", "any"),
        ("nosuch", "error"),
        ("", "error"),
        ("+", "error"),
        ("pixel+", "error"),
        ("brightness+brightness", "ok"),
        ("ns", "any"),
    ],
    "--radius": [
        ("0.1", "any"),
        ("0", "error"),
        ("2", "error"),
        ("nan", "error"),
        ("0.1,0.2", "any"),
        ("x", "error"),
        ("-0.5", "error"),
        ("inf", "error"),
    ],
}
DEFENSES: Values = [
    ("bit-depth:bits=2", "ok"),
    ("bit-depth:bits=0", "error"),
    ("bit-depth:bits=99", "error"),
    ("jpeg:quality=50", "ok"),
    ("jpeg:quality=0", "error"),
    ("jpeg:quality=101", "error"),
    ("jpeg:quality=nan", "error"),
    ("gaussian:sigma=0.5", "ok"),
    ("gaussian:sigma=-1", "error"),
    ("gaussian:sigma=nan", "error"),
    ("gaussian:sigma=1e300", "any"),
    ("median:window=3", "ok"),
    ("median:window=4", "error"),
    ("median:window=0", "error"),
    ("median:window=99999", "any"),
    ("kmeans:k=2,iters=2", "ok"),
    ("kmeans:k=0", "error"),
    ("kmeans:k=1", "any"),
    ("kmeans:iters=-1", "error"),
    ("tvm:iters=2", "ok"),
    ("tvm:drop=2", "error"),
    ("tvm:drop=nan", "error"),
    ("tvm:norm=3", "error"),
    ("tvm:weight=-1", "error"),
    ("nosuch", "error"),
    ("jpeg:nosuch=1", "error"),
    (":", "error"),
    ("jpeg:quality", "error"),
    ("vqvae", "error"),
    ("vqvae:path=", "error"),
    ("vqvae:path=/nonexistent.safetensors", "error"),
    ("JPEG", "error"),
]


def attack_spec(rng: random.Random) -> tuple[str, str]:
    """An ``--attack`` value: a cheap valid attack, or a hostile name or parameter."""
    if rng.random() < 0.5:
        return rng.choice(
            [
                ("fgsm", "ok"),
                ("pgd:steps=2", "ok"),
                ("pgd:steps=2,restarts=2", "ok"),
                ("apgd-ce:steps=2", "ok"),
                ("apgd-dlr:steps=2", "error"),  # DLR needs 4 classes; the tiny model has 3
                ("cw-l2:binary_search_steps=1,steps=2", "ok"),
                ("deepfool:steps=2", "ok"),
                ("square:queries=20", "ok"),
                ("substitute:rounds=1,epochs=1,steps=2,hidden=4", "ok"),
                ("jsma", "ok"),
                ("pgd:steps=2,random_start=false", "ok"),
                ("pgd:steps=2,rel_stepsize=0.5", "ok"),
            ]
        )
    name = rng.choice(["pgd", "apgd-ce", "cw-l2", "deepfool", "square", "jsma", "substitute", "fgsm"])
    return rng.choice(
        [
            (f"{name}:steps=-1", "error"),
            (f"{name}:steps=0", "error"),
            (f"{name}:steps=1e400", "error"),
            (f"{name}:steps=nan", "error"),
            (f"{name}:steps=abc", "error"),
            (f"{name}:nosuch=1", "error"),
            ("nosuch", "error"),
            (":", "error"),
            ("pgd:", "any"),
            ("pgd:steps", "error"),
            ("pgd:=1", "error"),
            ("PGD:steps=2", "error"),
            ("", "error"),
            ("pgd:random_start=maybe,steps=2", "error"),
            ("pgd:rel_stepsize=-1,steps=2", "error"),
            ("pgd:rel_stepsize=nan,steps=2", "error"),
            ("pgd:restarts=0,steps=2", "error"),
            ("square:queries=20,p_init=2", "any"),
            ("square:queries=-5", "error"),
            ("cw-l2:binary_search_steps=1,steps=2,lr=nan", "any"),
            ("cw-l2:binary_search_steps=1,steps=2,confidence=-1", "any"),
            ("deepfool:steps=2,overshoot=-1", "any"),
            ("deepfool:steps=2,candidates=0", "any"),
            ("jsma:theta=nan", "any"),
            ("jsma:gamma=0", "any"),
            ("jsma:saliency=nosuch", "any"),
            ("apgd-dlr:steps=2,n_target_classes=0", "any"),
            ("apgd-ce:steps=2,rho=nan", "any"),
            ("substitute:rounds=1,epochs=1,steps=2,hidden=4,method=bogus", "any"),
            ("substitute:rounds=0", "any"),
            ("pgd:steps=2,steps=3", "ok"),
            ("fgsm:steps=2", "error"),
        ]
    )


class Builder:
    """Collects one case: argv, the expectation of every input and value, outputs and sentinels."""

    def __init__(self, rng: random.Random, seeds: Seeds, work: Path, entry: str) -> None:
        self.rng, self.seeds, self.work, self.entry = rng, seeds, work, entry
        self.inp, self.out = work / "in", work / "out"
        self.inp.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.argv: list[str] = []
        self.tail: list[str] = []
        self.expects: list[str] = []
        self.kinds: list[str] = []
        self.outputs: list[str] = []
        self.kept: list[str] = []
        self.sentinels: list[str] = []
        self.markers: list[str] = []
        self.out_paths: list[str] = []
        self.hang = False
        self.gate = False
        self.selection_sensitive: list[int] = []
        self.loose = False
        self.env: dict[str, str] = {}

    def p(self, prob: float) -> bool:
        return self.rng.random() < prob

    def expect(self, value: str, kind: str | None = None) -> None:
        self.expects.append(value)
        self.kinds.append(kind or "")  # aligned with expects

    def use(self, made: Made) -> str:
        """Record a generated input; its extra options go at the end of the command."""
        if made.selected_only:
            self.selection_sensitive.append(len(self.expects))
        self.expect(made.expect, made.kind)
        self.markers += made.markers
        self.hang = self.hang or made.hang_prone
        self.tail += made.args
        return str(made.path)

    def gen(self, family: dict[str, Callable[..., Made]], name: str | None = None) -> Made:
        name = name or self.rng.choice(sorted(family))
        sub = self.inp / f"g{sum(1 for p in self.inp.iterdir() if p.name.startswith('g'))}"
        sub.mkdir(parents=True, exist_ok=True)
        return family[name](self.rng, self.seeds, sub)

    # ----------------------------------------------------------------------------------------- inputs
    def model(self, hostile: float = 0.3, formats: tuple[str, ...] = ("onnx", "torchscript", "pt2")) -> Made:
        """A model file: the tiny model, or (with probability ``hostile``) a generated one."""
        if self.p(hostile):
            prefixes = tuple({"onnx": "onnx-", "torchscript": "ts-", "pt2": "pt2-"}[f] for f in formats)
            return self.gen({k: v for k, v in gen.MODELS.items() if k.startswith(prefixes)})
        return gen.valid_model(self.rng, self.seeds, self.inp)

    def data(self, model: Made, hostile: float = 0.3, labelled: bool = True) -> Made:
        """Data for ``model``: the model's own data, or (with probability ``hostile``) generated data."""
        if model.pairs_with is not None:
            return Made(model.pairs_with, "ok", "MNIST sample data")
        if self.p(hostile):
            made = self.gen(gen.DATA)
            if made.pairs_with is not None and model.expect == "ok":  # MNIST data: pair it with the MNIST model
                model.path = made.pairs_with
            if not labelled and made.kind in ("npz no-y",):
                made.expect = "ok"
            return made
        return gen.data_valid(self.rng, self.seeds, self.inp)

    # ---------------------------------------------------------------------------------------- options
    def value(self, option: str, values: Values | Callable[[random.Random], tuple[str, str]]) -> None:
        if option not in REPEATABLE and option in self.argv + self.tail:
            return  # given twice, the last value would win: the expectation of this one would not hold
        text, expect = values(self.rng) if callable(values) else self.rng.choice(values)
        self.argv += [option, text]
        self.expect(expect, f"{option} {text[:40]!r}")

    def options(self, table: dict[str, Values], prob: float) -> None:
        """Each option of ``table`` with probability ``prob``, a random value from its list."""
        for option in sorted(table):
            if self.p(prob):
                self.value(option, table[option])

    def output(self, option: str, name: str, is_dir: bool = False, kept: bool = False) -> str:
        """An output path under ``out/``: usually fine (a sentinel there half the time), sometimes hostile."""
        variant = "plain"
        if self.p(0.12):
            variant = self.rng.choice(
                [
                    "parent-is-file",
                    "is-dir",
                    "same-as-other",
                    "same-as-input",
                    "nested",
                    "is-file" if is_dir else "nested",
                ]
            )
        rel = name
        if variant == "parent-is-file":
            (self.out / "blocker").write_text("a file where a folder is needed\n")
            rel = f"blocker/{name}"
            self.expect("error", f"{option} under a file")
        elif variant == "is-dir" and not is_dir:
            (self.out / name).mkdir(parents=True, exist_ok=True)
            self.expect("error", f"{option} is a folder")
        elif variant == "is-file" and is_dir:
            (self.out / name).write_text("a file where a folder is needed\n")
            self.expect("error", f"{option} is a file")
        elif variant == "same-as-other" and self.out_paths:
            path = self.rng.choice(self.out_paths)
            self.argv += [option, path]
            self.expect("error", f"{option} repeats another output")
            return path
        elif variant == "same-as-input" and self._input_files():
            i = self.rng.choice(self._input_files())
            src = Path(self.argv[i])
            if not src.is_relative_to(self.inp):  # a seed file: never let a buggy run overwrite it
                copy = self.inp / f"copy-{i}" / src.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, copy)
                self.argv[i] = str(copy)
            path = self.argv[i]
            self.argv += [option, path]
            self.expect("error", f"{option} is an input")
            return path
        elif variant == "nested":
            rel = f"new/deeper/{name}"
        path = str(self.out / rel)
        if variant == "plain" and not is_dir and self.p(0.5):
            self.sentinels.append(rel)
        self.outputs.append(rel)
        if kept:
            self.kept.append(rel)
        if option == "--report" and self.entry in CHECKPOINTED:
            self.kept.append(f"{rel}.partial")  # the checkpoint a failed run keeps for --resume
        self.out_paths.append(path)
        self.argv += [option, path]
        return path

    def _input_files(self) -> list[int]:
        """Positions in argv of the files the command reads (model, data, ...; not option values)."""
        return [
            i
            for i, a in enumerate(self.argv)
            if i > 0
            and not a.startswith("-")
            and Path(a).is_file()
            and Path(a).suffix in (".onnx", ".pt", ".pt2", ".npz", ".json", ".yaml")
        ]

    def damage_argv(self) -> None:
        """Once in a while: drop, repeat or insert a token (unknown options, stray arguments)."""
        if not self.p(0.06) or not self.argv:
            return
        self.loose = True  # the command means something else now: it may write other files
        op = self.rng.choice(["drop", "repeat", "insert", "insert"])
        i = self.rng.randrange(len(self.argv))
        if op == "drop":
            del self.argv[i]
            # The dropped token may be what made the command invalid (a stray argument, a bad value):
            # the command may now be valid, so no error can be expected any more.
            self.expects = ["any" if e == "error" else e for e in self.expects]
        elif op == "repeat":
            self.argv.insert(i, self.argv[i])
        else:
            self.argv.insert(i, self.rng.choice(["--nosuch", "stray", "", "-", "--", "--n", "-x", "🙂"]))
        self.expect("any", f"argv {op} at {i}")

    def case(self, allow_gate: bool = False) -> Case:
        self.damage_argv()
        if {"--resize", "--crop"} & set(self.argv + self.tail):  # images of another size may be fitted
            for i, kind in enumerate(self.kinds):
                if ("other-size" in kind or "huge-real-image" in kind) and self.expects[i] == "error":
                    self.expects[i] = "any"
        flags = {f for f in SPEC_FLAGS if f in self.argv}
        for i, kind in enumerate(self.kinds):  # a flag overrides the same field of a spec file or the metadata
            overridden = any(SPEC_FLAGS[f] in kind for f in flags)
            overridden_kind = kind.startswith(
                ("onnx metadata", "spec yaml", "torchscript advaudit.json", "pt2 advaudit.json")
            )
            if overridden and overridden_kind and self.expects[i] == "error":
                self.expects[i] = "any"
        if "--seed" in self.argv or "--offset" in self.argv:  # another selection may skip the damaged images
            for i in self.selection_sensitive:
                if self.expects[i] == "error":
                    self.expects[i] = "any"
        expect = worst(*self.expects) if self.expects else "ok"
        allowed = {"ok": {0}, "error": {2}, "any": {0, 2}}[expect]
        if (self.gate or allow_gate) and expect != "error":
            allowed = allowed | {1}
        return Case(
            entry=self.entry,
            kind="; ".join(k for k in self.kinds if k)[:400] or "valid",
            argv=self.argv + self.tail,
            work=self.work,
            allowed=frozenset(allowed),
            outputs=tuple(self.outputs),
            kept_on_failure=tuple(self.kept),
            sentinels=tuple(self.sentinels),
            markers=tuple(dict.fromkeys(self.markers)),
            hang_prone=self.hang,
            env=self.env,
            note=f"expectation {expect}",
            loose_outputs=self.loose,
        )


def _model_and_data(b: Builder, hostile_model: float, hostile_data: float, labelled: bool = True) -> tuple[Made, Made]:
    model = b.model(hostile_model)
    data = b.data(model, hostile_data, labelled)
    return model, data


def _common(b: Builder, prob: float = 0.06) -> None:
    """Model and data options, each now and then (the data options only where data is read)."""
    b.options(MODEL_OPTIONS, prob)
    if any(a in b.argv for a in ("--data", "--inputs", "--clean")):
        b.options(DATA_OPTIONS, prob)
    if b.p(prob):
        b.argv += ["--spec", b.use(b.gen({"spec": gen.spec_yaml}))]


# ============================================================================================ entry points
def case_info(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "info")
    model = b.model(hostile=0.85)
    b.argv = ["info", b.use(model)]
    if b.p(0.5):
        data = b.data(model, hostile=0.6)
        b.argv[1] = str(model.path)
        b.argv += ["--data", b.use(data), "--n", "4"]
    b.options({"--format": [("table", "ok"), ("json", "ok"), ("xml", "error")]}, 0.3)
    b.options(MODEL_OPTIONS, 0.08)
    if "--data" in b.argv:  # the data options only matter with --data
        b.options(DATA_OPTIONS, 0.08)
    if b.p(0.08):
        b.argv += ["--spec", b.use(b.gen({"spec": gen.spec_yaml}))]
    return b.case()


def case_attack(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "attack")
    model, data = _model_and_data(b, 0.2, 0.3)
    b.argv = ["attack", b.use(model), "--data", b.use(data), "--n", "2"]
    if b.p(0.85):
        for _ in range(rng.choice([1, 1, 2])):
            b.value("--attack", attack_spec)
    else:
        b.value("--suite", [("quick", "ok"), ("nosuch", "error"), ("", "error")])
        if b.p(0.2):
            b.value("--attack", attack_spec)
            b.expect("error", "--suite with --attack")
    for _ in range(rng.choice([0, 1, 1, 2])):
        b.value("--eps", EPS)
    b.options(
        {
            "--norm": [("linf", "ok"), ("l2", "ok"), ("l1", "error"), ("", "error")],
            "--format": [("table", "ok"), ("json", "ok"), ("md", "ok"), ("xml", "error")],
            "--precision": [("auto", "ok"), ("fp32", "ok"), ("bf16", "any"), ("fp8", "error")],
        },
        0.2,
    )
    defended = b.p(0.15)
    if defended:
        b.value("--defense", DEFENSES)
        if b.p(0.2):
            b.argv += ["--defense", f"vqvae:path={b.use(b.gen({'st': gen.safetensors_file}))}"]
        b.options(
            {
                "--adaptive": [("all", "ok"), ("blind", "ok"), ("bpda", "ok"), ("bpda+eot", "ok"), ("x", "error")],
                "--eot": [("2", "ok"), ("0", "error"), ("-1", "error")],
                "--eval-draws": [("1", "ok"), ("0", "error"), ("x", "error")],
            },
            0.4,
        )
    elif b.p(0.05):
        b.value("--adaptive", [("all", "error")])
    if b.p(0.1):
        target, expect = rng.choice(
            [
                ("least-likely", "ok"),
                ("random", "ok"),
                ("0", "ok"),
                ("2", "ok"),
                ("3", "error"),
                ("-1", "error"),
                ("abc", "error"),
                ("1e400", "error"),
                ("", "error"),
            ]
        )
        if b.p(0.8):
            b.argv.append("--targeted")
        else:
            expect = "error"
        b.argv += ["--target", target]
        b.expect("error" if defended else expect, f"--target {target!r}")
    if b.p(0.4):
        b.output("--report", "report.json")
    if not defended and b.p(0.3):
        b.output("--save-adv", "adv.npz")
    if not defended and b.p(0.3):
        b.output("--examples", "grid.png")
    if b.p(0.2):
        gate, expect = rng.choice(
            [
                ("robust_accuracy=0.5", "ok"),
                ("clean_accuracy=0.9", "ok"),
                ("robust_accuracy@0.1=0.5", "any"),
                ("bogus=1", "error"),
                ("robust_accuracy", "error"),
                ("robust_accuracy=abc", "error"),
                ("robust_accuracy@abc=1", "error"),
                ("clean_accuracy=nan", "error"),
                ("robust_accuracy@0.77=0.1", "any"),
                ("=", "error"),
            ]
        )
        b.argv += ["--fail-under", gate]
        b.expect(expect, f"--fail-under {gate}")
        b.gate = True
    _common(b)
    return b.case()


def case_scan(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "scan-backdoor")
    method, m_expect = rng.choice(
        [
            ("mm-bd", "ok"),
            ("mm-bd", "ok"),
            ("neural-cleanse", "ok"),
            ("all", "ok"),
            ("nosuch", "error"),
            ("", "error"),
            ("all,mm-bd", "error"),
        ]
    )
    data_free = method == "mm-bd" and b.p(0.2)
    model = b.model(0.2)
    data = None if data_free else b.data(model, 0.3)
    if data_free and model.pairs_with is not None and model.expect == "ok":
        model.expect = "any"  # an MNIST TorchScript model without its data has no input shape
    b.argv = ["scan-backdoor", b.use(model), "--method", method, "--steps", "2", "--n", "15", "--seed", "0"]
    b.expect(m_expect, f"--method {method!r}")
    if data is None:
        b.expect("ok", "data-free")
    else:
        b.argv += ["--data", b.use(data)]
    b.options(
        {
            "--steps": [("1", "ok"), ("0", "error"), ("-1", "error"), ("x", "error")],
            "--anomaly-threshold": [("2", "any"), ("0", "error"), ("-1", "error"), ("nan", "any"), ("inf", "any")],
            "--format": [("table", "ok"), ("json", "ok"), ("md", "ok"), ("xml", "error")],
            "--reference": [("no_such_reports", "error")],
        },
        0.15,
    )
    if b.p(0.3):
        b.output("--triggers-dir", "triggers", is_dir=True)
    if b.p(0.4):
        b.output("--report", "report.json")
    if b.p(0.2):
        b.argv.append("--fail-on-backdoor")
        b.gate = True
    _common(b)
    return b.case()


def case_detect_calibrate(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "detect-calibrate")
    model, data = _model_and_data(b, 0.2, 0.3)
    b.argv = ["detect", "calibrate", b.use(model), "--data", b.use(data), "--mutations", "10", "--n", "12"]
    b.output("--out", "calib.json")
    b.options(MUTATION, 0.25)
    b.options({"--mutations": [("10", "ok"), ("9", "error"), ("-1", "error"), ("x", "error")]}, 0.1)
    _common(b)
    return b.case()


def case_detect(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "detect")
    model = gen.valid_model(rng, seeds, b.inp) if b.p(0.9) else b.model(1.0)
    model = Made(seeds.onnx, "ok", "valid .onnx") if model.expect == "ok" and b.p(0.7) else model
    data = b.data(model, 0.35, labelled=False)
    cal = b.gen({"calibration": gen.calibration_json}) if b.p(0.5) else Made(seeds.calibration, "ok", "calibration")
    if model.path.read_bytes() != seeds.onnx.read_bytes() and cal.expect == "ok":
        cal.expect = "error"  # a calibration of another model (other bytes) is refused
    b.argv = [
        "detect",
        b.use(model),
        "--inputs",
        b.use(data),
        "--calibration",
        b.use(cal),
        "--n",
        "3",
        "--max-mutations",
        "20",
    ]
    b.options(SPRT, 0.12)
    b.options({"--format": [("table", "ok"), ("json", "ok"), ("md", "ok"), ("xml", "error")]}, 0.2)
    if b.p(0.4):
        b.output("--report", "report.json")
    if b.p(0.2):
        b.argv.append("--fail-on-adversarial")
        b.gate = True
    _common(b)
    return b.case()


def case_detect_evaluate(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "detect-evaluate")
    model = Made(seeds.onnx, "ok", "valid .onnx") if b.p(0.8) else b.model(0.5)
    clean = b.data(model, 0.25) if b.p(0.5) else Made(seeds.npz, "ok", "valid npz")
    if clean.expect == "ok" and clean.path != seeds.npz:
        clean.expect = "any"  # valid, but another order of the images can calibrate kappa_nor too high for --mu
    adv = b.gen(gen.NPZ) if b.p(0.35) else Made(seeds.adversarial, "ok", "adversarial npz")
    b.argv = [
        "detect",
        "evaluate",
        b.use(model),
        "--clean",
        b.use(clean),
        "--adversarial",
        b.use(adv),
        "--n",
        "24",
        "--lcr-mutations",
        "10",
        "--max-mutations",
        "20",
    ]
    if b.p(0.3):
        cal = b.gen({"calibration": gen.calibration_json})
        if Path(model.path).read_bytes() != seeds.onnx.read_bytes() and cal.expect == "ok":
            cal.expect = "error"
        b.argv += ["--calibration", b.use(cal)]
    b.options(MUTATION, 0.1)
    b.options(SPRT, 0.08)
    b.options(
        {
            "--lcr-mutations": [("10", "ok"), ("5", "error"), ("x", "error")],
            "--format": [("table", "ok"), ("json", "ok"), ("md", "error")],
        },
        0.15,
    )
    if b.p(0.3):
        b.output("--roc", "roc.png")
    if b.p(0.4):
        b.output("--report", "report.json")
    _common(b)
    return b.case()


def case_purify(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "defend-purify")
    data = b.data(Made(seeds.onnx, "ok", ""), 0.4)
    b.argv = ["defend", "purify", "--data", b.use(data), "--n", "4"]
    for _ in range(rng.choice([1, 1, 2])):
        if b.p(0.15):
            b.argv += ["--defense", f"vqvae:path={b.use(b.gen({'st': gen.safetensors_file}))}"]
        else:
            b.value("--defense", DEFENSES)
    name = "purified.npz" if b.p(0.92) else rng.choice(["purified.txt", "purified", "purified.NPZ"])
    if not name.endswith(".npz"):
        b.expect("error", f"--out {name}")
    b.output("--out", name)
    b.options({"--range": [("0,1", "ok"), ("1,0", "error"), ("0,inf", "error"), ("x", "error"), ("0,255", "ok")]}, 0.15)
    b.options(IMAGE_ONLY_OPTIONS, 0.05)
    if any(a.startswith("vqvae:") for a in b.argv) and data.kind.startswith("image folder") and data.expect == "ok":
        b.expects[b.kinds.index(data.kind)] = "any"  # colour images (RGBA, LA, ...) do not fit a greyscale VQ-VAE
    return _unlabelled(b)


LABEL_ONLY_ERRORS = (
    "npz y-negative",
    "npz y-onehot",
    "npz y-3d",
    "npz y-bool",
    "npz no-y",
    "npz y-uint64-max",
    "npz float-out",
    "npz zip bomb",
    "flat images, labels out-of-classes",
)
"""Data errors only where the data meets a model (labels against its classes, values against its range)."""


def _unlabelled(b: Builder) -> Case:
    """A model-less command: labels that do not fit a model are no error (only unreadable ones are)."""
    for i, kind in enumerate(b.kinds):
        if b.expects[i] == "error" and kind.startswith(LABEL_ONLY_ERRORS):
            b.expects[i] = "any"
    return b.case()


def case_train_vqvae(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "defend-train-vqvae")
    data = b.data(Made(seeds.onnx, "ok", ""), 0.4)
    b.argv = [
        "defend",
        "train-vqvae",
        "--data",
        b.use(data),
        "--n",
        "4",
        "--epochs",
        "1",
        "--hidden",
        "4",
        "--codes",
        "4",
        "--dim",
        "2",
    ]
    name = "vqvae.safetensors" if b.p(0.9) else "vqvae.bin"
    if not name.endswith(".safetensors"):
        b.expect("error", f"--out {name}")
    b.output("--out", name)
    b.options(
        {
            "--lr": [("0.001", "ok"), ("nan", "error"), ("-1", "error"), ("inf", "error")],
            "--noise": [("0", "ok"), ("-1", "error"), ("nan", "error"), ("0.5", "ok")],
            "--beta": [("1", "ok"), ("nan", "error")],
            "--epochs": [("1", "ok"), ("0", "error")],
            "--codes": [("2", "ok"), ("1", "error")],
            "--range": [("0,1", "ok"), ("1,0", "error"), ("x", "error")],
        },
        0.12,
    )
    b.options(IMAGE_ONLY_OPTIONS, 0.04)
    return _unlabelled(b)


def case_harden(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "harden")
    pick = rng.random()
    model = Made(seeds.onnx if pick < 0.6 else seeds.torchscript if pick < 0.85 else seeds.pt2, "ok", "tiny model")
    if b.p(0.2):
        model = b.model(1.0)
    data = b.data(model, 0.2)
    eval_data = b.data(model, 0.15) if "--labels" not in data.args else Made(data.path, "ok", "same as --data")
    if "--labels" in eval_data.args and eval_data.path != data.path:  # --labels applies to both
        data = Made(eval_data.path, "ok", "same as --eval-data")
    b.argv = [
        "harden",
        b.use(model),
        "--data",
        b.use(data),
        "--eval-data",
        b.use(eval_data),
        "--epochs",
        "1",
        "--n",
        "6",
        "--eval-n",
        "2",
        "--eval-suite",
        "quick",
        "--steps",
        "1",
        "--train-batch",
        "3",
    ]
    b.value("--eps", EPS if b.p(0.3) else [("0.1", "ok")])
    suffix = Path(model.path).suffix if Path(model.path).suffix in (".onnx", ".pt2") else ".pt"
    if b.p(0.85):
        out_suffix = suffix if b.p(0.9) else rng.choice([".onnx", ".pt", ".pt2", ".txt"])
        if {".onnx": "onnx", ".pt2": "pt2"}.get(out_suffix, "ts") != {".onnx": "onnx", ".pt2": "pt2"}.get(suffix, "ts"):
            b.expect("error", f"--out {out_suffix} for a {suffix} model")
        b.output("--out", f"hardened{out_suffix}")
    else:
        b.outputs.append(f"{Path(model.path).stem}-hardened{Path(model.path).suffix}")  # the default, in out/
    b.options(
        {
            "--method": [("pgd", "ok"), ("fgsm-rs", "ok"), ("trades", "ok"), ("x", "error")],
            "--step-size": [("0.05", "ok"), ("nan", "error"), ("-1", "error"), ("0", "error"), ("inf", "error")],
            "--lr": [("0.001", "ok"), ("nan", "error"), ("-1", "error"), ("0", "any"), ("inf", "error")],
            "--ramp": [("0", "ok"), ("1", "ok"), ("nan", "error"), ("2", "error")],
            "--beta": [("6", "ok"), ("nan", "error"), ("-1", "error")],
            "--shift": [("1", "ok"), ("-1", "error"), ("99999", "any")],
            "--optimizer": [("sgd", "ok"), ("x", "error")],
            "--schedule": [("constant", "ok"), ("x", "error")],
            "--eval-offset": [("0", "ok"), ("-1", "error"), ("30", "error")],
            "--train-batch": [("1", "ok"), ("0", "error")],
            "--precision": [("fp32", "ok"), ("x", "error")],
            "--format": [("json", "ok"), ("table", "ok")],
        },
        0.08,
    )
    if b.p(0.4):
        b.output("--report", "report.json")
    _common(b, 0.04)
    return b.case()


def case_audit(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "audit")
    if b.p(0.06):
        b.argv = ["audit", "--init", "--config", str(b.out / "audit.yaml")]
        if b.p(0.3):
            (b.out / "audit.yaml").write_text("existing: config\n")
            b.expect("error", "--init over an existing file")
        else:
            b.outputs.append("audit.yaml")
        return b.case()
    model = b.model(0.15)
    config = b.gen({"config": gen.config_yaml}) if b.p(0.75) else Made(_valid_config(b), "ok", "valid audit.yaml")
    b.argv = ["audit", b.use(model), "--config", b.use(config)]
    b.output("--report-dir", "audit", is_dir=True, kept=True)
    for _ in range(rng.choice([0, 0, 1, 2])):
        b.value("--format", [("html", "ok"), ("md", "ok"), ("junit", "ok"), ("json", "ok"), ("pdf", "error")])
    if b.p(0.2):
        b.argv += ["--baseline", b.use(b.gen({"baseline": gen.baseline_json}))]
    b.options(
        {
            "--tolerance": [("0.05", "ok"), ("-1", "error"), ("2", "error"), ("nan", "error")],
            "--seed": [("1", "ok"), ("-1", "error"), ("x", "error"), ("18446744073709551616", "error")],
            "--device": [("cpu", "ok"), ("tpu", "error")],
            "--workers": [("1", "ok"), ("0", "error")],
        },
        0.08,
    )
    if b.p(0.05):
        b.argv.append("--resume")
    return b.case(allow_gate=True)


def _valid_config(b: Builder) -> Path:
    from .seeds import audit_config

    p = b.inp / "valid.yaml"
    p.write_text(audit_config(b.seeds.npz))
    return p


def case_report(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "report")
    valid = Made(seeds.reports[rng.choice(sorted(seeds.reports))], "ok", "valid report")
    rep = b.gen({"report": gen.report_json}) if b.p(0.85) else valid
    b.argv = ["report", b.use(rep)]
    fmt = rng.choice(["html", "md", "junit", "json", "html"])
    if b.p(0.9):
        b.argv += ["--format", fmt]
    elif b.p(0.5):
        b.value("--format", [("pdf", "error"), ("", "error")])
    if b.p(0.5):
        b.output("--out", f"rendered.{fmt}")
    return b.case()


def case_plugins(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    b = Builder(rng, seeds, work, "plugins")
    b.argv = ["plugins"]
    b.options(
        {
            "--kind": [
                ("attack", "ok"),
                ("defense", "ok"),
                ("detector", "ok"),
                ("backdoor-scanner", "ok"),
                ("nosuch", "error"),
                ("", "error"),
            ],
            "--format": [("table", "ok"), ("json", "ok"), ("md", "error")],
        },
        0.5,
    )
    if b.p(0.15):
        b.argv.append(rng.choice(["extra", "--kind", "-x", "--format"]))
        b.expect("error", "stray argument")
    return b.case()


ENTRY_POINTS: dict[str, Callable[[random.Random, Seeds, Path], Case]] = {
    "info": case_info,
    "attack": case_attack,
    "scan-backdoor": case_scan,
    "detect-calibrate": case_detect_calibrate,
    "detect": case_detect,
    "detect-evaluate": case_detect_evaluate,
    "defend-purify": case_purify,
    "defend-train-vqvae": case_train_vqvae,
    "harden": case_harden,
    "audit": case_audit,
    "report": case_report,
    "plugins": case_plugins,
}
"""Every command of the CLI, by name, to its case builder."""

__all__ = ["ENTRY_POINTS", "Builder", "attack_spec", "SAMPLE_FILES", "SAMPLE_MODELS"]
