"""``audit.yaml``: load, validate against the published JSON Schema, fill defaults.

Errors name the offending key and its line (``audit.yaml:14: steps[1].epss: ...``) and exit 2.
Relative paths in the file are resolved against the file's folder, so an audit runs the same from
any working directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.loaders import LABELS_FROM_NAME
from ..errors import UsageError
from ..report.fmt import HEADLINE
from ..report.schema import json_path, load_schema
from ..safeio import parse_yaml, read_text
from .gates import GateSpec, parse_gate

DEFAULT_NAME = {"attack": "attack", "defense": "defense", "scan-backdoor": "backdoor", "detect": "detect",
                "harden": "harden", "repair": "repair"}
DEFAULT_TOLERANCE = 0.01


def _needs_clean_data(method: str) -> bool:
    from ..backdoor.scan import needs_clean_data  # the scanners' own min_per_class; imported only when asked

    return needs_clean_data(method)


class ConfigError(UsageError):
    """The audit configuration is invalid."""

    slug = "config"


@dataclass
class AuditConfig:
    """A validated audit configuration."""

    path: Path | None
    raw: dict[str, Any]  # the file's content, defaults filled in (recorded in the report)
    steps: list[dict[str, Any]]  # each with kind, name and resolved paths
    gates: list[GateSpec]
    tolerance: float = DEFAULT_TOLERANCE
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.steps if s["name"] == name)


def _yaml_line(text: str, path: list[str | int]) -> int | None:
    """1-based line of the YAML node at ``path`` (or of its deepest existing parent)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                return line
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line if node is None else node.start_mark.line + 1


def _dotted(path: list[str | int]) -> str:
    return json_path(path) if path else "(top level)"


def _schema_error(data: Any) -> tuple[list[str | int], str] | None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("audit-config"))
    errors = list(validator.iter_errors(data))
    if not errors:
        return None
    # The deepest error is the most specific one (if/then wraps the step's own errors).
    err = max(errors, key=lambda e: (len(e.absolute_path), -len(e.context or [])))
    while err.context:
        err = max(err.context, key=lambda e: len(e.absolute_path))
    path = list(err.absolute_path)
    message = err.message
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        if extra:
            allowed = ", ".join(k for k in err.schema["properties"] if k != "kind")
            path, message = [*path, extra[0]], f"unknown key {extra[0]!r}; allowed: {allowed}"
    elif err.validator == "not" and err.validator_value == {"required": ["suite", "attacks"]}:
        message = "give 'suite' or 'attacks', not both"
    elif err.validator == "pattern" and path and path[0] == "gates":
        message = f"{err.instance!r} is not a gate; write METRIC OP VALUE, e.g. 'robust_accuracy@0.1 >= 0.6'"
    elif err.validator == "required":
        message = err.message.replace("is a required property", "is required")
    return path, message


def load_config(path: str | Path, *, text: str | None = None) -> AuditConfig:
    """Read and validate ``path`` (``text`` overrides the file's content, for tests)."""
    p = Path(path)
    if text is None:
        text = read_text(p, "audit configuration", error=ConfigError, max_bytes=16 * 2**20, missing=(
            f"audit configuration {p} not found", "write a starter file with 'advaudit audit --init'"))
    try:
        data = parse_yaml(text, str(p), error=ConfigError)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # YAML's problems span lines
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with 'steps' (and optionally 'gates')",
                          "see 'advaudit audit --init'")
    found = _schema_error(data)
    if found:
        key_path, message = found
        line = _yaml_line(text, key_path)
        raise ConfigError(f"{p}{f':{line}' if line else ''}: {_dotted(key_path)}: {message}")
    return _build(p, data, text)


INTEGER_KEYS = frozenset({"batch_size", "eot", "eval_draws", "lcr_mutations", "max_mutations", "n", "offset", "seed",
                          "steps", "target", "workers", "version", "resize", "crop", "eval_n", "eval_offset",
                          "epochs", "shift", "train_batch", "scan_n", "rounds", "min_rounds", "reversals",
                          "target_labels"})
"""Keys the schema types as integers (or lists of them): JSON Schema also calls 6.0 an integer."""


def _integers(data: dict[str, Any]) -> None:
    """``n: 6.0`` -> ``n: 6`` (top level and in each step), so counts stay Python ints downstream."""
    for node in [data, *(s for s in data.get("steps", []) if isinstance(s, dict))]:
        for key in INTEGER_KEYS & set(node):
            value = node[key]
            if isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            elif isinstance(value, list):
                node[key] = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]


