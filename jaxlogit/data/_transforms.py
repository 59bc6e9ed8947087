"""torchvision's ImageNet evaluation transform, written with PIL.

``Resize(256)`` (shorter side to 256, bilinear, antialiased as PIL always is), then
``CenterCrop(224)``, then ``ToTensor`` — but channels last: float32 ``(224, 224, 3)`` in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

RESIZE = 256
CROP = 224


def resized_size(width: int, height: int, shorter: int = RESIZE) -> tuple[int, int]:
    """``(width, height)`` after scaling the shorter side to ``shorter`` (torchvision's rounding)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """PIL ``(left, top, right, bottom)`` of the centred ``crop`` square (torchvision's rounding)."""
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    return left, top, left + crop, top + crop


def eval_transform(image: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """Resize the shorter side, centre-crop and scale to [0, 1].

    Args:
      image: any PIL image; grey, palette, CMYK or RGBA images are converted to RGB.
      resize: target length of the shorter side (must be >= ``crop``).
      crop: side of the square centre crop.

    Returns:
      float32 ``(crop, crop, 3)`` in [0, 1].
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = resized_size(*image.size, shorter=resize)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    image = image.crop(center_crop_box(*image.size, crop=crop))
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def resize_for(crop: int) -> int:
    """The shorter side that ``crop`` is cut from, in torchvision's ratio 256/224 (256 for 224)."""
    return round(crop * RESIZE / CROP)


def decode_and_transform(encoded: bytes, crop: int = CROP) -> np.ndarray:
    """``eval_transform`` of an encoded image (JPEG, PNG, ...): float32 ``(crop, crop, 3)``."""
    with Image.open(io.BytesIO(encoded)) as image:
        return eval_transform(image, resize_for(crop), crop)


def load_and_transform(path, crop: int = CROP) -> np.ndarray:
    """``eval_transform`` of the image file at ``path``: float32 ``(crop, crop, 3)``."""
    with Image.open(path) as image:
        return eval_transform(image, resize_for(crop), crop)
