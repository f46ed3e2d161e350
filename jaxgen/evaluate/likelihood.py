"""Likelihood evaluator (test-split bits/dim through ``Method.likelihood``) and parameter count."""

from __future__ import annotations

import jax
import numpy as np

from jaxgen.errors import UserError


def evaluate(ctx, cfg) -> dict[str, float]:
    """Means of the family's per-example likelihood terms over the eval split.

    Options: ``num_examples`` (default: the whole split), ``batch_size`` (default 256).
    Returns e.g. ``bits_per_dim`` (and ``elbo``, ``nll_iwae`` in nats for VAEs),
    plus ``likelihood_num_examples``.
    """
    source = ctx.eval_source
    num = min(int(cfg.get("num_examples", len(source))) or len(source), len(source))
    batch_size = min(int(cfg.get("batch_size", 256)), num)
    fn = jax.jit(ctx.method.likelihood)
    transform = ctx.method.batch_transform()  # adds the text fields of cond=text models
    sums: dict[str, float] = {}
    count = 0
    for start in range(0, num - num % batch_size or num, batch_size):
        items = [transform(source[i]) for i in range(start, min(start + batch_size, num))]
        batch = {k: np.stack([np.asarray(x[k]) for x in items]) for k in items[0]}
        out = fn(ctx.params, batch, jax.random.fold_in(ctx.rng, start))
        if out is None:
            raise UserError(
                f"evaluator 'likelihood': family {ctx.config.family!r} has no likelihood"
            )
        for k, v in jax.device_get(out).items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)))
        count += len(items)
    results = {k: v / count for k, v in sums.items()}
    results["likelihood_num_examples"] = count
    return results


def count_params(ctx, cfg) -> dict[str, float]:
    """Number of parameters used to generate (the generator's, for a GAN)."""
    del cfg
    return {"params": int(sum(np.size(x) for x in jax.tree.leaves(ctx.params)))}
