"""Loss and gradients with the memory and precision options of the generic step.

* Mixed precision (``config.precision = "bfloat16"``): the loss sees a bfloat16
  copy of the float32 parameters; gradients, optimizer state and EMA stay in
  float32. The family must feed bfloat16 activations (``Method.supports_bfloat16``).
* Rematerialisation (``config.model.remat``): ``"full"`` keeps only the loss
  inputs and recomputes the forward pass during the backward pass; ``"dots"``
  keeps matrix-multiply outputs and recomputes the rest.
* Gradient accumulation (``config.train.grad_accum_steps = k``): the global
  batch is split into ``k`` micro-batches whose gradients are averaged, so
  activation memory is that of ``batch_size / k`` examples. Micro-batch ``i``
  holds rows ``i, i + k, ...`` so every device keeps its share of each one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floating(tree, dtype):
    """Casts the floating-point leaves of ``tree`` to ``dtype``."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def loss_and_grads(
    loss_fn: Callable,
    params,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    compute_dtype=jnp.float32,
    remat: str = "none",
    accum_steps: int = 1,
):
    """``((loss, metrics), grads)`` of ``loss_fn(params, batch, rng)``, averaged over micro-batches.

    Args:
      loss_fn: ``(params, batch, rng) -> (scalar loss, dict of scalar metrics)``.
      params: float32 parameters (gradients come back in their dtype).
      batch: arrays with the global batch as leading axis ``B``; ``B % accum_steps == 0``.
      rng: micro-batch ``i`` uses ``fold_in(rng, i)`` (the key itself when ``accum_steps == 1``).
    """

    def fn(p, b, r):
        loss, metrics = loss_fn(cast_floating(p, compute_dtype), b, r)
        return loss.astype(jnp.float32), jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    if REMAT_POLICIES[remat] is not None:
        fn = jax.checkpoint(fn, policy=REMAT_POLICIES[remat])
    grad_fn = jax.value_and_grad(fn, has_aux=True)
    if accum_steps == 1:
        return grad_fn(params, batch, rng)

    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    micro_batches = jax.tree.map(split, batch)

    def accumulate(total, inputs):
        micro_batch, index = inputs
        out = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, total, out), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first, rng)
    )
    total, _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(accum_steps)))
    return jax.tree.map(lambda x: x / accum_steps, total)
