"""The dtype a network computes in: that of the parameters it is handed."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def floating_dtype(tree: PyTree, default=jnp.float32) -> jnp.dtype:
    """The dtype of the first floating-point leaf of ``tree`` (``default`` if it has none).

    Networks compute in this dtype of their parameters: bfloat16 for the loss of a
    ``precision = "bfloat16"`` step, float32 otherwise.
    """
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.dtype(default)