def _build(p: Path, data: dict[str, Any], text: str) -> AuditConfig:
    _integers(data)
    base = p.resolve().parent
    raw = copy.deepcopy(data)
    raw.setdefault("version", 1)

    def where(key_path: list[str | int]) -> str:
        line = _yaml_line(text, key_path)
        return f"{p}{f':{line}' if line else ''}: {_dotted(key_path)}"

    def resolve(value: str) -> str:
        return str((base / value).resolve()) if not Path(value).is_absolute() else value

    steps: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(data["steps"]):
        step = copy.deepcopy(s)
        kind = step["kind"]
        if "name" not in step:
            stem = DEFAULT_NAME[kind]
            seen[stem] = seen.get(stem, 0) + 1
            step["name"] = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        if any(t["name"] == step["name"] for t in steps):
            raise ConfigError(f"{where(['steps', i, 'name'])}: step name {step['name']!r} is used twice",
                              "give each step a unique 'name'")
        for key in ("data", "calibration", "eval_data", "out"):
            if key in step:
                step[key] = resolve(step[key])
        if "reference" in step:  # one report or folder, or a list of them
            refs = step["reference"]
            step["reference"] = resolve(refs) if isinstance(refs, str) else [resolve(r) for r in refs]
        if "data" not in step and "data" in data:
            step["data"] = resolve(data["data"])
        for key in ("n", "offset", "batch_size", "resize", "crop", "labels"):
            if key not in step and key in data:
                step[key] = data[key]
        if "labels" in step and step["labels"] != LABELS_FROM_NAME:
            step["labels"] = resolve(step["labels"])
        if kind in ("attack", "defense", "detect", "harden", "repair") and "data" not in step:
            raise ConfigError(f"{where(['steps', i])}: a {kind} step needs labelled data",
                              "set 'data' at the top or in the step")
        if kind == "scan-backdoor" and "data" not in step and _needs_clean_data(step.get("method", "neural-cleanse")):
            raise ConfigError(f"{where(['steps', i])}: method {step.get('method', 'neural-cleanse')} needs clean "
                              "labelled data", "set 'data', or use a data-free method: mm-bd or freeeagle")
        if "data" in step and not Path(step["data"]).exists():
            raise ConfigError(f"{where(['steps', i, 'data'] if 'data' in s else ['data'])}: {step['data']} does not "
                              "exist")
        if "eval_data" in step and not Path(step["eval_data"]).exists():
            raise ConfigError(f"{where(['steps', i, 'eval_data'])}: {step['eval_data']} does not exist")
        if kind == "repair" and "scan" in step:
            source = {t["name"]: t for t in steps}.get(step["scan"])
            if source is None or source["kind"] != "scan-backdoor":
                raise ConfigError(f"{where(['steps', i, 'scan'])}: {step['scan']!r} is not an earlier "
                                  "scan-backdoor step", "name a scan-backdoor step that comes before this one")
            if "target_labels" in step:
                raise ConfigError(f"{where(['steps', i, 'scan'])}: the scan gives the labels to repair",
                                  "drop 'target_labels'")
        if kind == "detect":
            step.setdefault("adversarial", next((t["name"] for t in steps if t["kind"] == "attack"), ""))
            adv = step["adversarial"]
            earlier = {t["name"]: t for t in steps}
            if adv in earlier:
                if earlier[adv]["kind"] != "attack" or earlier[adv].get("save_adversarial") is False:
                    raise ConfigError(f"{where(['steps', i, 'adversarial'])}: step {adv!r} keeps no adversarial "
                                      "examples", "name an attack step with save_adversarial left on")
            elif adv.endswith(".npz"):
                step["adversarial"] = resolve(adv)
                if not Path(step["adversarial"]).is_file():
                    raise ConfigError(f"{where(['steps', i, 'adversarial'])}: {step['adversarial']} does not exist")
            else:
                hint = "name an attack step listed before this one, or an .npz from 'advaudit attack --save-adv'"
                raise ConfigError(f"{where(['steps', i, 'adversarial'] if 'adversarial' in s else ['steps', i])}: no "
                                  f"adversarial examples {adv!r}" if adv else f"{where(['steps', i])}: a detect step "
                                                                              "needs adversarial examples", hint)
            if "calibration" in step and not Path(step["calibration"]).is_file():
                raise ConfigError(f"{where(['steps', i, 'calibration'])}: {step['calibration']} does not exist")
            method = str(step.get("method", "lcr")).partition(":")[0].strip()
            lcr_only = [k for k in ("mutation", "radius", "lcr_mutations", "alpha", "beta", "mu", "max_mutations")
                        if k in step]
            if method != "lcr" and lcr_only:
                raise ConfigError(f"{where(['steps', i, lcr_only[0]])}: {lcr_only[0]} applies to method lcr only",
                                  "remove it, or set method: lcr")
        steps.append(step)

    gates = []
    for j, g in enumerate(data.get("gates", [])):
        try:
            gates.append(parse_gate(g, steps, HEADLINE))
        except UsageError as exc:
            raise ConfigError(f"{where(['gates', j])}: {exc.message}", exc.hint) from None
    tolerance = float(data.get("baseline", {}).get("tolerance", DEFAULT_TOLERANCE))
    if not 0.0 <= tolerance <= 1.0:  # the schema's bounds let NaN through
        raise ConfigError(f"{where(['baseline', 'tolerance'])}: {tolerance!r} is not a tolerance in [0, 1]")
    return AuditConfig(path=p, raw=raw, steps=steps, gates=gates, tolerance=tolerance, base_dir=base)


