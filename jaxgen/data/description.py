"""``data.json`` in a workdir: what a run's training data looked like, so that sampling and
evaluation can rebuild the model without opening the data, and a resumed run can tell that
its training data changed.

Written by every training launch (main process); read by ``--mode=sample``/``eval`` and
:func:`jaxgen.load`. It is used only while the config's data keys still match the ones it
was written for; otherwise the data are opened as in training. It also holds the training
split's identity (:func:`training_data_identity`), which a training relaunch must match
(:func:`check_same_training_data`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import ml_collections
import numpy as np

from jaxgen import paths
from jaxgen.errors import UserError
from jaxgen.overrides import one_line

log = logging.getLogger("jaxgen")

DATA_FILE = "data.json"
MATCHED_KEYS = ("name", "image_size", "train_split", "cond")  # of config.data
FINGERPRINT_EXAMPLES = 8  # the first examples of the training split hashed in data.json
SPREAD_EXAMPLES = 32  # examples spread evenly over the split, hashed as well


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


def _examples_digest(source, indices) -> str:
    """16 hex digits of a SHA-256 over the names, dtypes, shapes and bytes of the fields of
    ``source``'s examples at ``indices`` (as the source gives them, before any transform)."""
    digest = hashlib.sha256()
    for index in indices:
        for name, value in sorted(source[int(index)].items()):
            array = np.ascontiguousarray(value)
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            # Object arrays' bytes are addresses: their text stands for them.
            digest.update(repr(value).encode() if array.dtype.hasobject else array.tobytes())
    return digest.hexdigest()[:16]


def training_data_identity(source) -> dict:
    """What identifies a training split: ``train_examples`` (its size),
    ``train_fingerprint`` (a hash of its first :data:`FINGERPRINT_EXAMPLES` examples) and
    ``train_spread_fingerprint`` (of :data:`SPREAD_EXAMPLES` examples spread evenly from
    the first to the last). Another version of the dataset, another copy under ``data.dir``
    or another order changes at least one of them. The spread hash came later: a
    ``data.json`` without it is compared on the other two."""
    size = len(source)
    spread = np.unique(np.linspace(0, max(size - 1, 0), SPREAD_EXAMPLES).round()) if size else []
    return {
        "train_examples": size,
        "train_fingerprint": _examples_digest(source, range(min(FINGERPRINT_EXAMPLES, size))),
        "train_spread_fingerprint": _examples_digest(source, spread),
    }


def _skipped(path: str, why: str) -> None:
    log.warning(
        "%s is damaged (%s); the check that the training data did not change was skipped",
        path, why,
    )  # fmt: skip


def check_same_training_data(workdir: str, data: ml_collections.ConfigDict, identity: dict) -> None:
    """Refuses a training relaunch whose training split differs from the one ``data.json``
    recorded for the same data keys (nothing to compare: a new run, other data keys, or a
    ``data.json`` from before the identity was recorded).

    Raises:
      UserError: naming what changed; the resumed batches would not be the run's.
    """
    path = paths.join(workdir, DATA_FILE)
    try:
        record = json.loads(paths.read_text(path)) if paths.exists(path) else None
    except (OSError, ValueError) as e:
        _skipped(path, f"cannot read it: {one_line(e)}")
        return
    if record is not None and not isinstance(record, dict):
        _skipped(path, f"it holds a JSON {type(record).__name__}, not an object")
        return
    if record is None or record.get("data") != _data_keys(data):
        return
    changed = [
        f"{key} {record[key]} -> {value}"
        for key, value in identity.items()
        if key in record and record[key] != value
    ]
    if changed:
        raise UserError(
            f"--workdir={workdir}: the training data changed since the run last trained "
            f"({'; '.join(changed)}), so the resumed batches would not be the run's; restore "
            f"the data, or train in a new workdir from these weights with "
            f"--config.init_from={workdir}"
        )


def write_description(
    workdir: str,
    data: ml_collections.ConfigDict,
    desc: DataDescription,
    identity: dict | None = None,
):
    """Writes ``<workdir>/data.json`` for the config's ``data`` keys, with the training
    split's ``identity`` (:func:`training_data_identity`) when given."""
    record = {
        "data": _data_keys(data),
        "image_shape": list(desc.image_shape),
        "class_names": list(desc.class_names),
        "fields": {k: {"shape": list(s), "dtype": d} for k, (s, d) in desc.fields.items()},
        **(identity or {}),
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
