"""k-means colour quantisation (CS229 paper 004: 16 colours for MNIST, 50 for CIFAR-10)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Defense, need


def kmeans_colours(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm on every image's pixel colours at once.

    ``x`` is (N, C, H, W); returns the quantised images and the centroids (N, k, C).  Initial
    centroids are k distinct pixels per image drawn from ``generator``; an empty cluster keeps its
    centroid.
    """
    n, c, h, w = x.shape
    pts = x.reshape(n, c, h * w).transpose(1, 2)  # (N, P, C)
    p = h * w
    k = min(k, p)
    order = torch.rand(n, p, generator=generator).argsort(dim=1)[:, :k].to(x.device)
    centroids = torch.gather(pts, 1, order.unsqueeze(-1).expand(n, k, c)).clone()
    assign = torch.zeros(n, p, dtype=torch.long, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(pts, centroids).argmin(dim=2)  # (N, P)
        sums = torch.zeros_like(centroids).scatter_add_(1, assign.unsqueeze(-1).expand(n, p, c), pts)
        counts = torch.zeros(n, k, dtype=x.dtype, device=x.device).scatter_add_(1, assign, torch.ones_like(pts[..., 0]))
        filled = counts > 0
        new = sums / counts.clamp_min(1).unsqueeze(-1)
        moved = torch.where(filled.unsqueeze(-1), new, centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    assign = torch.cdist(pts, centroids).argmin(dim=2)
    out = torch.gather(centroids, 1, assign.unsqueeze(-1).expand(n, p, c))
    return out.transpose(1, 2).reshape(n, c, h, w), centroids


class KMeans(Defense):
    """Replace every pixel by the nearest of ``k`` colours found by k-means on that image.

    All images' Lloyd iterations run at once (batched in torch); the initial centroids are random
    pixels (seeded).  The output has at most ``k`` distinct colours per image.  BPDA backward: the
    identity.
    """

    k: int
    iters: int

    name: ClassVar[str] = "kmeans"
    randomized: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"k": 16, "iters": 20}

    def check_params(self) -> None:
        need(self.k >= 1, self.name, f"k must be >= 1, got {self.k}")
        need(self.iters >= 0, self.name, f"iters must be >= 0, got {self.iters}")

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return kmeans_colours(x, int(self.k), int(self.iters), generator)[0]
