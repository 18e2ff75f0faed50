"""The plugin registry: the example plugin really installed, broken plugins, the allowlist, lookups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import advaudit
import advaudit.registry
from advaudit.attacks.base import lp_norm
from advaudit.errors import PluginError
from advaudit.registry import Registry

from .conftest import REPO, SAMPLE_MODELS

PLUGIN_SRC = REPO / "plugins" / "advaudit-example"
N = 64  # MNIST samples the example attack runs on


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ADVAUDIT_LOAD_PLUGINS", "PYTHONPATH")}
    env.update(extra)
    return env


def _advaudit(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advaudit", *args], cwd=REPO, env=_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, installed with pip into a folder of its own (its source is copied first so
    the build leaves nothing behind in the repository)."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, env=_env(PIP_NO_CACHE_DIR="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (site / "advaudit_example" / "__init__.py").is_file()
    assert list(site.glob("advaudit_example-0.1.0.dist-info/entry_points.txt"))
    return site


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake installed distributions: one pointing at a missing module, one at an object with no kind,
    one stealing a built-in name, and one whose import would leave a marker file."""
    site = tmp_path_factory.mktemp("broken")

    def dist(name: str, entry_points: str) -> None:
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[advaudit.plugins]\n{entry_points}\n")

    dist("ghost-plugin", "ghost = advaudit_no_such_module_xyz:Thing")
    (site / "kindless_mod.py").write_text('class Thing:\n    """Has a docstring but no kind."""\n')
    dist("kindless-plugin", "kindless = kindless_mod:Thing")
    (site / "squatter_mod.py").write_text(
        "from advaudit.attacks.fgsm import FGSM\n\nclass Squatter(FGSM):\n    \"\"\"Not the real FGSM.\"\"\"\n"
    )
    dist("squatter-plugin", "fgsm = squatter_mod:Squatter")
    (site / "sidefx_mod.py").write_text(
        "from pathlib import Path\n\nPath(__file__).with_name('sidefx.imported').touch()\n\n"
        "class Noop:\n    \"\"\"Imported only when allowed.\"\"\"\n    kind = 'detector'\n"
    )
    dist("sidefx-plugin", "noop = sidefx_mod:Noop")
    return site


