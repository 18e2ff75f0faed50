"""Resize and centre-crop, with torchvision's semantics (``Resize`` then ``CenterCrop``).

``--resize 256 --crop 224`` is the standard ImageNet evaluation transform: the shorter side is scaled
to 256 keeping the aspect ratio (the longer side ``int(256 * long / short)``), bilinear with
antialiasing, then the central 224x224 is cut out (zero-padded where the image is smaller, the offset
rounded as torchvision rounds it).  ``--resize H,W`` scales to exactly HxW.

* uint8 images with 1 or 3 channels are resampled by Pillow (``Image.resize(..., BILINEAR)``, no
  reducing gap), exactly what torchvision does to the PIL images of an ``ImageFolder``: the pixels
  equal those of ``transforms.Compose([Resize(256), CenterCrop(224)])`` on the same file.
* Other data (float, or uint8 with another channel count) are resampled like torchvision's tensor
  path: ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` in float32; uint8 results
  are rounded and clipped back to uint8.

Everything here is a pure function of its inputs; torch is imported only for the tensor path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ImageTransform", "center_crop_array", "crop_offsets", "parse_size", "resize_crop_array", "resize_crop_batch",
    "resize_crop_pil", "resized_size",
]

Size = tuple[int, ...]  # (S,): shorter side; (H, W): exact size


def parse_size(text: str | int | Size | None, option: str) -> Size | None:
    """``"256"`` -> ``(256,)``, ``"224,192"`` -> ``(224, 192)`` (height, width); None stays None."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        parts: list[Any] = [text]
    elif isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise DataError(f"{option} {text!r} is not a size", f"give N or H,W, e.g. {option} 224") from None
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise DataError(f"{option} {text!r} is not a size", f"give N or H,W of positive integers, e.g. {option} 224")
    return values


def resized_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """Output (height, width) of torchvision's ``Resize(size)``: one number scales the shorter side
    to it and the longer side to ``int(size * long / short)``; two numbers are the exact size."""
    if len(size) == 2:
        return size[0], size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """``(pad_top, pad_left, top, left)`` of torchvision's ``CenterCrop``: pad with zeros to at least
    the crop size (the odd pixel at the bottom/right), then cut at ``round((size - crop) / 2)``."""
    pad_top = (crop_h - height) // 2 if crop_h > height else 0
    pad_left = (crop_w - width) // 2 if crop_w > width else 0
    height2 = height + (crop_h - height if crop_h > height else 0)
    width2 = width + (crop_w - width if crop_w > width else 0)
    return pad_top, pad_left, int(round((height2 - crop_h) / 2.0)), int(round((width2 - crop_w) / 2.0))


def center_crop_array(x: np.ndarray, crop: Size, channels_first: bool = True) -> np.ndarray:
    """Centre-crop one image, (C, H, W) (or (H, W, C) / (H, W) with ``channels_first=False``)."""
    crop_h, crop_w = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    h_axis, w_axis = (x.ndim - 2, x.ndim - 1) if channels_first else (0, 1)
    height, width = x.shape[h_axis], x.shape[w_axis]
    if (height, width) == (crop_h, crop_w):
        return x
    pad_top, pad_left, top, left = crop_offsets(height, width, crop_h, crop_w)
    if crop_h > height or crop_w > width:
        pad = [(0, 0)] * x.ndim
        pad[h_axis] = (pad_top, max(crop_h - height, 0) - pad_top)
        pad[w_axis] = (pad_left, max(crop_w - width, 0) - pad_left)
        x = np.pad(x, pad)
    index: list[slice] = [slice(None)] * x.ndim
    index[h_axis] = slice(top, top + crop_h)
    index[w_axis] = slice(left, left + crop_w)
    return x[tuple(index)]


def resize_crop_pil(image: Image.Image, resize: Size | None, crop: Size | None) -> np.ndarray:
    """A PIL image through Resize(resize) and CenterCrop(crop), as an (H, W) or (H, W, C) array."""
    from PIL import Image

    if resize is not None:
        height, width = resize_target = resized_size(image.height, image.width, resize)
        if resize_target != (image.height, image.width):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(image)
    return arr if crop is None else center_crop_array(arr, crop, channels_first=False)


def resize_crop_array(x: np.ndarray, resize: Size | None, crop: Size | None) -> np.ndarray:
    """One (C, H, W) image through Resize(resize) and CenterCrop(crop); same dtype (see module doc)."""
    if x.ndim != 3:
        raise DataError(f"--resize/--crop need images (C, H, W); got a sample of shape {tuple(x.shape)}")
    if resize is not None:
        target = resized_size(x.shape[1], x.shape[2], resize)
        if target != tuple(x.shape[1:]):
            if x.dtype == np.uint8 and x.shape[0] in (1, 3):
                from PIL import Image

                img = Image.fromarray(x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0)))
                out = resize_crop_pil(img, resize, None)
                x = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
            else:
                x = _resize_tensor(x, target)
    return x if crop is None else np.ascontiguousarray(center_crop_array(x, crop))


def _resize_tensor(x: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """torchvision's tensor resize: bilinear, antialias, in float32 (float64 data in float64); uint8
    rounded and clipped back, other integer types returned as float32."""
    import torch

    work = np.float64 if x.dtype == np.float64 else np.float32
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=work))[None]
    out = torch.nn.functional.interpolate(t, size=target, mode="bilinear", align_corners=False, antialias=True)[0]
    if x.dtype == np.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out.numpy().astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32, copy=False)


def resize_crop_batch(
    x: np.ndarray, resize: Size | None, crop: Size | None, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Every image of an (N, C, H, W) batch through Resize and CenterCrop."""
    if resize is None and crop is None:
        return x
    if x.ndim != 4:
        raise DataError(
            f"--resize/--crop need images (N, C, H, W); the data has shape {tuple(x.shape)}",
            "drop --resize/--crop for flat inputs",
        )
    if len(x) == 0:
        return x
    first = resize_crop_array(x[0], resize, crop)
    out = np.empty((len(x), *first.shape), dtype=first.dtype)
    out[0] = first
    for i in range(1, len(x)):
        out[i] = resize_crop_array(x[i], resize, crop)
        if progress is not None:
            progress(i + 1, len(x))
    return out


@dataclass(frozen=True)
class ImageTransform:
    """``--resize`` / ``--crop`` as given (None: not asked for)."""

    resize: Size | None = None
    crop: Size | None = None

    @classmethod
    def parse(cls, resize: Any = None, crop: Any = None) -> ImageTransform:
        return cls(parse_size(resize, "--resize"), parse_size(crop, "--crop"))

    def __bool__(self) -> bool:
        return self.resize is not None or self.crop is not None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an HxW image after the transform."""
        if self.resize is not None:
            height, width = resized_size(height, width, self.resize)
        if self.crop is not None:
            height, width = (self.crop[0], self.crop[0]) if len(self.crop) == 1 else (self.crop[0], self.crop[1])
        return height, width

    def describe(self) -> dict[str, Any]:
        """For reports: ``{"resize": [256], "crop": [224]}`` (None where not asked for)."""
        return {"resize": None if self.resize is None else list(self.resize),
                "crop": None if self.crop is None else list(self.crop)}
