"""Image grids and PNG files."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from jaxgen import paths


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [0, 1] -> uint8 [0, 255] (clipped, rounded)."""
    return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> one uint8 ``[rows*(H+p)+p, cols*(W+p)+p, C]`` grid."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, np.uint8
    )
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image
    return grid


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, C]`` image (C = 1 or 3) as a PNG file to ``path`` (a local
    path or a ``gs://`` / ``s3://`` URL), whole or not at all."""
    image = np.asarray(image)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    paths.write_bytes(path, buffer.getvalue())
