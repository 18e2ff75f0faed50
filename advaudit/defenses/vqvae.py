"""VQ-VAE purification (van den Oord et al. 2017; CS229 paper 004, optionally trained on noisy inputs).

A small VQ-VAE is trained on clean images (:func:`train_vqvae`, ``advaudit defend train-vqvae``)
and used as an encode-quantise-decode transformation.  Files are safetensors (no pickle): the
weights plus metadata ``format = advaudit.vqvae/1``, ``input_shape``, ``hidden``, ``codes``,
``dim``.  The quantiser passes gradients straight through, so BPDA uses the network's own
gradient.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ModelError, first_line
from .base import Defense, need

FORMAT = "advaudit.vqvae/1"


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class VQVAENet(nn.Module):
    """Encoder (two stride-2 convolutions, a residual block), codebook, mirrored decoder."""

    def __init__(self, channels: int, hidden: int = 64, codes: int = 128, dim: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, 2, 1), _Residual(hidden), nn.ReLU(),
            nn.Conv2d(hidden, dim, 1),
        )
        self.codebook = nn.Parameter(torch.randn(codes, dim) / math.sqrt(dim))
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), _Residual(hidden), nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, channels, 4, 2, 1),
        )

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest code per latent vector; returns (quantised latents, code indices)."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(flat, self.codebook).argmin(dim=1)
        q = self.codebook[idx].reshape(n, h, w, d).permute(0, 3, 1, 2)
        return q, idx

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction in [0, 1], encoder output, quantised latents); straight-through gradients."""
        z = self.encoder(x * 2 - 1)
        q, _ = self.quantise(z)
        st = z + (q - z).detach()
        return torch.sigmoid(self.decoder(st)), z, q


def vqvae_loss(net: VQVAENet, x_in: torch.Tensor, target: torch.Tensor, beta: float) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Reconstruction + codebook + beta * commitment loss (van den Oord et al. 2017, eq. 3)."""
    recon, z, q = net(x_in)
    rec = F.mse_loss(recon, target)
    return rec + F.mse_loss(q, z.detach()) + beta * F.mse_loss(z, q.detach()), rec


def train_vqvae(
    x: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-4,
    hidden: int = 64,
    codes: int = 128,
    dim: int = 32,
    beta: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[VQVAENet, float]:
    """Train on images ``x`` (N, C, H, W) in [0, 1]; returns the net and its final reconstruction MSE.

    ``noise`` > 0 adds Gaussian noise of that standard deviation to the inputs (the target stays
    clean), as in the CS229 paper.  Defaults follow the paper where it is specific (lr 2e-4, beta 1),
    scaled down in size (hidden 64 instead of 256, 128 codes instead of 512).  Dead codes are
    re-seeded from random encoder outputs after every epoch.
    """
    n, c, h, w = x.shape
    if h % 4 or w % 4:
        raise DataError(f"the VQ-VAE needs heights and widths divisible by 4, got {h}x{w}")
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    net = VQVAENet(c, hidden, codes, dim)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():  # codebook from encoder outputs of random images: no dead codes at the start
        z = net.encoder(xt[torch.randperm(n, generator=g)[: max(1, min(n, 256))]] * 2 - 1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, dim)
        net.codebook.copy_(flat[torch.randint(len(flat), (codes,), generator=g)])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rec = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        used = torch.zeros(codes, dtype=torch.bool)
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            xb = xt[order[i : i + batch_size]]
            x_in = (xb + noise * torch.randn(xb.shape, generator=g)).clamp(0, 1) if noise > 0 else xb
            loss, r = vqvae_loss(net, x_in, xb, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                used[net.quantise(net.encoder(x_in * 2 - 1))[1].unique()] = True
            total += float(r.detach()) * len(xb)
            count += len(xb)
        rec = total / max(count, 1)
        dead = (~used).nonzero().flatten()
        if len(dead):
            with torch.no_grad():
                zb = net.encoder(xt[torch.randperm(n, generator=g)[:256]] * 2 - 1).permute(0, 2, 3, 1).reshape(-1, dim)
                net.codebook[dead] = zb[torch.randint(len(zb), (len(dead),), generator=g)]
        if progress is not None:
            progress(epoch + 1, epochs, rec)
    net.eval()
    return net, rec


def save_vqvae(
    path: str | Path, net: VQVAENet, input_shape: tuple[int, ...], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``net`` as safetensors with its metadata (atomically)."""
    from safetensors.torch import save_file

    from ..io.files import write_atomic

    meta = {
        "format": FORMAT,
        "input_shape": ",".join(str(int(s)) for s in input_shape),
        "hidden": str(net.encoder[0].out_channels),
        "codes": str(net.codebook.shape[0]),
        "dim": str(net.codebook.shape[1]),
        "info": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    return write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_vqvae(path: str | Path) -> tuple[VQVAENet, tuple[int, int, int], dict[str, str]]:
    """Read a file written by :func:`save_vqvae`; one-line errors for anything else."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"VQ-VAE file not found: {p}", "train one with advaudit defend train-vqvae")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ModelError(f"{p.name} is not a readable safetensors file ({first_line(exc, 120)})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{p.name} is not an advaudit VQ-VAE (format {meta.get('format')!r})")
    try:
        shape = tuple(int(s) for s in meta["input_shape"].split(","))
        hidden, codes, dim = int(meta["hidden"]), int(meta["codes"]), int(meta["dim"])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{p.name}: broken VQ-VAE file ({first_line(exc, 120)})") from None
    if len(shape) != 3 or not all(1 <= v <= 65536 for v in shape):
        raise ModelError(f"{p.name}: input_shape must be C,H,W, got {meta['input_shape'][:40]}")
    if not (1 <= hidden <= 4096 and 2 <= codes <= 65536 and 1 <= dim <= 4096):  # checked before allocating
        raise ModelError(f"{p.name}: broken VQ-VAE file (hidden {hidden}, codes {codes}, dim {dim})")
    try:
        net = VQVAENet(shape[0], hidden, codes, dim)
        net.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise ModelError(f"{p.name}: broken VQ-VAE file ({first_line(exc, 120)})") from None
    net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net, (shape[0], shape[1], shape[2]), meta


class VQVAE(Defense):
    """Encode, quantise to the nearest codebook vectors, and decode with a trained VQ-VAE.

    ``path`` names a file from ``advaudit defend train-vqvae`` (safetensors).  Inputs must have the
    shape it was trained on.  Deterministic and differentiable (straight-through quantiser), so BPDA
    uses the network's own gradient.
    """

    path: str

    name: ClassVar[str] = "vqvae"
    differentiable: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"path": ""}

    def check_params(self) -> None:
        need(bool(self.path), self.name, "needs path=FILE (a VQ-VAE from advaudit defend train-vqvae)")
        self._net, self._shape, _ = load_vqvae(self.path)

    def fits(self, shape: tuple[int, ...]) -> None:
        if tuple(shape) != self._shape:
            raise DataError(
                f"the VQ-VAE {Path(self.path).name} was trained on inputs of shape {','.join(map(str, self._shape))}, "
                f"the data has {','.join(map(str, shape))}",
                "train one for this data with advaudit defend train-vqvae",
            )

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.fits(tuple(x.shape[1:]))
        net = self._net.to(x.device)
        return net(x)[0]
