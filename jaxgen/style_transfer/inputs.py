"""Content and style images: where they come from and how they are sized.

An image reference is a file path (anything Pillow reads), ``skimage:<name>`` (an image that
ships with scikit-image, e.g. ``skimage:chelsea``) or ``sklearn:<file>`` (scikit-learn's
``load_sample_image``, e.g. ``sklearn:flower.jpg``); the bundled ones work offline.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from jaxgen.errors import UserError

SKIMAGE_IMAGES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
)
SKLEARN_IMAGES = ("flower.jpg", "china.jpg")


def load_image(ref: str, key: str) -> np.ndarray:
    """Reads ``ref`` -> uint8 ``[H, W, 3]``; UserError naming the config ``key`` when it can't."""
    if ref.startswith("skimage:"):
        name = ref.split(":", 1)[1]
        if name not in SKIMAGE_IMAGES:
            raise UserError(f"config key {key}={ref!r}: expected skimage:<one of {SKIMAGE_IMAGES}>")
        import skimage.data

        image = getattr(skimage.data, name)()
    elif ref.startswith("sklearn:"):
        name = ref.split(":", 1)[1]
        if name not in SKLEARN_IMAGES:
            raise UserError(f"config key {key}={ref!r}: expected sklearn:<one of {SKLEARN_IMAGES}>")
        from sklearn.datasets import load_sample_image

        image = load_sample_image(name)
    else:
        if not ref or not os.path.isfile(ref):
            raise UserError(f"config key {key}={ref!r}: no such image file")
        try:
            with Image.open(ref) as im:
                image = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise UserError(
                f"config key {key}={ref!r}: not a readable image ({type(e).__name__})"
            ) from None
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3].astype(np.uint8)
    if min(image.shape[:2]) < 8:
        raise UserError(f"config key {key}={ref!r}: image of shape {image.shape} is too small")
    return image


def output_shape(image: np.ndarray, size: int) -> tuple[int, int]:
    """``(H, W)`` with the longer side ``size`` and the aspect ratio of uint8 ``[h, w, 3]``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def shape_with_area(image: np.ndarray, area: float) -> tuple[int, int]:
    """``(H, W)`` with ``H * W`` about ``area`` and the aspect ratio of ``[h, w, 3]``."""
    h, w = image.shape[:2]
    scale = math.sqrt(area / (h * w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``[h, w, 3]`` -> float32 ``[H, W, 3]`` in ``[0, 1]`` (bicubic, Pillow)."""
    out = Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(out, np.float32) / 255.0
