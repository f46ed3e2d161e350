"""``data.json`` in a workdir: what a run's training data looked like, so that sampling and
evaluation can rebuild the model without opening the data.

Written by every training launch (main process); read by ``--mode=sample``/``eval`` and
:func:`jaxgen.load`. It is used only while the config's data keys still match the ones it
was written for; otherwise the data are opened as in training.
"""

from __future__ import annotations

import dataclasses
import json

import ml_collections
import numpy as np

from jaxgen import paths

DATA_FILE = "data.json"
MATCHED_KEYS = ("name", "image_size", "train_split", "cond")  # of config.data


@dataclasses.dataclass(frozen=True)
class DataDescription:
    """The training data as the model saw them.

    Attributes:
      image_shape: ``(H, W, C)`` after resizing to ``data.image_size``.
      class_names: one name per label (empty when the source has no labels).
      fields: each field of one example after the family's batch transform:
        ``name -> (shape, dtype name)``, e.g. ``"image" -> ((28, 28, 1), "uint8")``.
    """

    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    fields: dict[str, tuple[tuple[int, ...], str]]

    @classmethod
    def of(cls, image_shape, class_names, example: dict) -> DataDescription:
        """The description of one transformed ``example`` (a dict of arrays)."""
        fields = {k: (tuple(np.shape(v)), np.asarray(v).dtype.name) for k, v in example.items()}
        return cls(tuple(image_shape), tuple(class_names), fields)

    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zeros shaped like a batch of ``batch_size`` examples (for shape inference)."""
        return {
            k: np.zeros((batch_size, *shape), np.dtype(dtype))
            for k, (shape, dtype) in self.fields.items()
        }


def _data_keys(data: ml_collections.ConfigDict) -> dict:
    return {k: data.get(k) for k in MATCHED_KEYS}


def write_description(workdir: str, data: ml_collections.ConfigDict, desc: DataDescription):
    """Writes ``<workdir>/data.json`` for the config's ``data`` keys."""
    record = {
        "data": _data_keys(data),
        "image_shape": list(desc.image_shape),
        "class_names": list(desc.class_names),
        "fields": {k: {"shape": list(s), "dtype": d} for k, (s, d) in desc.fields.items()},
    }
    paths.write_text(paths.join(workdir, DATA_FILE), json.dumps(record, indent=1, sort_keys=True))


def read_description(workdir: str, data: ml_collections.ConfigDict) -> DataDescription | None:
    """The description in ``workdir`` when it was written for these ``data`` keys, else None
    (no file, an unreadable one, or other data)."""
    path = paths.join(workdir, DATA_FILE)
    try:
        if not paths.exists(path):
            return None
        record = json.loads(paths.read_text(path))
        if record.get("data") != _data_keys(data):
            return None
        fields = {
            k: (tuple(int(n) for n in v["shape"]), str(v["dtype"]))
            for k, v in record["fields"].items()
        }
        return DataDescription(
            tuple(int(n) for n in record["image_shape"]),
            tuple(str(n) for n in record["class_names"]),
            fields,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the data are opened instead
