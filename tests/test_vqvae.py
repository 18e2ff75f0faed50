"""VQ-VAE defence: training reduces reconstruction error, safetensors round trip, BPDA, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.cli import main
from advaudit.defenses import build_stack
from advaudit.defenses.vqvae import load_vqvae, save_vqvae, train_vqvae
from advaudit.errors import DataError, ModelError

from .conftest import SAMPLE_MODELS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x = np.load(SAMPLE_MODELS / "data" / "mnist_test_1k.npz")["x"][:128].astype(np.float32)[:, None] / 255.0
    x = x.reshape(128, 1, 28, 28)
    losses = []
    net, rec = train_vqvae(x, epochs=3, batch_size=32, lr=2e-3, hidden=8, codes=16, dim=4, seed=0,
                           progress=lambda e, t, r: losses.append(r))
    path = tmp_path_factory.mktemp("vq") / "m.safetensors"
    save_vqvae(path, net, (1, 28, 28), {"note": "test"})
    return x, net, rec, losses, path


def test_training_reduces_reconstruction_error(trained):
    _, _, rec, losses, _ = trained
    assert len(losses) == 3 and losses[-1] < losses[0] and rec == losses[-1]


def test_safetensors_round_trip_and_defence(trained):
    x, net, _, _, path = trained
    loaded, shape, meta = load_vqvae(path)
    assert shape == (1, 28, 28) and meta["format"] == "advaudit.vqvae/1"
    xt = torch.from_numpy(x[:8])
    with torch.no_grad():
        assert torch.allclose(loaded(xt)[0], net(xt)[0], atol=1e-6)
    (d,) = build_stack([f"vqvae:path={path}"])
    out = d(xt)
    assert out.shape == xt.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, d(xt))
    assert open(path, "rb").read(8) != b"PK\x03\x04"  # not a zip/pickle


def test_bpda_uses_the_vqvae_gradient(trained):
    x, _, _, _, path = trained
    (d,) = build_stack([f"vqvae:path={path}"])
    xt = torch.from_numpy(x[:2]).requires_grad_(True)
    out = d.bpda(xt)
    assert torch.allclose(out, d(xt.detach()), atol=1e-6)
    (g,) = torch.autograd.grad(out.sum(), xt)
    assert g.abs().sum() > 0 and not torch.allclose(g, torch.ones_like(g))


def test_wrong_shape_and_bad_files(trained, tmp_path):
    _, _, _, _, path = trained
    (d,) = build_stack([f"vqvae:path={path}"])
    with pytest.raises(DataError, match="trained on inputs of shape 1,28,28"):
        d(torch.rand(2, 3, 32, 32))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor file at all")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        build_stack([f"vqvae:path={bad}"])
    with pytest.raises(ModelError, match="not found"):
        build_stack([f"vqvae:path={tmp_path / 'missing.safetensors'}"])


def test_train_vqvae_cli_and_shape_mismatch_exit_2(tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    data = str(SAMPLE_MODELS / "data" / "cifar10_test_1k.npz")
    rc = main(["-q", "defend", "train-vqvae", "--data", data, "--n", "16", "--epochs", "1", "--hidden", "4",
               "--codes", "4", "--dim", "2", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert load_vqvae(out)[1] == (3, 32, 32)
    capsys.readouterr()
    rc = main(["defend", "purify", "--defense", f"vqvae:path={out}", "--data",
               str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz"), "--n", "2", "--out", str(tmp_path / "p.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "trained on inputs of shape 3,32,32" in err and len(err.strip().splitlines()) == 1
    assert main(["defend", "train-vqvae", "--data", data, "--out", str(tmp_path / "v.pt")]) == 2
