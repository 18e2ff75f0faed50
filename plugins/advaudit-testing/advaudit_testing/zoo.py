"""Small reference image classifiers in plain PyTorch.

These architectures back the bundled sample models (see ``sample_models/``) and let users load the
public pretrained checkpoints that advaudit's tests and benchmarks use. Every model takes float32
NCHW input; ``Normalize`` can be prepended when a network expects standardised input, so that the
exported graph accepts images in [0, 1].
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GtsrbCNN",
    "LeNet5Advertorch",
    "MnistCNN",
    "Normalize",
    "ResNet20",
    "load_lenet5_advertorch",
    "load_resnet20_akamaster",
]


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std`` for NCHW input."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MnistCNN(nn.Module):
    """LeNet-style CNN for MNIST: input (N, 1, 28, 28) in [0, 1], output 10 logits.

    conv 5x5 (1->32), ReLU, max-pool 2, conv 5x5 (32->64), ReLU, max-pool 2,
    linear 1024->128, ReLU, linear 128->10.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5Advertorch(nn.Module):
    """The MNIST ``LeNet5`` of advertorch's examples, with its exact state-dict keys.

    conv1 3x3 (1->32, padding 1), ReLU, max-pool 2, conv2 3x3 (32->64, padding 1), ReLU,
    max-pool 2, linear1 3136->200, ReLU, linear2 200->10. Input (N, 1, 28, 28) in [0, 1].
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool1(self.relu1(self.conv1(x)))
        out = self.maxpool2(self.relu2(self.conv2(out)))
        out = torch.flatten(out, 1)
        return self.linear2(self.relu3(self.linear1(out)))


class _ChannelPadShortcut(nn.Module):
    """ResNet "option A" shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, pad_channels: int) -> None:
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pad_channels
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ChannelPadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10 (He et al. 2016), laid out like akamaster's ``resnet.py``.

    conv1 3x3 (16) + BN, three stages of three basic blocks (16, 32, 64 channels; stages 2 and 3
    stride 2 with zero-padding "option A" shortcuts), global average pool, linear 64->10.
    Input (N, 3, 32, 32), normalised as the weights expect (see ``load_resnet20_akamaster``).
    """

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [_BasicBlock(in_planes, planes, stride)]
        layers += [_BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


class GtsrbCNN(nn.Module):
    """Small CNN for GTSRB: input (N, 3, 32, 32) RGB in [0, 1], output 43 logits.

    Three conv 3x3 + BN + ReLU + max-pool stages (32, 64, 128 channels), 2x2 average pool,
    dropout and linear 512->43 (about 116K parameters).
    """

    def __init__(self, num_classes: int = 43, dropout: float = 0.3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *self._stage(3, 32),
            *self._stage(32, 64),
            *self._stage(64, 128),
        )
        self.classifier = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(128 * 2 * 2, num_classes),
        )

    @staticmethod
    def _stage(in_channels: int, out_channels: int) -> list[nn.Module]:
        return [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _load_state_dict(path: str | Path) -> Mapping[str, object]:
    """Load a checkpoint on CPU without unpickling arbitrary objects."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_lenet5_advertorch(path: str | Path) -> nn.Module:
    """Load an advertorch MNIST LeNet5 state dict (clean or adversarially trained), in eval mode."""
    model = LeNet5Advertorch()
    model.load_state_dict(_load_state_dict(path), strict=True)
    return model.eval()


def load_resnet20_akamaster(path: str | Path) -> nn.Module:
    """Load akamaster's pretrained CIFAR-10 ResNet-20 checkpoint, in eval mode.

    The checkpoint is ``{'best_prec1': ..., 'state_dict': {...}}`` saved from a ``DataParallel``
    model, so every key carries a ``module.`` prefix, which is stripped. The network expects input
    normalised with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); wrap it as
    ``nn.Sequential(Normalize(mean, std), model)`` to feed it images in [0, 1].
    """
    checkpoint = _load_state_dict(path)
    state_dict = (
        checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    )
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{path}: expected a state dict or a dict with 'state_dict'")
    prefix = "module."
    stripped = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    model = ResNet20()
    # Old checkpoints lack BatchNorm's num_batches_tracked; BatchNorm fills it in itself when the
    # state dict carries no version metadata, so strict loading still checks every other key.
    model.load_state_dict(stripped, strict=True)
    return model.eval()
