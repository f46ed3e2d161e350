"""The ``sprites`` source: procedurally drawn shapes with known factors and captions.

Each image is one shape on a black background, drawn with numpy (4x4 supersampled
for anti-aliased edges). Its factors, all discrete, are drawn from a PRNG seeded by
``(split, index)``, so any item can be made on its own and is the same every time:

=========  ==========================================================
shape      square, circle, triangle, heart, star (the ``label``)
colour     red, green, blue, yellow, purple, white
scale      small, medium, large
rotation   0, 20, 40, 60 degrees (not named in captions)
position   a 3x3 grid: top left ... bottom right
=========  ==========================================================

Captions name scale, colour, shape and position: "a small red heart in the top
left". Some (shape, colour) pairs never appear in the ``train`` split; the
``heldout`` split has only those pairs and ``test`` has every pair, so a model can
be asked for combinations it has never seen together.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxgen.errors import UserError

SHAPES = ("square", "circle", "triangle", "heart", "star")
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
COLOUR_RGB = np.array(
    [[230, 40, 40], [40, 200, 60], [50, 100, 255], [245, 220, 40], [170, 60, 230], [240, 240, 240]],
    np.float32,
)
SCALES = ("small", "medium", "large")
SCALE_RADIUS = (0.15, 0.21, 0.27)  # circumradius, as a fraction of the image side
ROTATIONS_DEG = (0.0, 20.0, 40.0, 60.0)
POSITIONS = (
    "in the top left", "at the top", "in the top right",
    "on the left", "in the center", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
)  # fmt: skip
POSITION_CENTRES = (0.29, 0.5, 0.71)  # grid centres, as fractions of the image side
FACTOR_NAMES = ("shape", "colour", "scale", "rotation", "position")
FACTOR_SIZES = (len(SHAPES), len(COLOURS), len(SCALES), len(ROTATIONS_DEG), len(POSITIONS))

# (shape, colour) pairs absent from ``train``: every shape and every colour still
# occurs in training with other partners.
HELDOUT_PAIRS = frozenset((s, (2 * s + 1) % len(COLOURS)) for s in range(len(SHAPES)))

SPLIT_SIZES = {"train": 60_000, "test": 10_000, "heldout": 5_000}
_SPLIT_CODES = {"train": 0, "test": 1, "heldout": 2}
CAPTION_TEMPLATES = (
    "a {scale} {colour} {shape} {position}",
    "{position} there is a {scale} {colour} {shape}",
    "a {colour} {shape}, {scale}, {position}",
)
SUPERSAMPLE = 4


def caption_for_factors(factors, template: int = 0) -> str:
    """The caption of ``factors`` (int array in the order of :data:`FACTOR_NAMES`)."""
    shape, colour, scale, _, position = (int(f) for f in factors)
    return CAPTION_TEMPLATES[template].format(
        scale=SCALES[scale],
        colour=COLOURS[colour],
        shape=SHAPES[shape],
        position=POSITIONS[position],
    )


def _corpus_entries() -> list[tuple[tuple[int, ...], int]]:
    return [
        ((s, c, z, 0, p), t)
        for s in range(len(SHAPES))
        for c in range(len(COLOURS))
        for z in range(len(SCALES))
        for p in range(len(POSITIONS))
        for t in range(len(CAPTION_TEMPLATES))
    ]


def caption_corpus() -> tuple[str, ...]:
    """Every caption the source can give (the tokenizer corpus)."""
    return tuple(caption_for_factors(f, t) for f, t in _corpus_entries())


def caption_corpus_factors() -> np.ndarray:
    """int32 [len(caption_corpus()), 5]: the factors each corpus caption names (rotation 0)."""
    return np.array([f for f, _ in _corpus_entries()], np.int32)


def _polygon(radii: np.ndarray, start_deg: float = 90.0) -> np.ndarray:
    """Vertices [K, 2] (x, y with y up) of a polygon with vertex radii ``radii``."""
    angles = np.deg2rad(start_deg) + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)


_POLYGONS = {
    "square": _polygon(np.full(4, 1.0), 45.0),
    "triangle": _polygon(np.full(3, 1.0)) + np.array([0.0, -0.15]),
    "star": _polygon(np.tile([1.0, 0.45], 5)),
}


def _inside_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: bool mask of points (x, y) inside the closed polygon."""
    inside = np.zeros(x.shape, bool)
    xj, yj = vertices[-1]
    for xi, yi in vertices:
        crosses = (yi > y) != (yj > y)
        x_cross = (xj - xi) * (y - yi) / np.where(yj == yi, 1.0, yj - yi) + xi
        inside ^= crosses & (x < x_cross)
        xj, yj = xi, yi
    return inside


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of the unit shape (circumradius about 1) at local coordinates (u, v), v up."""
    if shape == "circle":
        return u * u + v * v <= 0.85
    if shape == "heart":
        x, y = u * 1.15, v * 1.15 + 0.15  # the implicit heart curve, centred
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    return _inside_polygon(u, v, _POLYGONS[shape])


@functools.cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Supersampled pixel centres in [0, 1]: x grows right, y grows down."""
    n = size * SUPERSAMPLE
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(t, t)


