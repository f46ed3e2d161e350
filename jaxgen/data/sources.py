"""Random-access image sources: ``len(source)`` and ``source[i]``.

Every source returns ``{"image": uint8 [H, W, C], "label": int32 scalar}``
(label ``-1`` when the dataset has none) and exposes ``image_shape``,
``num_classes`` and ``class_names``. Sources are looked up by
``config.data.name`` in :data:`SOURCES`; ``tfds:<name>[:<split>]`` goes
through ``tfds.data_source``.
"""

from __future__ import annotations

import functools
import importlib
import os
import zlib
from collections.abc import Callable

import numpy as np

from jaxgen.errors import UserError

FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "sudo apt-get install -y dataset-fashion-mnist"


class ArraySource:
    """A source backed by in-memory arrays (images uint8 [N, H, W, C], labels int32 [N])."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]):
        if images.ndim == 3:
            images = images[..., None]
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.class_names = tuple(class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self.images[index], "label": self.labels[index]}


def _read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzip-compressed) into a read-only uint8 array; a file read before
    in this process (same size and modification time) is not decoded again."""
    try:
        stat = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    return _decode_idx(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _decode_idx(path: str, size: int, mtime_ns: int) -> np.ndarray:
    del size, mtime_ns  # the cache key: a changed file is read afresh
    try:
        with open(path, "rb") as f:
            # zlib in one call: 10x faster than reading through gzip.GzipFile.
            data = zlib.decompress(f.read(), wbits=16 + zlib.MAX_WBITS)
    except (OSError, zlib.error) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise UserError(f"{path} is truncated: expected {expected} bytes of data for shape {dims}")
    array = np.frombuffer(data, np.uint8, offset=offset).reshape(dims)
    array.setflags(write=False)  # shared by every source made from this file
    return array


def fashion_mnist_dirs(data_dir: str) -> list[str]:
    """The places searched for the Fashion-MNIST IDX files, in order: ``data_dir`` alone when
    set, else ``$JAXGEN_DATA_DIR/fashion_mnist`` and the system copy."""
    if data_dir:
        return [data_dir]
    env = os.environ.get("JAXGEN_DATA_DIR")
    return [*([os.path.join(env, "fashion_mnist")] if env else []), FASHION_MNIST_SYSTEM_DIR]


def check_data_dir(data_dir: str, files: tuple[str, ...]) -> None:
    """UserError naming ``data.dir`` and the ``files`` missing from it."""
    if not os.path.isdir(data_dir):
        raise UserError(f"config key data.dir={data_dir!r}: no such directory")
    missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise UserError(f"config key data.dir={data_dir!r}: {', '.join(missing)} not found there")


def fashion_mnist(split: str, data_dir: str = "") -> ArraySource:
    if split not in FASHION_MNIST_FILES:
        raise UserError(f"fashion_mnist has splits {sorted(FASHION_MNIST_FILES)}, not {split!r}")
    image_file, label_file = FASHION_MNIST_FILES[split]
    if data_dir:
        check_data_dir(data_dir, (image_file, label_file))
    dirs = fashion_mnist_dirs(data_dir)
    for d in dirs:
        if os.path.exists(os.path.join(d, image_file)) and os.path.exists(
            os.path.join(d, label_file)
        ):
            images = _read_idx(os.path.join(d, image_file))
            labels = _read_idx(os.path.join(d, label_file))
            if len(images) != len(labels):
                raise UserError(f"{d}: {len(images)} images but {len(labels)} labels")
            return ArraySource(images, labels, FASHION_MNIST_CLASSES)
    raise UserError(
        f"Fashion-MNIST files ({image_file}, {label_file}) not found in "
        f"{', '.join(dirs)}; install them with: {FASHION_MNIST_INSTALL}"
    )


def digits(split: str, data_dir: str = "") -> ArraySource:
    """scikit-learn's 8x8 digits (1,797 images, 16 grey levels scaled to 0..255).

    The split is deterministic: every fifth image (index % 5 == 0) is ``test``. No files are
    read: :func:`get_source` refuses a ``data_dir``.
    """
    del data_dir
    if split not in ("train", "test"):
        raise UserError(f"digits has splits ['test', 'train'], not {split!r}")
    images, labels = _digits_arrays()
    is_test = np.arange(len(images)) % 5 == 0
    keep = is_test if split == "test" else ~is_test
    return ArraySource(images[keep], labels[keep], tuple(str(i) for i in range(10)))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 ``[1797, 8, 8]`` images and int labels (loaded once)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target


def _tfds_error(name: str, split: str, data_dir: str, error: Exception) -> UserError:
    """A one-line UserError for a TFDS dataset that could not be opened."""
    import tensorflow_datasets as tfds

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not data_dir:
        return UserError(f"TFDS dataset {name}:{split} is not available: {first}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception:  # an unknown name: the first error says so
        return UserError(f"config key data.dir={data_dir!r}: TFDS dataset {name}: {first}")
    if builder.is_prepared():
        return UserError(f"config key data.dir={data_dir!r}: TFDS dataset {name}:{split}: {first}")
    return UserError(
        f"config key data.dir={data_dir!r}: no prepared TFDS dataset {name} there "
        f"(expected {builder.data_dir}); prepare it with: tfds build {name} --data_dir "
        f"{data_dir}, or leave data.dir empty"
    )


class TfdsSource:
    """Any TFDS dataset through ``tfds.data_source`` (random access, no TensorFlow)."""

    def __init__(self, name: str, split: str, data_dir: str):
        """With ``data_dir`` the prepared dataset must be there (nothing is downloaded into
        it); without, TFDS's usual folders are searched and a missing dataset downloaded."""
        import tensorflow_datasets as tfds

        if data_dir and not os.path.isdir(data_dir):
            raise UserError(f"config key data.dir={data_dir!r}: no such directory")
        try:
            self._source = tfds.data_source(
                name, split=split, data_dir=data_dir or None, download=not data_dir
            )
            builder = tfds.builder(name, data_dir=data_dir or None)
        except Exception as e:  # tfds raises many types for missing data
            raise _tfds_error(name, split, data_dir, e) from None
        features = builder.info.features
        self._image_key = "image"
        label = features["label"] if "label" in features else None
        self.class_names = tuple(label.names) if label is not None else ()
        example = self._source[0]
        image = np.asarray(example[self._image_key])
        self.image_shape = tuple(image.shape if image.ndim == 3 else (*image.shape, 1))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self._source[index]
        image = np.asarray(example[self._image_key], dtype=np.uint8)
        if image.ndim == 2:
            image = image[..., None]
        label = np.int32(example["label"]) if self.class_names else np.int32(-1)
        return {"image": image, "label": label}


# name -> the source factory ``factory(split, data_dir)``: a ``"module:function"`` string,
# imported on first use (so no source module is imported before it is asked for), or the
# function itself.
SOURCES: dict[str, str | Callable[[str, str], object]] = {
    "fashion_mnist": "jaxgen.data.sources:fashion_mnist",
    "digits": "jaxgen.data.sources:digits",
    "sprites": "jaxgen.data.sprites:sprites",
}
# Sources that read no files, so a data.dir given with them is a mistake.
NO_FILES = {"digits": "scikit-learn's bundled copy", "sprites": "drawn procedurally"}


def register_source(name: str, factory: str | Callable[[str, str], object]) -> None:
    """Adds a source ``factory(split, data_dir)`` (or ``"module:function"``) under ``name``."""
    SOURCES[name] = factory


def _factory(name: str) -> Callable[[str, str], object]:
    target = SOURCES[name]
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def get_source(name: str, split: str, data_dir: str = ""):
    """Returns the source ``name`` for ``split``; see the module docstring."""
    if name.startswith("tfds:"):
        parts = name.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise UserError(f"config key data.name={name!r}: expected tfds:<name>[:<split>]")
        return TfdsSource(parts[1], parts[2] if len(parts) == 3 else split, data_dir)
    if name not in SOURCES:
        raise UserError(
            f"config key data.name={name!r}: expected one of {sorted(SOURCES)} or tfds:<name>"
        )
    if data_dir and name in NO_FILES:
        raise UserError(
            f"config key data.dir={data_dir!r}: data.name={name!r} reads no files "
            f"({NO_FILES[name]}); leave data.dir empty"
        )
    return _factory(name)(split, data_dir)
