"""torch.export programs (``.pt2``): loading, the untrusted-file checks, forward/gradients, CLI, harden export."""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from advaudit.cli import main
from advaudit.errors import ModelError
from advaudit.models import load_model, sha256_file
from advaudit.models.export_model import ExportedProgramModel, is_pt2_archive

from .conftest import SAMPLE_MODELS, rng_images, small_cnn

MNIST_DATA = str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")
MEAN, STD = 0.1307, 0.3081
META: dict[str, Any] = {"range": [0, 1], "mean": [MEAN], "std": [STD], "class_names": [f"digit{i}" for i in range(10)]}


def build_pt2(net: torch.nn.Module, path: Path, *, metadata: dict[str, Any] | None = None, dynamic: bool = True,
              batch: int = 3, train: bool = False) -> Path:
    """The sample-model builder: ``torch.export`` ``net`` on a (batch, 1, 28, 28) example and save it to ``path``
    with ``advaudit.json`` metadata; the batch dimension is dynamic unless ``dynamic=False``."""
    net = net.train(train)
    example = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(net, (example,), dynamic_shapes=shapes)
    extra = {"advaudit.json": json.dumps(metadata)} if metadata is not None else None
    torch.export.save(program, str(path), extra_files=extra)
    return path


def eager(net: torch.nn.Module, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The eager module on natural-range inputs, normalised as ``META`` says."""
    t = torch.as_tensor(x)
    return net.eval()((t - MEAN) / STD)


@pytest.fixture(scope="module")
def cnn_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    net = small_cnn(seed=1)
    return net, build_pt2(net, tmp_path_factory.mktemp("pt2") / "cnn.pt2", metadata=META)


@pytest.fixture(scope="module")
def cnn_model(cnn_pt2: tuple[torch.nn.Module, Path]) -> ExportedProgramModel:
    model = load_model(cnn_pt2[1])
    assert isinstance(model, ExportedProgramModel)
    return model


@pytest.fixture(scope="module")
def trained_net() -> torch.nn.Module:
    """The small CNN after 3 epochs on 512 bundled MNIST images (not the first 200: those are attacked)."""
    with np.load(MNIST_DATA) as d:
        x = torch.from_numpy(d["x"][200:712].astype(np.float32) / 255)
        y = torch.from_numpy(d["y"][200:712]).long()
    net = small_cnn(seed=0).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def softmax_net() -> torch.nn.Sequential:
    return torch.nn.Sequential(small_cnn(seed=2), torch.nn.Softmax(dim=1)).eval()


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def advaudit_cli(args: tuple[str, ...]) -> None:
    """``advaudit.cli:main`` as a click command, so that ``CliRunner`` sees its exit code."""
    raise SystemExit(main(list(args)))


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(advaudit_cli, list(args), catch_exceptions=False)


# ---------------------------------------------------------------------------------------------- loading
def test_loads_spec_shape_and_dynamic_batch(cnn_model: ExportedProgramModel, cnn_pt2: tuple[Any, Path]) -> None:
    m = cnn_model
    assert m.format == "torch.export" and m.describe()["format"] == "torch.export"
    assert m.spec.range == (0.0, 1.0) and m.spec.mean == (MEAN,) and m.spec.std == (STD,)
    assert m.spec.class_names == tuple(META["class_names"]) and m.spec.source["mean"] == "metadata"
    assert m.spec.input_shape is None and m.input_shape == (1, 28, 28)  # from the graph's placeholder
    assert m.fixed_batch is None and m.torch_batch is None and m.details["batch_range"] == [1, None]
    assert isinstance(m.details["input_dims"][0], str) and m.details["input_dims"][1:] == [1, 28, 28]
    assert m.num_classes == 10 and m.output_kind == "logits" and m.details["final_softmax"] is False
    assert m.has_gradients and m.sha256 == sha256_file(cnn_pt2[1])


@pytest.mark.parametrize("n", [1, 3, 7])
def test_predictions_match_the_eager_module_for_any_batch(cnn_model: ExportedProgramModel,
                                                          cnn_pt2: tuple[torch.nn.Module, Path], n: int) -> None:
    x = rng_images(n, (1, 28, 28), seed=n)
    with torch.no_grad():
        ref = eager(cnn_pt2[0], x).numpy()
    pred = cnn_model.predict(x, batch_size=4)  # n=7: chunks of 4 and 3, neither the example's 3 alone
    np.testing.assert_allclose(pred.outputs, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(pred.labels, ref.argmax(1))


def test_gradients_equal_the_eager_input_gradients(cnn_model: ExportedProgramModel,
                                                   cnn_pt2: tuple[torch.nn.Module, Path]) -> None:
    x = torch.from_numpy(rng_images(5, (1, 28, 28), seed=11))
    y = torch.arange(5)
    xa = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(torch.nn.functional.cross_entropy(cnn_model.logits(xa), y), xa)
    xb = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(eager(cnn_pt2[0], xb), y), xb)
    assert float(want.abs().max()) > 0
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-7)


def test_bf16_search_copy_works(cnn_pt2: tuple[torch.nn.Module, Path]) -> None:
    model = load_model(cnn_pt2[1])
    model.set_search_precision("bf16")
    assert model.search_precision == "bf16" and model.search_precision_note is None
    x = torch.from_numpy(rng_images(6, (1, 28, 28), seed=4))
    y = torch.from_numpy(model.predict(x).labels)
    with torch.no_grad():
        got, ref = model.search_logits(x, y), model.logits(x)
    assert float((got - ref).abs().max()) < 0.05 * max(1.0, float(ref.abs().max()))


def test_final_softmax_gives_pre_softmax_logits(tmp_path: Path) -> None:
    net = softmax_net()
    model = load_model(build_pt2(net, tmp_path / "sm.pt2", metadata={"range": [0, 1]}))
    assert model.details["final_softmax"] is True and model.output_kind == "logits"
    assert model.details["logits_from"] == "linear"  # the node feeding the softmax
    x = rng_images(4, (1, 28, 28), seed=5)
    with torch.no_grad():
        logits = net[0](torch.from_numpy(x)).numpy()
        probs = net(torch.from_numpy(x)).numpy()
    pred = model.predict(x)
    np.testing.assert_allclose(pred.outputs, logits, rtol=1e-5, atol=1e-5)
    assert np.array_equal(pred.labels, probs.argmax(1))
    with torch.no_grad():
        np.testing.assert_allclose(model.logits(torch.from_numpy(x)).numpy(), logits, rtol=1e-5, atol=1e-5)


def test_fixed_batch_export_runs_in_padded_batches(tmp_path: Path) -> None:
    net = small_cnn(seed=3)
    model = load_model(build_pt2(net, tmp_path / "fixed.pt2", dynamic=False, batch=3))
    assert model.fixed_batch == 3 and model.torch_batch == 3 and model.input_shape == (1, 28, 28)
    x = rng_images(5, (1, 28, 28), seed=6)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x).outputs, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(model.logits(torch.from_numpy(x)).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_train_mode_export_is_run_in_eval_mode(tmp_path: Path) -> None:
    torch.manual_seed(4)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Dropout(0.5), torch.nn.Linear(4 * 28 * 28, 10),
    )
    bn = net[1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():  # running statistics far from any batch's, so train mode would be visible
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(4.0)
    path = build_pt2(net, tmp_path / "train.pt2", train=True)
    net.eval()
    model = load_model(path)
    assert model.details["exported_in_train_mode"] is True
    assert set(model.details["train_mode_rewrites"]) >= {"batch norm uses its running statistics", "dropout off"}
    x = rng_images(6, (1, 28, 28), seed=7)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    first = model.predict(x).outputs
    np.testing.assert_allclose(first, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(x[:1]).outputs, first[:1], rtol=1e-5, atol=1e-6)  # no batch stats
    module = model.torch_module()
    assert module is not None
    assert torch.allclose(dict(module.named_buffers())["1.running_mean"], torch.full((4,), 0.3))


def test_pt2_is_never_taken_for_torchscript(cnn_pt2: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    assert zipfile.is_zipfile(cnn_pt2[1]) and is_pt2_archive(cnn_pt2[1])
    assert not is_pt2_archive(SAMPLE_MODELS / "mnist_cnn.pt")  # a TorchScript archive
    renamed = tmp_path / "cnn.bin"
    renamed.write_bytes(cnn_pt2[1].read_bytes())
    assert load_model(renamed).format == "torch.export"


# ------------------------------------------------------------------------------ damaged and hostile files
def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes], str], None]) -> Path:
    """Copy the archive ``src`` to ``dst`` with its members (relative names -> bytes) edited in place."""
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/", 1)[0]
        items = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    edit(items, root)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for rel, data in items.items():
            z.writestr(f"{root}/{rel}", data)
    return dst


def _edit_program(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes], str], None]:
    def apply(items: dict[str, bytes], root: str) -> None:
        program = json.loads(items["models/model.json"])
        edit(program)
        items["models/model.json"] = json.dumps(program).encode()

    return apply


class _Touch:
    """Unpickling this creates the file ``path``: the test's evidence that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _pickled_weight(marker: str) -> Callable[[dict[str, bytes], str], None]:
    def edit(items: dict[str, bytes], root: str) -> None:
        config = json.loads(items["data/weights/model_weights_config.json"])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        items[f"data/weights/{first['path_name']}"] = pickle.dumps(_Touch(marker))
        items["data/weights/model_weights_config.json"] = json.dumps(config).encode()

    return edit


def _first_node(program: dict[str, Any]) -> dict[str, Any]:
    return program["graph_module"]["graph"]["nodes"][0]


def _input_dim0(program: dict[str, Any]) -> dict[str, Any]:
    return program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]["as_expr"]