def render(factors, size: int = 32) -> np.ndarray:
    """Draws ``factors`` as a uint8 [size, size, 3] image."""
    shape, colour, scale, rotation, position = (int(f) for f in factors)
    x, y = _grid(size)
    cx, cy = POSITION_CENTRES[position % 3], POSITION_CENTRES[position // 3]
    radius = SCALE_RADIUS[scale]
    theta = np.deg2rad(ROTATIONS_DEG[rotation])
    dx, dy = (x - cx) / radius, (cy - y) / radius  # local frame, v up
    u = np.cos(theta) * dx + np.sin(theta) * dy  # rotate points by -theta = shape by +theta
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    mask = _inside(SHAPES[shape], u, v).astype(np.float32)
    coverage = mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return np.round(coverage[..., None] * COLOUR_RGB[colour]).astype(np.uint8)


def sample_factors(split: str, index: int) -> np.ndarray:
    """The factors (int32 [5]) of item ``index`` of ``split``, a pure function of both."""
    rng = np.random.default_rng([0x5B17E5, _SPLIT_CODES[split], int(index)])
    while True:
        factors = np.array([rng.integers(n) for n in FACTOR_SIZES], np.int32)
        pair = (int(factors[0]), int(factors[1]))
        if split == "heldout":
            shape = int(factors[0])
            colours = sorted(c for s, c in HELDOUT_PAIRS if s == shape)
            factors[1] = colours[int(rng.integers(len(colours)))]
            return factors
        if split != "train" or pair not in HELDOUT_PAIRS:
            return factors


def factor(factors, name: str) -> np.ndarray:
    """The factor ``name`` (one of :data:`FACTOR_NAMES`) of int factors ``[..., 5]``: int
    ``[...]`` (an index into :data:`SHAPES`, :data:`COLOURS`, ...)."""
    return np.asarray(factors)[..., FACTOR_NAMES.index(name)]


def prompt_sets(per_set: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Captions to prompt with and the factors (int32 ``[5]``) each one names, ``per_set`` of
    each set: ``seen_pairs`` (the ``test`` split's, (shape, colour) pairs seen in training)
    and ``heldout_pairs`` (the ``heldout`` split's, pairs never seen together).
    ``{set name: [(caption, factors), ...]}``."""
    out = {}
    for name, split in (("seen_pairs", "test"), ("heldout_pairs", "heldout")):
        rows = []
        index = 0
        while len(rows) < per_set:
            f = sample_factors(split, index)
            if split == "heldout" or (int(f[0]), int(f[1])) not in HELDOUT_PAIRS:
                rows.append((caption_for_factors(f, index % len(CAPTION_TEMPLATES)), f))
            index += 1
        out[name] = rows
    return out


def read_colour(images: np.ndarray) -> np.ndarray:
    """The colour index (:data:`COLOURS`) of each sprite of uint8 ``[N, H, W, 3]``, int ``[N]``.

    The mean RGB of the pixels at least half as bright as the image's brightest pixel,
    scaled to unit peak, nearest (Euclidean) to a named colour scaled the same way: exact on
    :func:`render`'s output, also after a bilinear resize.
    """
    x = np.asarray(images, np.float32)
    lum = x.max(axis=-1)
    peak = lum.reshape(len(x), -1).max(axis=1)
    sel = lum >= 0.5 * np.maximum(peak, 1.0)[:, None, None]
    mean = (x * sel[..., None]).sum(axis=(1, 2)) / np.maximum(sel.sum(axis=(1, 2)), 1)[:, None]
    mean = mean / np.maximum(mean.max(axis=1, keepdims=True), 1e-6)
    ref = COLOUR_RGB / COLOUR_RGB.max(axis=1, keepdims=True)
    return np.argmin(((mean[:, None, :] - ref[None]) ** 2).sum(-1), axis=1)


class SpritesSource:
    """Random-access sprites: ``{"image", "label", "factors", "caption"}`` per index.

    ``image`` uint8 [size, size, 3]; ``label`` int32 (the shape); ``factors`` int32 [5]
    in the order of :data:`FACTOR_NAMES`; ``caption`` str.
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    class_names = SHAPES

    def __init__(self, split: str = "train", size: int = 32, length: int | None = None):
        if split not in SPLIT_SIZES:
            raise UserError(f"sprites has splits {sorted(SPLIT_SIZES)}, not {split!r}")
        if size < 8:
            raise UserError(f"sprites image size {size}: expected at least 8 pixels")
        self.split = split
        self.size = size
        self.length = SPLIT_SIZES[split] if length is None else int(length)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    @property
    def num_classes(self) -> int:
        return len(SHAPES)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, object]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"sprites index {index} out of range [0, {self.length})")
        factors = sample_factors(self.split, index)
        template = index % len(CAPTION_TEMPLATES)
        return {
            "image": render(factors, self.size),
            "label": np.int32(factors[0]),
            "factors": factors,
            "caption": caption_for_factors(factors, template),
        }


def sprites(split: str, data_dir: str = "") -> SpritesSource:
    """The source factory: sprites need no files, so ``data_dir`` is ignored."""
    del data_dir
    return SpritesSource(split)
