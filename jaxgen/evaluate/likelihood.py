"""Likelihood evaluator (test-split bits/dim through ``Method.likelihood``) and parameter count."""

from __future__ import annotations

import jax
import numpy as np

from jaxgen import parallel
from jaxgen.errors import UserError
from jaxgen.preemption import check_active
from jaxgen.progress import Progress


def evaluate(ctx, cfg) -> dict[str, float]:
    """Means of the family's per-example likelihood terms over the eval split.

    Options: ``num_examples`` (default: the whole split), ``batch_size`` (default 256; each
    batch is split over all devices, padded to a multiple of their number).
    Returns e.g. ``bits_per_dim`` (and ``elbo``, ``nll_iwae`` in nats for VAEs),
    plus ``likelihood_num_examples``.
    """
    source = ctx.eval_source
    num = min(int(cfg.get("num_examples", len(source))) or len(source), len(source))
    batch_size = min(int(cfg.get("batch_size", 256)), num)
    mesh = parallel.make_mesh()
    rows = parallel.round_up(batch_size, mesh.size)  # every device takes a share of a batch
    fn = jax.jit(ctx.method.likelihood, out_shardings=parallel.batch_sharded(mesh))
    transform = ctx.method.batch_transform()  # adds the text fields of cond=text models
    progress = Progress(f"likelihood on {mesh.size} device(s)", num, unit="examples")
    sums: dict[str, float] = {}
    for start in range(0, num, batch_size):
        check_active()
        items = [transform(source[i]) for i in range(start, min(start + batch_size, num))]
        batch = {k: np.stack([np.asarray(x[k]) for x in items]) for k in items[0]}
        out = fn(
            ctx.params, parallel.shard_rows(batch, mesh, rows), jax.random.fold_in(ctx.rng, start)
        )
        if out is None:
            raise UserError(
                f"evaluator 'likelihood': family {ctx.config.family!r} has no likelihood"
            )
        for k, v in parallel.gather_rows(out).items():  # the padding rows are left out
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)[: len(items)]))
        progress.update(start + len(items))
    results = {k: v / num for k, v in sums.items()}
    results["likelihood_num_examples"] = num
    return results


def count_params(ctx, cfg) -> dict[str, float]:
    """Number of parameters used to generate (the generator's, for a GAN)."""
    del cfg
    return {"params": int(sum(np.size(x) for x in jax.tree.leaves(ctx.params)))}
