"""Likelihood evaluator (test-split bits/dim through ``ctx.likelihood_fn``) and parameter count."""

from __future__ import annotations

import jax
import numpy as np

from jaxgen import parallel
from jaxgen.errors import UserError
from jaxgen.preemption import check_active
from jaxgen.progress import Progress


def per_example_likelihood(
    likelihood_fn, params, batch_of, num: int, batch_size: int, rng: jax.Array, family: str
):
    """Yields ``(count, {term: float64 [count]})`` for the examples ``0 .. num-1`` in order.

    ``likelihood_fn(params, batch, rng)`` gives the per-example terms (a family's
    :meth:`~jaxgen.methods.base.Method.likelihood`); ``batch_of(start, stop)`` gives the batch
    of examples ``start .. stop-1`` (numpy arrays, the fields of the family's batch transform).
    Each batch is split over every device (padded to a multiple of their number); batch ``i``
    uses ``fold_in(rng, first example's index)``.
    """
    mesh = parallel.make_mesh()
    rows = parallel.round_up(min(batch_size, num), mesh.size)
    fn = jax.jit(likelihood_fn, out_shardings=parallel.batch_sharded(mesh))
    progress = Progress(f"likelihood on {mesh.size} device(s)", num, unit="examples")
    for start in range(0, num, batch_size):
        check_active()
        stop = min(start + batch_size, num)
        batch = batch_of(start, stop)
        out = fn(params, parallel.shard_rows(batch, mesh, rows), jax.random.fold_in(rng, start))
        if out is None:
            raise UserError(f"family {family!r} has no likelihood")
        count = stop - start
        # The padding rows are left out.
        yield (
            count,
            {k: np.asarray(v, np.float64)[:count] for k, v in parallel.gather_rows(out).items()},
        )
        progress.update(stop)


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
    transform = ctx.batch_transform  # adds the text fields of cond=text models

    def batch_of(start: int, stop: int) -> dict[str, np.ndarray]:
        items = [transform(source[i]) for i in range(start, stop)]
        return {k: np.stack([np.asarray(x[k]) for x in items]) for k in items[0]}

    family = ctx.config.family
    if ctx.likelihood_fn is None:
        raise UserError(f"evaluator 'likelihood': family {family!r} has no likelihood")
    sums: dict[str, float] = {}
    chunks = per_example_likelihood(
        ctx.likelihood_fn, ctx.params, batch_of, num, batch_size, ctx.rng, family
    )
    try:
        for _, terms in chunks:
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    except UserError as e:
        raise UserError(f"evaluator 'likelihood': {e}") from None
    results = {k: v / num for k, v in sums.items()}
    results["likelihood_num_examples"] = num
    return results


def count_params(ctx, cfg) -> dict[str, float]:
    """Number of parameters used to generate: the sampling parameters, or the tree that the
    family's ``ctx.functions["generating_params"]()`` returns when it has one (a GAN: its
    generator's, with its discriminator's for ``sample.sampler=drs``, which scores every
    draw; not the spectral-norm vectors or the calibration the sampler also reads)."""
    del cfg
    tree = ctx.params
    if "generating_params" in ctx.functions:
        tree = ctx.functions["generating_params"]()
    return {"params": int(sum(np.size(x) for x in jax.tree.leaves(tree)))}
