"""What the input pipeline hands a model: the data's shape and conditioning, the default
per-example transform, and the one check of the global batch size.

Families read a :class:`DataSpec` to size their networks; they never see a source.
"""

from __future__ import annotations

import dataclasses

from jaxgen.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the data pipeline provides: image shape and conditioning."""

    image_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int  # 0 when the source has no labels
    cond: str = "none"  # none | class | text


def select_image_and_label(item: dict) -> dict:
    """The default per-example transform: a source item -> ``{"image": uint8 [H, W, C],
    "label": int32 scalar}`` (every other field of the item is dropped)."""
    return {"image": item["image"], "label": item["label"]}


def check_global_batch(
    batch: int, devices: int = 1, processes: int = 1, examples: int | None = None
) -> None:
    """UserError unless the global ``batch`` splits evenly over ``devices`` and ``processes``
    and fits in the ``examples`` of the training split (``None``: not checked)."""
    key = f"config key train.batch_size={batch}"
    if batch % devices:
        raise UserError(f"{key}: expected a multiple of the {devices} devices")
    if batch % processes:
        raise UserError(f"{key}: expected a multiple of the {processes} processes")
    if examples is not None and batch > examples:
        raise UserError(f"{key}: expected at most the {examples} examples of the training split")