HOSTILE: dict[str, tuple[Callable[[str], Callable[[dict[str, bytes], str], None]], str]] = {
    "pickled example inputs": (
        lambda m: lambda items, root: items.update({"data/sample_inputs/model.pt": pickle.dumps(_Touch(m))}),
        "example inputs"),
    "pickled weight": (_pickled_weight, "as a pickle"),
    "aotinductor library": (
        lambda m: lambda items, root: items.update({"data/aotinductor/model/model.so": b"\x7fELF"}), "AOTInductor"),
    "legacy pickled weights": (
        lambda m: lambda items, root: items.update({"data/weights/model.pt": pickle.dumps(_Touch(m))}), "legacy"),
    "expression": (
        lambda m: _edit_program(lambda p: _input_dim0(p).update(expr_str=f"open('{m}', 'w') and Symbol('s0')")),
        "symbolic shape expression"),
    "target": (lambda m: _edit_program(lambda p: _first_node(p).update(target="torch.os.system")), "torch.os.system"),
    "file-reading aten op": (
        lambda m: _edit_program(lambda p: _first_node(p).update(target="torch.ops.aten.from_file.default")),
        "from_file"),
    "forward argument name": (
        lambda m: _edit_program(lambda p: p["graph_module"]["module_call_graph"][0]["signature"].update(
            forward_arg_names=[f"x=open('{m}', 'w')"])), "forward argument"),
    "attribute path": (
        lambda m: _edit_program(lambda p: p["graph_module"]["signature"]["input_specs"][0]["parameter"].update(
            parameter_name='0.weight"+open("x")+"')), "attribute path"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_torch_loads_them(case: str, cnn_pt2: tuple[Any, Path],
                                                              tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    make_edit, needle = HOSTILE[case]
    path = _rewrite(cnn_pt2[1], tmp_path / "hostile.pt2", make_edit(str(marker)))
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert str(err.value).startswith("refused:") and needle in str(err.value)
    assert not marker.exists()


def test_guards_code_is_never_run(cnn_pt2: tuple[Any, Path], tmp_path: Path) -> None:
    """``ExportedProgram.module()`` runs ``guards_code`` on every call unless built with check_guards=False."""
    marker = tmp_path / "guard-ran"
    guard = f"open({str(marker)!r}, 'w') is None"
    path = _rewrite(cnn_pt2[1], tmp_path / "guards.pt2", _edit_program(lambda p: p.update(guards_code=[guard])))
    model = load_model(path)
    model.predict(rng_images(2, (1, 28, 28)))
    assert model.num_classes == 10 and not marker.exists()


def test_rewritten_but_clean_archive_still_loads(cnn_pt2: tuple[Any, Path], cnn_model: ExportedProgramModel,
                                                 tmp_path: Path) -> None:
    """The control for the hostile cases: the same rewrite without an edit is accepted and runs the same."""
    path = _rewrite(cnn_pt2[1], tmp_path / "copy.pt2", lambda items, root: None)
    x = rng_images(3, (1, 28, 28), seed=8)
    np.testing.assert_array_equal(load_model(path).predict(x).outputs, cnn_model.predict(x).outputs)


@pytest.mark.parametrize("twin", ["models/model.json", "MODELS/model.json"])
def test_clashing_member_names_are_refused(twin: str, cnn_pt2: tuple[Any, Path], tmp_path: Path) -> None:
    """Zip readers differ on which of two same-named members they read: the checked one must be the loaded one."""
    path = _rewrite(cnn_pt2[1], tmp_path / "twins.pt2", lambda items, root: None)
    with zipfile.ZipFile(path) as z:
        root = z.namelist()[0].split("/", 1)[0]
    exact = twin == "models/model.json"
    with pytest.warns(UserWarning, match="Duplicate name") if exact else contextlib.nullcontext():
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(f"{root}/{twin}", b"{}")
    with pytest.raises(ModelError, match="same name"):
        load_model(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad json", "no graph"])
def test_damaged_pt2_is_a_one_line_model_error(damage: str, cnn_pt2: tuple[Any, Path], tmp_path: Path) -> None:
    data = cnn_pt2[1].read_bytes()
    path = tmp_path / "damaged.pt2"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    elif damage == "bad json":
        _rewrite(cnn_pt2[1], path, lambda items, root: items.update({"models/model.json": b"{not json"}))
    else:
        _rewrite(cnn_pt2[1], path, lambda items, root: items.__delitem__("models/model.json"))
    with pytest.raises(ModelError):
        load_model(path)
    result = run_cli("info", str(path), "-q")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2
    assert len(lines) == 1 and lines[0].startswith("advaudit: error:") and path.name in lines[0]
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------------- CLI
def test_info_cli_shows_the_torch_export_format(cnn_pt2: tuple[Any, Path]) -> None:
    result = run_cli("info", str(cnn_pt2[1]), "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)["model"]
    assert described["format"] == "torch.export" and described["input_shape"] == [1, 28, 28]
    table = run_cli("info", str(cnn_pt2[1]), "-q")
    assert table.exit_code == 0 and "torch.export" in table.stdout


def test_attack_quick_suite_end_to_end(trained_net: torch.nn.Module, tmp_path: Path) -> None:
    path = build_pt2(trained_net, tmp_path / "mnist.pt2", metadata={"range": [0, 1]})
    report = tmp_path / "r.json"
    result = run_cli("attack", str(path), "--data", MNIST_DATA, "--n", "20", "--suite", "quick",
                     "--eps", "0.2", "--report", str(report), "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    assert json.loads(result.stdout)["robust_accuracy"] == rep["robust_accuracy"]
    assert rep["model"]["format"] == "torch.export" and rep["data"]["n"] == 20
    assert rep["clean_accuracy"] >= 0.5  # a trained model, so the attacks have something to flip
    assert 0.0 <= rep["robust_accuracy"] < rep["clean_accuracy"]
    assert {row["attack"] for row in rep["results"]} == {"fgsm", "pgd"}


def test_harden_out_must_stay_pt2(cnn_pt2: tuple[Any, Path], tmp_path: Path) -> None:
    for out in ("h.pt", "h.onnx"):
        result = run_cli("harden", str(cnn_pt2[1]), "--data", MNIST_DATA, "--eval-data", MNIST_DATA, "--eps", "0.3",
                         "--out", str(tmp_path / out))
        assert result.exit_code == 2 and "changes the model format" in result.stderr
    assert not list(tmp_path.iterdir())


def test_harden_round_trips_a_pt2_with_its_metadata_and_softmax(trained_net: torch.nn.Module,
                                                                 tmp_path: Path) -> None:
    net = torch.nn.Sequential(trained_net, torch.nn.Softmax(dim=1)).eval()
    src = build_pt2(net, tmp_path / "sm.pt2", metadata={"range": [0, 1], "class_names": list("abcdefghij")})
    out, report = tmp_path / "sm-hard.pt2", tmp_path / "r.json"
    result = run_cli("harden", str(src), "--data", MNIST_DATA, "--n", "32", "--eval-data", MNIST_DATA,
                     "--eval-offset", "500", "--eval-n", "8", "--eval-suite", "quick", "--eps", "0.3", "--epochs", "1",
                     "--steps", "1", "--train-batch", "32", "--out", str(out), "--report", str(report), "-q")
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    export = rep["hardened"]["export"]
    assert rep["hardened"]["format"] == "torch.export" and export["max_rel_diff"] < 1e-3 and export["final_softmax"]
    with zipfile.ZipFile(out) as z:
        names = {n.split("/", 1)[1] for n in z.namelist()}
    assert {"extra/advaudit.json", "extra/advaudit-harden.json"} <= names
    hardened, original = load_model(out), load_model(src)
    assert hardened.format == "torch.export" and hardened.spec.class_names == tuple("abcdefghij")
    assert hardened.details["final_softmax"] is True and hardened.details["batch_range"] == [1, None]
    x = rng_images(5, (1, 28, 28), seed=9)  # batch 5: the export's example batch was 2
    assert np.abs(hardened.predict(x).outputs - original.predict(x).outputs).max() > 1e-6  # trained
