"""FreeEagle (Fu et al. 2023): the data-free scanner on the later layers.

It must flag the bundled BadNets sample with its target and pass the clean sample, cut a graph only
where every path passes, give the same evidence for the same seed, and leave TorchScript models
(which have no graph to cut) to the other scanners under ``--method all``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import fx, nn

from advaudit import api
from advaudit.backdoor.freeeagle import FreeEagle, anomaly_metric, later_part, metric_p_value
from advaudit.errors import ModelError, UsageError
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS, export_onnx, small_cnn

BADNETS = SAMPLE_MODELS / "mnist_badnets.onnx"
CLEAN = SAMPLE_MODELS / "mnist_cnn.onnx"
DATA = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"


def test_flags_the_badnets_sample_with_its_target_and_passes_the_clean_sample() -> None:
    bad = FreeEagle().scan(load_model(BADNETS), None, None, seed=0)
    assert bad.backdoored and bad.suspected_targets == [7]
    assert bad.evidence["p_value"] < 0.05 and bad.evidence["anomaly_metric"] > 2.13  # K = 10's 95% point
    assert bad.evidence["non_negative"] and bad.evidence["cut_shape"] == [32, 7, 7]  # the last feature map
    clean = FreeEagle().scan(load_model(CLEAN), None, None, seed=0)
    assert not clean.backdoored and clean.suspected_targets == []
    assert clean.evidence["p_value"] > 0.05
    assert [c.label for c in clean.classes] == list(range(10))


def test_same_seed_same_evidence() -> None:
    model = load_model(BADNETS)
    a, b = (FreeEagle(steps=40).scan(model, None, None, seed=3) for _ in range(2))
    assert a.to_dict() | {"time_s": 0} == b.to_dict() | {"time_s": 0}


def test_metric_and_its_null() -> None:
    v = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 100])
    assert anomaly_metric(v) == pytest.approx((100 - 8) / (8 - 3))  # index quartiles of the reference code
    assert metric_p_value(0.0, 43) == 1.0
    ps = [metric_p_value(m, 43) for m in (1.0, 1.94, 3.0, 50.0)]
    assert ps == sorted(ps, reverse=True) and ps[1] == pytest.approx(0.05, abs=0.01) and ps[-1] < 1e-3


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.relu(h + self.b(h))  # a skip connection around b
        return self.head(h.flatten(1))


def test_a_cut_must_be_passed_by_every_path() -> None:
    torch.manual_seed(0)
    gm = fx.symbolic_trace(_Residual().eval())
    names = [n.name for n in gm.graph.nodes]
    with pytest.raises(ModelError, match="does not cut the network"):
        later_part(gm, "b")  # the sum also reads relu(a(x)) from before the cut
    cut = names[names.index("add") + 1]  # the relu after the sum: every path passes it
    tail = later_part(gm, cut)
    x = torch.rand(2, 1, 8, 8)
    h = torch.relu(gm.a(x))
    h = torch.relu(h + gm.b(h))
    torch.testing.assert_close(tail(h), gm(x))


def test_torchscript_is_refused_alone_and_left_out_of_all(tmp_path) -> None:
    from advaudit_testing.training import save_torchscript

    path = tmp_path / "m.pt"
    save_torchscript(small_cnn(), str(path), (1, 28, 28))
    model = load_model(path)
    with pytest.raises(ModelError, match="not one \\(TorchScript\\)"):
        FreeEagle(steps=5).scan(model, None, None)
    assert FreeEagle.unsupported(model) and FreeEagle.unsupported(load_model(BADNETS)) is None
    options = api.ScanOptions(model=api.ModelOptions(path=str(path)), data=api.DataOptions(path=str(DATA), n=100),
                              method="all", steps=5)
    result = api.scan_backdoor(options)
    assert [r.method for r in result.scan.results] == ["neural-cleanse", "mm-bd"]


def test_all_leaves_it_out_below_four_classes(tmp_path) -> None:
    torch.manual_seed(0)
    path = export_onnx(small_cnn(classes=3), tmp_path / "three.onnx", torch.zeros(1, 1, 28, 28))
    model = load_model(path)
    assert "4 classes" in (FreeEagle.unsupported(model) or "")
    with pytest.raises(UsageError, match="at least 4 classes"):
        FreeEagle(steps=5).scan(model, None, None)
