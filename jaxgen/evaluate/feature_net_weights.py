"""The weight file of the ``contrastive`` feature extractor (:class:`FeatureNet`).

``jaxgen/evaluate/weights/<data>_contrastive.npz``, written by ``scripts/train_feature_net.py``:
``params/<module>/<leaf>`` float32 arrays (the backbone, without the projection head) and
``meta``, a JSON object with the architecture (``channels``, ``blocks``, ``groups``,
``image_shape``), the feature definition (``stage_scales``, ``feature_dim``) and the
provenance (recipe, steps, k-NN and linear-probe accuracy on the test split).

The extractor's features (:func:`feature_fn`) are the pooled outputs of every stage, each
multiplied by its ``stage_scales`` entry (one over the root of the stage's total feature
variance on training images, so that each stage weighs alike in distances), concatenated:
``[B, sum(channels)]``.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.weight_files import read_npz_with_meta

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
REQUIRED_META = ("channels", "blocks", "groups", "feature_dim", "image_shape", "stage_scales")


def default_weights(data_name: str) -> str:
    """``jaxgen/evaluate/weights/<data>_contrastive.npz`` (``:`` and ``/`` become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", data_name)
    return os.path.join(WEIGHTS_DIR, f"{name}_contrastive.npz")


def save(path: str, params, meta: dict) -> None:
    """Writes ``params`` (flattened) and ``meta`` (JSON; holds :data:`REQUIRED_META`)."""
    from jaxgen.evaluate.inception_weights import flatten

    flat = {f"params/{k}": np.asarray(v, np.float32) for k, v in flatten(params).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, meta=np.asarray(json.dumps(meta, sort_keys=True)), **flat)


def feature_fn(net, scales):
    """``fn(variables, images float32 [B, H, W, C] in [0, 1]) -> float32 [B, sum(channels)]``:
    the pooled stage outputs of ``net`` times ``scales`` (one per stage), concatenated."""

    def fn(variables, images):
        stages = net.apply(variables, images, output="stages")
        return jnp.concatenate([f * c for f, c in zip(stages, scales, strict=True)], axis=1)

    return fn


def network(meta: dict, path: str):
    """The :class:`FeatureNet` ``meta`` describes and its backbone parameter shapes
    (``{"<module>/<leaf>": shape}``), traced without computing anything."""
    from jaxgen.evaluate.inception_weights import flatten
    from jaxgen.models.feature_net import FeatureNet

    try:
        net = FeatureNet(
            channels=tuple(int(c) for c in meta["channels"]),
            blocks=int(meta["blocks"]),
            groups=int(meta["groups"]),
        )
        image = jax.ShapeDtypeStruct((1, *(int(d) for d in meta["image_shape"])), jnp.float32)
        shapes = jax.eval_shape(net.init, jax.random.key(0), image)["params"]
        scales = [float(c) for c in meta["stage_scales"]]
        if len(scales) != len(net.channels) or int(meta["feature_dim"]) != sum(net.channels):
            raise ValueError(
                f"{len(scales)} stage_scales and feature_dim {meta['feature_dim']} for "
                f"channels {list(net.channels)}"
            )
    except Exception as e:  # non-integer sizes, a non-positive width, ...
        detail = " ".join(str(e).split())[:200]
        raise UserError(
            f"feature-net weights {path}: its meta describes no valid model ({detail})"
        ) from None
    return net, {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def load(path: str) -> tuple[dict, dict]:
    """``(params, meta)`` from a file written by :func:`save`.

    Raises:
      UserError: naming ``path``: unreadable, no ``meta``, or parameters whose names and
        shapes do not fit the model ``meta`` describes (the first mismatch is named).
    """
    from jaxgen.evaluate.inception_weights import unflatten

    flat, meta = read_npz_with_meta(
        path, "feature-net weights", set(REQUIRED_META), lambda meta: network(meta, path)[1]
    )
    return unflatten(flat), meta
