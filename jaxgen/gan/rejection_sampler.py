"""The GAN sampler ``sample.sampler=drs``: discriminator rejection sampling over a GAN's draws.

Per requested image it draws ``CANDIDATES`` images with the image's condition and keeps the
first that the discriminator accepts (:mod:`jaxgen.gan.rejection` holds the acceptance rule),
else the likeliest. The rule is calibrated before sampling, once per parameters and options
(:meth:`RejectionSampler.calibrate`, from the method's ``prepare_sampling``), on ``BURN_IN``
draws keyed by the run's seed.

The discriminator may normalise with its batch's statistics (``d_norm=batch``), so it scores
chunks of the size it was trained on (``chunk`` rows), one generator call each with its own
reference batch: an image depends on the other requests of its chunk (``chunk /
CANDIDATES`` images), not on later ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgen.errors import UserError
from jaxgen.gan import rejection

CANDIDATES = 16  # draws per kept image; at 26% acceptance 0.8% of images keep the best one
BURN_IN = 10_000  # draws that calibrate the acceptance (the max logit and the shift)
BURN_IN_STREAM = 0x5D45  # folded into the PRNGKey of the run's seed for the burn-in draws

# (params, key, num, conditioning) -> float32 images [num, H, W, C] in [0, 1]
DrawFn = Callable[[dict, jax.Array, int, dict | None], jax.Array]
# (params, images in [-1, 1] [B, H, W, C], labels [B] | None) -> float32 logits [B] (nats)
ScoreFn = Callable[[dict, jax.Array, jax.Array | None], jax.Array]
# (params, key, num) -> int32 labels [num] of slots that were given none
LabelFn = Callable[[dict, jax.Array, int], jax.Array]


class RejectionSampler:
    """DRS for one GAN.

    Args:
      draw: the generator's sampler (:data:`DrawFn`); reads ``params["generator"]``.
      score: the discriminator's logits (:data:`ScoreFn`); reads ``params["discriminator"]``
        and ``params["discriminator_state"]``.
      chunk: rows the discriminator scores at once (its training micro-batch).
      slot_labels: the labels of slots given none (:data:`LabelFn`): the classes in turn
        for a class-conditioned GAN, clusters drawn by size for a clustered one; None when
        the networks take no labels.
      seed: the run's seed, which keys the burn-in draws.
    """

    def __init__(
        self, draw: DrawFn, score: ScoreFn, chunk: int, slot_labels: LabelFn | None, seed: int
    ):
        self.draw, self.score = draw, score
        self.chunk, self.slot_labels, self.seed = chunk, slot_labels, seed

    def scored_draws(self, params, rng, num, labels):
        """``(images float32 [M, H, W, C] in [0, 1], logits [M])`` of ``M`` draws, ``num``
        rounded up to whole chunks. ``labels``: int32 ``[M]`` (class-conditioned) or None."""
        chunks = -(-num // self.chunk)
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(chunks))
        chunk_labels = None if labels is None else labels.reshape(chunks, self.chunk)

        def one(args):
            key, y = args
            x = self.draw(params, key, self.chunk, None if y is None else {"label": y})
            return x, self.score(params, x * 2.0 - 1.0, y)

        images, logits = jax.lax.map(one, (keys, chunk_labels))
        return images.reshape(-1, *images.shape[2:]), logits.reshape(-1)

    @functools.cached_property
    def _jitted_scored_draws(self):
        """:meth:`scored_draws` compiled once per sampler (``num`` static) for the burn-in."""
        return jax.jit(self.scored_draws, static_argnums=2)

    def candidate_labels(self, slots, count):
        """int32 ``[count]``: each slot's label ``CANDIDATES`` times in a row, the sequence
        repeated to ``count``; None when the slots have none."""
        if slots is None:
            return None
        return jnp.resize(jnp.repeat(jnp.asarray(slots, jnp.int32), CANDIDATES), (count,))

    def calibrate(self, params, percentile: float) -> dict:
        """``params`` plus ``"drs"`` (:func:`jaxgen.gan.rejection.calibrate` at ``percentile``)
        from ``BURN_IN`` draws keyed by the seed, labelled by ``slot_labels``."""
        count = -(-BURN_IN // self.chunk) * self.chunk
        rng = jax.random.fold_in(jax.random.PRNGKey(self.seed), BURN_IN_STREAM)
        labels = None
        if self.slot_labels is not None:
            labels = self.slot_labels(params, jax.random.fold_in(rng, 1), count)
        _, logits = self._jitted_scored_draws(params, rng, count, labels)
        return dict(params, drs=rejection.calibrate(logits, percentile))

    def sample(self, params, rng, num, conditioning):
        """float32 ``[num, H, W, C]`` in ``[0, 1]``: per requested image, the first accepted
        of its ``CANDIDATES`` draws (:func:`jaxgen.gan.rejection.choose`). ``params`` come
        from :meth:`calibrate`; ``conditioning``: ``label`` int32 ``[num]`` or None
        (``slot_labels``)."""
        if "drs" not in params:
            raise UserError("sample.sampler='drs': the parameters lack its calibration")
        total = num * CANDIDATES
        padded = -(-total // self.chunk) * self.chunk
        slots = None
        if self.slot_labels is not None:
            if conditioning is not None and "label" in conditioning:
                slots = jnp.asarray(conditioning["label"], jnp.int32)
            else:
                slots = self.slot_labels(params, jax.random.fold_in(rng, 2), num)
        draw_rng, accept_rng = jax.random.split(rng)
        images, logits = self.scored_draws(
            params, draw_rng, padded, self.candidate_labels(slots, padded)
        )
        probability = rejection.acceptance_probability(logits[:total], params["drs"])
        probability = probability.reshape(num, CANDIDATES)
        uniform = jax.random.uniform(accept_rng, probability.shape)
        index, _ = rejection.choose(probability, uniform)
        images = images[:total].reshape(num, CANDIDATES, *images.shape[1:])
        return images[jnp.arange(num), index]