STARTER = """\
# advaudit audit configuration: the steps to run on one model and the gates that decide it.
# Run:     advaudit audit MODEL --config audit.yaml --report-dir audit-out/
# Report:  advaudit report audit-out/report.json --format html --out audit.html
# Exit codes: 0 every gate passed, 1 a gate failed (or a step failed), 2 bad usage or input.
# The file is checked against advaudit/schemas/audit-config.schema.json; relative paths are
# resolved against this file's folder.
version: 1

# Labelled test data every step uses (npz with x and y, an image folder, IDX, CIFAR-10 batch).
data: {data}
n: 200            # samples per step (a stratified random sample, drawn with the seed)
seed: 0           # the same seed gives the same report
# batch_size: 256  # default 256 (Neural Cleanse 32), fewer for large inputs: 32 for 3x224x224
# resize: 256     # images: shorter side to 256 (torchvision's Resize), then
# crop: 224       #   the central 224x224 (CenterCrop), e.g. for ImageNet photos of any size
# device: cpu     # or cuda
# workers: 1      # processes the attack and detect steps shard their data across (or run under torchrun)

# Input spec, when the model file does not carry it (as in a --spec file):
# model:
#   range: [0, 1]
#   mean: [0.1307]
#   std: [0.3081]

steps:
  # Attack suite (quick, standard, paper) or a list of attacks, at one or more budgets.
  - kind: attack
    suite: quick
    norm: linf
    eps: [0.05, 0.1, 0.2, 0.3]
    # attacks: ["pgd:steps=40", "square:queries=1000"]   # instead of a suite

  # Neural Cleanse and MM-BD: reconstructed triggers per class, outlier test, verdict.
  - kind: scan-backdoor
    method: all
    n: 300

  # Label Change Rate detector on the attack step's verified adversarial examples.
  - kind: detect
    adversarial: attack
    n: 200

  # A defence in front of the model, attacked blind, with BPDA and with BPDA+EOT.
  # - kind: defense
  #   defenses: ["jpeg:quality=75"]
  #   suite: quick
  #   eps: [0.1]

  # Adversarial fine-tuning (as advaudit harden): train on data, compare before/after on eval_data,
  # the hardened model (same format) in the step's folder; gate it with harden.robust_accuracy.
  # - kind: harden
  #   eps: 0.1
  #   epochs: 5
  #   n: 1000
  #   eval_n: 200

  # Backdoor repair (as advaudit repair): Neural Cleanse on data, unlearning of each reversed trigger,
  # clean accuracy and attack success before/after on eval_data (other images than data); the repaired
  # model (same format) in the step's folder; gate it with repair.asr_after. scan: backdoor repairs
  # the labels that the scan-backdoor step named backdoor found (e.g. with clean references).
  # - kind: repair
  #   n: 1000
  #   eval_data: other_images.npz
  #   rounds: 3
  #   scan: backdoor

# Gates: METRIC OP VALUE. Metrics are '<step name>.<metric>'; without a step name the first step
# that measures it. Step names default to attack, defense, backdoor, detect, harden, repair.
gates:
  - clean_accuracy >= 0.98
  - robust_accuracy@0.1 >= 0.0
  - backdoor == clean
  - detect.auroc >= 0.9

# With --baseline previous/report.json, a gated metric that falls more than this below its value in
# the baseline fails the audit even when it clears the gate (a ratchet).
baseline:
  tolerance: 0.01
"""


def starter(data: str = "sample_models/data/mnist_test_1k.npz") -> str:
    """The commented starter file ``advaudit audit --init`` writes."""
    return STARTER.format(data=data)
