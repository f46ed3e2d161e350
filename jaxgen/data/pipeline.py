"""One input pipeline for every source: shuffle, per-process shard, batch, prefetch.

Built on Grain's ``MapDataset``: every batch is a pure function of
``(seed, index)``, so the iterator state is just a position and a resumed run
sees exactly the batches the uninterrupted run would have seen. Each process
reads ``global_batch / process_count`` examples of every global batch.
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np
from PIL import Image

from jaxgen.data.sources import get_source
from jaxgen.data.spec import DataSpec, check_global_batch, select_image_and_label
from jaxgen.errors import UserError
from jaxgen.overrides import one_line


class ResizedSource:
    """Wraps a source so that images come out ``size x size`` (bilinear resize)."""

    def __init__(self, source, size: int):
        self.source = source
        self.size = size
        h, w, c = source.image_shape
        self.image_shape = (size, size, c)
        self._resize = (h, w) != (size, size)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        item = dict(self.source[index])
        if self._resize:
            image = item["image"]
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            resized = np.asarray(pil.resize((self.size, self.size), Image.BILINEAR), np.uint8)
            item["image"] = resized.reshape(self.image_shape)
        return item


def load_source(data: ml_collections.ConfigDict, split: str) -> ResizedSource:
    """The source named by ``data.name`` for ``split``, resized to ``data.image_size``."""
    if data.image_size <= 0:
        raise UserError(f"config key data.image_size={data.image_size}: expected a positive int")
    return ResizedSource(get_source(data.name, split, data.dir), data.image_size)


class LazySource:
    """A source opened on first use: ``len``, indexing or any attribute (``image_shape``,
    ``class_names``, ...) opens it with :func:`load_source`, so a run that needs no data
    (sampling a trained model) never reads or downloads them. Errors are raised then."""

    def __init__(self, data: ml_collections.ConfigDict, split: str):
        self._data = data
        self._split = split
        self._source = None

    def open(self) -> ResizedSource:
        if self._source is None:
            self._source = load_source(self._data, self._split)
        return self._source

    @property
    def is_open(self) -> bool:
        return self._source is not None

    def __len__(self) -> int:
        return len(self.open())

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.open()[index]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.open(), name)


def data_spec(source: ResizedSource, cond: str) -> DataSpec:
    if cond == "class" and source.num_classes == 0:
        raise UserError("config cond=class needs a labelled dataset; this source has no labels")
    return DataSpec(image_shape=source.image_shape, num_classes=source.num_classes, cond=cond)


# Where a checkpoint keeps the iterator's state (Orbax's JSON item ``data``).
DATA_STATE_FILE = "checkpoints/<step>/data/metadata"
# Positions past this are beyond the repeated dataset (Grain's ``repeat()`` length).
MAX_NEXT_INDEX = 2**61 - 1


def _corrupt_state(origin: str, what: str) -> UserError:
    return UserError(
        f"the data-iterator state {origin} of the checkpoint being resumed is corrupt ({what}); "
        f"move that checkpoint away to resume from the previous one"
    )


def check_iterator_state(state, origin: str = DATA_STATE_FILE) -> None:
    """UserError unless ``state`` is an iterator state as :meth:`Pipeline.get_state` writes
    it: a JSON object whose ``next_index`` is an int in [0, 2**61 - 1]."""
    if not isinstance(state, dict):
        raise _corrupt_state(origin, f"expected a JSON object, not {type(state).__name__}")
    if "next_index" not in state:
        raise _corrupt_state(origin, "no next_index")
    index = state["next_index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_NEXT_INDEX:
        raise _corrupt_state(origin, f"next_index={index!r}, expected an integer >= 0")


class Pipeline:
    """An endless, checkpointable iterator over this process's share of global batches.

    Yields ``{"image": uint8 [B/P, H, W, C], "label": int32 [B/P], ...}`` for
    global batch ``B`` over ``P`` processes.
    """

    def __init__(
        self,
        source,
        global_batch: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        prefetch: int = 2,
        transform=None,
    ):
        check_global_batch(global_batch, processes=process_count, examples=len(source))
        ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
        ds = ds[process_index::process_count].map(transform or select_image_and_label)
        ds = ds.batch(global_batch // process_count, drop_remainder=True)
        options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=max(prefetch, 1))
        self._iterator = iter(ds.to_iter_dataset(options))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict:
        return self._iterator.get_state()

    def set_state(self, state: dict, origin: str = DATA_STATE_FILE) -> None:
        """Resumes at ``state`` (as :meth:`get_state` gave it, read back from ``origin``, the
        file named in the error when the data library refuses it; the trainer has checked its
        shape with :func:`check_iterator_state` right after the restore)."""
        try:
            self._iterator.set_state(state)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise _corrupt_state(origin, one_line(e)) from None
