"""Apply a defence stack to a data set (the API behind ``advaudit defend purify``)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError
from .base import Defense
from .defended import apply_stack, draw_seed


def purify_array(
    x: np.ndarray,
    stack: Sequence[Defense],
    bounds: tuple[float, float] = (0.0, 1.0),
    *,
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Purify images ``x`` (N, C, H, W; uint8 is read as [0, 255] and returned as uint8).

    Float inputs must lie in ``bounds``; the output has the input's dtype.  Randomised defences
    draw from one generator seeded with ``seed`` (the same stream as verification draw 0 of
    ``advaudit attack --defense`` with that seed).
    """
    if x.ndim != 4:
        raise DataError(f"defences take image batches (N, C, H, W); the data has shape {tuple(x.shape)}")
    is_u8 = x.dtype == np.uint8
    lo, hi = (0.0, 255.0) if is_u8 else bounds
    xf = x.astype(np.float32)
    if not is_u8:
        if not np.all(np.isfinite(xf)):
            raise DataError("the data contains NaN or inf values")
        if xf.min() < lo or xf.max() > hi:
            raise DataError(
                f"the data's values span {xf.min():g}..{xf.max():g}, outside the range {lo:g},{hi:g}",
                "give its value range with --range LO,HI",
            )
    for d in stack:
        d.fits(tuple(x.shape[1:]))
    gen = torch.Generator().manual_seed(draw_seed(seed, 0))
    out = np.empty_like(xf)
    for i in range(0, len(xf), batch_size):
        out[i : i + batch_size] = apply_stack(stack, torch.from_numpy(xf[i : i + batch_size]), (lo, hi), gen).numpy()
        if progress is not None:
            progress(min(i + batch_size, len(xf)), len(xf))
    if is_u8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)