# -------------------------------------------------------------------- the example plugin
@pytest.fixture(scope="module")
def cli_runs(broken_site: Path, plugin_site: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every subprocess this module needs, started at once."""
    both = os.pathsep.join([str(plugin_site), str(broken_site)])
    procs = {
        "example": _advaudit("plugins", "--format", "json", PYTHONPATH=str(plugin_site)),
        "json": _advaudit("plugins", "--format", "json", PYTHONPATH=str(broken_site)),
        "table": _advaudit("plugins", PYTHONPATH=str(broken_site)),
        "info": _advaudit("info", str(SAMPLE_MODELS / "mnist_cnn.onnx"), "--format", "json",
                          PYTHONPATH=str(broken_site)),
        "none-allowed": _advaudit("plugins", "--format", "json", PYTHONPATH=both, ADVAUDIT_LOAD_PLUGINS=""),
    }
    return {name: _finish(p) for name, p in procs.items()}


def test_example_plugin_is_listed_by_the_cli(cli_runs: dict) -> None:
    run = cli_runs["example"]
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    mine = [p for p in listing["plugins"] if p["name"] == "uniform-noise"]
    assert len(mine) == 1, listing
    assert mine[0]["kind"] == "attack"
    assert mine[0]["origin"] == "advaudit-example 0.1.0"
    assert mine[0]["summary"].startswith("Uniform random noise in the eps ball")
    assert any(p["name"] == "fgsm" and p["origin"] == f"advaudit {advaudit.__version__}" for p in listing["plugins"])
    assert not any(b["origin"].startswith("advaudit-example") for b in listing["broken"])


@pytest.fixture
def plugin_registry(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("ADVAUDIT_LOAD_PLUGINS", raising=False)
    return Registry()


def test_example_plugin_attack_runs_on_the_mnist_sample(
    plugin_registry: Registry, plugin_site: Path, mnist_sample
) -> None:
    cls = plugin_registry.get("attack", "uniform-noise")
    assert cls.__module__ == "advaudit_example"
    assert Path(sys.modules["advaudit_example"].__file__).is_relative_to(plugin_site)
    assert cls.uses_gradients is False and cls.defaults == {"trials": 10}
    info = next(p for p in plugin_registry.plugins if p.name == "uniform-noise")
    assert not info.builtin and info.origin == "advaudit-example 0.1.0"

    model, data = mnist_sample
    x, y = torch.from_numpy(data.x[:N]), torch.from_numpy(data.y[:N])
    trials, eps = 10, 0.5
    out = cls(trials=trials)(model, x, y, eps=eps, norm="linf", seed=0)
    assert out.x_adv.shape == x.shape
    assert float(lp_norm(out.x_adv - x, "linf").max()) <= eps + 1e-6
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0

    # Success is checked independently in the deployment runtime.
    clean = model.predict(x).labels == data.y[:N]
    fooled = model.predict(out.x_adv).labels != data.y[:N]
    assert fooled.sum() >= 5, "uniform noise at eps 0.5 should fool the MNIST sample model on some samples"
    assert (fooled & clean).any()
    changed = (out.x_adv != x).flatten(1).any(dim=1).numpy()
    np.testing.assert_array_equal(changed, fooled)  # failures come back unchanged

    # One query per trial until the first success: misclassified-at-once samples cost 1.
    q = out.queries.numpy()
    assert q.shape == (N,) and q.min() >= 1 and q.max() <= trials
    assert np.all(q[~fooled] == trials)
    assert q[fooled].mean() < trials

    again = cls(trials=trials)(model, x, y, eps=eps, norm="linf", seed=0)
    torch.testing.assert_close(again.x_adv, out.x_adv, atol=0, rtol=0)


def test_example_plugin_l2_targeted_and_params(
    plugin_registry: Registry, mnist_sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    from advaudit.attacks import get_attack

    model, data = mnist_sample
    x, y = torch.from_numpy(data.x[:40]), torch.from_numpy(data.y[:40])
    cls = plugin_registry.get("attack", "uniform-noise")
    out = cls(trials=4)(model, x, y, eps=6.0, norm="l2", seed=1)
    assert float(lp_norm(out.x_adv - x, "l2").max()) <= 6.0 + 1e-4
    fooled = model.predict(out.x_adv).labels != data.y[:40]
    changed = (out.x_adv != x).flatten(1).any(dim=1).numpy()
    np.testing.assert_array_equal(changed, fooled)

    targets = (y + 1) % 10
    out = cls(trials=3)(model, x, y, eps=1.0, norm="linf", targets=targets, seed=2)
    hit = model.predict(out.x_adv).labels == targets.numpy()
    assert hit.any()  # eps 1 covers the whole [0, 1] range: pure noise hits some targets
    changed = (out.x_adv != x).flatten(1).any(dim=1).numpy()
    np.testing.assert_array_equal(changed, hit)

    with pytest.raises(PluginError, match="trials must be a positive integer"):
        cls(trials=0)
    with pytest.raises(PluginError, match="has no parameter 'steps'"):
        cls(steps=3)
    assert cls(trials="7").params["trials"] == 7  # CLI strings are cast

    # get_attack builds it by name through the process-wide registry (reset, restored afterwards).
    monkeypatch.setattr(advaudit.registry, "_REGISTRY", None)
    attack = get_attack("uniform-noise", trials=2)
    assert type(attack) is cls and attack.params == {"trials": 2}


# ---------------------------------------------------------------------------- broken plugins
def test_broken_plugins_are_listed_and_do_not_break_plugins(cli_runs: dict) -> None:
    run = cli_runs["json"]
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    broken = {b["name"]: b for b in listing["broken"] if b["origin"].endswith("-plugin 1.0")}
    assert set(broken) == {"ghost", "kindless", "fgsm"}
    assert broken["ghost"]["error"].startswith("import failed: ModuleNotFoundError")
    assert broken["ghost"]["target"] == "advaudit_no_such_module_xyz:Thing"
    assert broken["ghost"]["origin"] == "ghost-plugin 1.0"
    assert broken["kindless"]["error"].startswith("declares kind None")
    assert "already taken" in broken["fgsm"]["error"]
    names = {(p["name"], p["origin"]) for p in listing["plugins"]}
    assert ("fgsm", f"advaudit {advaudit.__version__}") in names  # the built-in keeps its name
    assert ("noop", "sidefx-plugin 1.0") in names

    table = cli_runs["table"]
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    assert "fgsm" in table.stdout
    assert "broken plugin ghost" in table.stderr and "broken plugin kindless" in table.stderr


def test_broken_plugins_do_not_break_info(cli_runs: dict) -> None:
    run = cli_runs["info"]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(run.stdout)["model"]["num_classes"] == 10


def test_empty_allowlist_loads_no_third_party_plugins(cli_runs: dict) -> None:
    run = cli_runs["none-allowed"]
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    assert {p["origin"].split(" ")[0] for p in listing["plugins"]} == {"advaudit"}
    assert "fgsm" in {p["name"] for p in listing["plugins"]}
    assert all(b["origin"].startswith("advaudit ") for b in listing["broken"])


def test_allowlist_in_process(broken_site: Path, plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    monkeypatch.syspath_prepend(str(plugin_site))
    marker = broken_site / "sidefx.imported"
    marker.unlink(missing_ok=True)

    monkeypatch.setenv("ADVAUDIT_LOAD_PLUGINS", "")
    reg = Registry()
    assert all(p.builtin for p in reg.plugins + reg.broken)
    assert "fgsm" in reg.names("attack")
    assert not marker.exists()  # third-party code was not even imported

    monkeypatch.setenv("ADVAUDIT_LOAD_PLUGINS", "advaudit-example, Ghost-Plugin")
    reg = Registry()
    assert "uniform-noise" in reg.names("attack")
    assert {p.name for p in reg.broken if not p.builtin} == {"ghost"}
    assert not marker.exists()

    monkeypatch.delenv("ADVAUDIT_LOAD_PLUGINS")
    reg = Registry()
    assert marker.exists()
    assert "noop" in reg.names("detector") and "uniform-noise" in reg.names("attack")


# ----------------------------------------------------------------------------------- lookups
def test_get_unknown_name_lists_the_available_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVAUDIT_LOAD_PLUGINS", raising=False)
    reg = Registry()
    with pytest.raises(PluginError) as exc:
        reg.get("attack", "no-such-attack")
    assert exc.value.message == "unknown attack 'no-such-attack'"
    assert exc.value.hint is not None and exc.value.hint.startswith("available: ")
    assert set(reg.names("attack")) <= set(exc.value.hint.removeprefix("available: ").split(", "))
    assert "fgsm" in str(exc.value)
    assert reg.get("attack", "fgsm").__name__ == "FGSM"
    empty = [k for k in advaudit.registry.KINDS if not reg.names(k)]  # kinds with no component yet
    for kind in empty[:1]:
        with pytest.raises(PluginError, match="available: none installed"):
            reg.get(kind, "anything")
    with pytest.raises(PluginError, match="available: freeeagle, mm-bd, neural-cleanse"):
        reg.get("backdoor-scanner", "anything")


def test_get_broken_name_says_why(broken_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    monkeypatch.delenv("ADVAUDIT_LOAD_PLUGINS", raising=False)
    reg = Registry()
    with pytest.raises(PluginError, match="the attack 'ghost' is broken: import failed"):
        reg.get("attack", "ghost")
    assert reg.get("attack", "fgsm").__module__ == "advaudit.attacks.fgsm"  # not the squatter


def test_hyperparameters_are_typed_instance_attributes() -> None:
    """Parameters are plain attributes set at construction (no ``__getattr__`` lookup), cast to the
    default's type, keyword-only; the ``params`` dict stays their record."""
    from advaudit.attacks import get_attack
    from advaudit.params import Parametrised

    assert "__getattr__" not in vars(Parametrised)
    pgd = get_attack("pgd", steps="7")
    assert vars(pgd)["steps"] == 7 and isinstance(pgd.steps, int) and pgd.params["steps"] == 7
    assert vars(pgd)["random_start"] is True
    with pytest.raises(AttributeError):
        _ = pgd.not_a_parameter
    with pytest.raises(TypeError):
        type(pgd)(7)  # positional hyperparameters are refused
