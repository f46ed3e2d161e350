"""Generative adversarial networks: DCGAN and SN-GAN ResNet pairs, trained two-player.

Config (besides the shared keys):

* ``model.arch``: ``dcgan`` | ``resnet``; ``model.z_dim``; ``model.g_width``,
  ``model.d_width`` (channel widths); ``model.d_norm`` (DCGAN discriminator:
  ``spectral`` | ``batch`` | ``layer`` | ``none``; the ResNet one is spectral
  unless ``none``); ``model.d_extra_blocks`` (ResNet); ``model.g_extra_convs`` (DCGAN:
  3x3 convolutions added at each generator resolution, see
  :class:`~jaxgen.models.dcgan.DCGANGenerator`); ``model.d_minibatch_std`` (DCGAN: the
  group size of the discriminator's minibatch standard deviation channel, Karras et al.
  2018; 0: off; :func:`~jaxgen.models.dcgan.minibatch_stddev`).
* ``gan.loss``: ``nonsaturating`` | ``hinge`` | ``wasserstein``;
  ``gan.gp_weight`` (WGAN-GP); ``gan.r1_gamma`` and ``gan.r1_every`` (lazy R1);
  ``gan.g_batch_size`` (0: the discriminator's micro-batch size); ``gan.mode_seeking``
  (weight of the mode-seeking term, Mao et al. 2019; 0: off); ``gan.top_k``,
  ``gan.top_k_gamma``, ``gan.top_k_every`` (top-k generator updates, Sinha et al. 2020;
  ``top_k`` 0: off; see :class:`jaxgen.gan.step.Objective`); ``gan.diffaugment`` (a
  DiffAugment policy such as ``translation,cutout``; "": off); ``gan.cr_real``,
  ``gan.cr_fake`` (consistency regularisation weights; 0: off) and ``gan.cr_augment``
  (its transforms; :mod:`jaxgen.gan.augment`); ``gan.info_codes`` (unconditional DCGAN:
  the values ``K`` of InfoGAN's uniform categorical code, appended one-hot to ``z`` and
  recovered by a second discriminator head; 0: off) and ``gan.info_weight`` (its loss's
  weight; see :class:`jaxgen.gan.step.Players`); ``gan.clusters`` (unconditional data: ``K``
  clusters of the training images' pixels by online k-means, whose indices condition both
  networks as labels would; 0: off; :mod:`jaxgen.clusters`).
* ``train.d_steps``: discriminator updates per generator update; each takes
  ``train.batch_size / d_steps`` real images of the step's batch.
* ``optimizer.*`` builds both optimizers; ``optimizer.learning_rate`` is the
  generator's, ``optimizer.d_learning_rate`` the discriminator's.
  ``optimizer.schedule`` may also be ``linear`` (decay to 0, as in SN-GAN).

State (the shared :class:`TrainState`): ``params`` and ``opt_state`` hold
``{"generator", "discriminator"}``; ``ema_params["generator"]`` is the EMA of
the generator (decay ``min(train.ema_decay, (1 + t) / (10 + t))`` at step
``t``) and ``ema_params["discriminator"]`` the live discriminator, so that
``ema_params`` has the structure of ``params``; ``model_state`` holds the
discriminator's spectral-norm vectors and, with ``gan.clusters``, the k-means state under
``"clusters"``. One ``train_step`` is
:func:`jaxgen.gan.step.two_player_step`; its metric ``loss`` is the sum of the
discriminator's and the generator's losses (``d_loss + g_loss``, both logged too).

Sampling uses the EMA generator. Its batch norm takes the statistics of a
reference batch of ``gan.g_batch_size`` random latents (uniform labels; clusters drawn
by their sizes) drawn with the sample key, so an image does not depend on what else is
requested.
``sample.sampler=drs`` (discriminator rejection sampling, :mod:`jaxgen.gan.rejection_sampler`)
keeps, per requested image, the first of ``rejection_sampler.CANDIDATES`` draws with its
condition (its class or its cluster, the latter drawn by size) that the live discriminator,
given that condition, accepts; an image then depends on the other requests of
its discriminator chunk (the micro-batch over ``CANDIDATES`` images), not on later ones.

Text conditioning (``cond=text``, :mod:`jaxgen.text.conditioner`): the
generator maps the pooled text embedding ``[B, D]`` through a learned projection
to ``model.text_dim`` features, concatenated to ``z`` and driving conditional
batch norms; the discriminator adds the projection term ``<phi(x), W pooled>``
(see :mod:`jaxgen.models.dcgan`). Generated images in training take captions
drawn from the real batch. A jointly trained text encoder
(``text.encoder=transformer``) exists once per player, under
``params[player]["text_encoder"]``: each is trained by its own player's loss, and
the generator's is averaged with it and used for sampling. With the frozen
default (``bert``) the batches carry only the cached pooled embedding
``text_pooled`` (the per-token outputs are not used). At sampling the reference
batch takes random training captions; ``conditioning`` holds the prompts' text
fields (:meth:`Method.text_conditioning`).

Mixed precision (``precision=bfloat16``): both players' networks compute in bfloat16, on a
bfloat16 copy of their float32 parameters made inside each player's differentiated loss
(so gradients, both optimizers' states and the EMA stay float32); batch-norm statistics and
the spectral-norm power iteration are float32 (the spectral state in ``model_state`` stays
float32), and the players' outputs (images, discriminator logits) are cast to float32, so
the adversarial losses, penalties and metrics are float32. Sampling runs the generator in
bfloat16 as well and returns float32 images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.gan import config_checks, rejection
from jaxgen.gan.optimizers import TwoPlayerOptimizer, player_optimizer
from jaxgen.gan.rejection_sampler import RejectionSampler
from jaxgen.gan.step import Players, critic, latents, two_player_step
from jaxgen.methods import gan_summary
from jaxgen.methods.base import (
    Method,
    TrainState,
    ema_update,
    images_to_symmetric,
    mark_nonfinite,
)
from jaxgen.methods.gradients import cast_floating
from jaxgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from jaxgen.models.resnet_gan import ResNetDiscriminator, ResNetGenerator
from jaxgen.models.spectral_norm import COLLECTION
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import PARAMS_KEY
from jaxgen.validate import check_sample_options_used

SAMPLERS = ("generator", "drs")


class GAN(Method):
    """Generator and discriminator trained against each other; see the module docstring."""

    supports_bfloat16 = True

    def __init__(self, config: ml_collections.ConfigDict, data: DataSpec):
        super().__init__(config, data)
        m = config.model
        config_checks.check_networks(config)
        self.objective = config_checks.objective(config)
        self.num_classes = data.num_classes if data.cond == "class" else 0
        if data.cond == "class" and not self.num_classes:
            raise UserError(f"cond=class but data {config.data.name!r} has no labels")
        text_dim = 0
        self.text_fields: tuple[str, ...] = ()
        if self.text is not None:
            text_dim = int(m.get("text_dim", 128))
            if text_dim < 1:
                raise UserError(f"config key model.text_dim={text_dim}: expected >= 1")
            self.text_fields = ("text_pooled",) if self.text.frozen else tuple(self.text.fields)
        self._reference_texts = None
        shape = tuple(data.image_shape)
        conditioned = self.text is not None
        self.info_codes = config_checks.info_codes(config, bool(self.num_classes) or conditioned)
        self.clusters = config_checks.clusters(config, bool(self.num_classes) or conditioned)
        labels = self.num_classes or self.clusters  # the networks' label embeddings
        extra_convs = int(m.get("g_extra_convs", 0))
        if m.arch == "dcgan":
            self.generator = DCGANGenerator(shape, m.g_width, labels, text_dim, extra_convs)
            self.discriminator = DCGANDiscriminator(
                shape, m.d_width, m.d_norm, labels, conditioned, self.info_codes,
                int(m.get("d_minibatch_std", 0)),
            )  # fmt: skip
        else:
            self.generator = ResNetGenerator(shape, m.g_width, labels, text_dim)
            self.discriminator = ResNetDiscriminator(
                shape, m.d_width, labels, m.d_norm != "none", m.d_extra_blocks, conditioned,
            )  # fmt: skip
        self.players = Players(
            self._generate, self._discriminate, m.z_dim, self.num_classes, self.info_codes
        )
        self.rejection_sampler = RejectionSampler(
            self._draw, self._score, self.reference_batch_size(),
            self._slot_labels if labels else None, int(config.seed),
        )  # fmt: skip

    # --- the networks as pure functions --------------------------------------
    def _split(self, player_params, cond):
        """``(network params, labels, pooled text)`` of a player for conditions ``cond``.

        ``cond``: labels int32 ``[B]`` (class), the text fields (text) or None.
        """
        if self.text is None:
            return player_params, cond, None
        net = {k: v for k, v in player_params.items() if k != PARAMS_KEY}
        if self.text.frozen:
            return net, None, cond["text_pooled"]
        return net, None, self.text.embed(player_params, cond).pooled

    def _in_compute_dtype(self, player_params, cond):
        """``(network params, labels, pooled text)`` as :meth:`_split`, floats in ``compute_dtype``.

        The cast sits inside the players' differentiated losses: gradients reach the float32
        parameters in float32.
        """
        net, labels, text = self._split(cast_floating(player_params, self.compute_dtype), cond)
        return net, labels, None if text is None else text.astype(self.compute_dtype)

    def _generate(self, g_params, z, cond, stat_mask=None):
        """float32 images ``[N, H, W, C]`` in [-1, 1] from float32 ``z`` ``[N, z_dim]``."""
        net, labels, text = self._in_compute_dtype(g_params, cond)
        z = z.astype(self.compute_dtype)
        x = self.generator.apply({"params": net}, z, labels, stat_mask, text)
        return x.astype(jnp.float32)

    def _discriminate(self, d_params, d_state, x, cond, update):
        """float32 outputs ``[N]`` for images ``x``; the spectral state stays float32."""
        net, labels, text = self._in_compute_dtype(d_params, cond)
        x = x.astype(self.compute_dtype)
        variables = {"params": net, **d_state}
        if update and d_state:
            out, new_state = self.discriminator.apply(
                variables, x, labels, True, text, mutable=[COLLECTION]
            )
            return out.astype(jnp.float32), dict(new_state)
        out = self.discriminator.apply(variables, x, labels, False, text)
        return out.astype(jnp.float32), d_state

    def _score(self, params, x, labels):
        """Logits ``[N]`` of the sampling discriminator (``params["discriminator"]`` and
        ``params["discriminator_state"]``) for images ``x`` in [-1, 1]."""
        d_params, d_state = params["discriminator"], params["discriminator_state"]
        return critic(self._discriminate(d_params, d_state, x, labels, False)[0])

    def _batch_condition(self, batch):
        """The conditions of a batch: labels ``[B]``, the text fields, or None."""
        if self.text is not None:
            return {k: batch[k] for k in self.text_fields}
        return batch["label"] if self.num_classes else None

    # --- state ---------------------------------------------------------------
    def _init_variables(self, rng, batch):
        g_rng, d_rng = jax.random.split(rng)
        gt_rng, dt_rng = jax.random.split(jax.random.fold_in(rng, 1))
        images = images_to_symmetric(batch["image"][:2])
        labels = jnp.zeros((2,), jnp.int32) if self.num_classes or self.clusters else None
        text = jnp.zeros((2, self.text.width), jnp.float32) if self.text is not None else None
        z = jnp.zeros((2, self.config.model.z_dim + self.info_codes), jnp.float32)
        g_vars = self.generator.init({"params": g_rng}, z, labels, None, text)
        d_vars = dict(self.discriminator.init({"params": d_rng}, images, labels, False, text))
        d_vars.pop("intermediates", None)
        params = {"generator": dict(g_vars["params"]), "discriminator": dict(d_vars.pop("params"))}
        if self.text is not None:  # one jointly trained encoder per player ({} when frozen)
            params["generator"].update(self.text.init_params(gt_rng))
            params["discriminator"].update(self.text.init_params(dt_rng))
        if self.clusters:  # fitted to the training images before a fresh run's first step
            d_vars[clusters.STATE_KEY] = clusters.placeholder_state(self.clusters, images.shape[1:])
        return params, d_vars

    def data_fit_count(self, available):
        return clusters.fit_count(self.data.image_shape, available, self.clusters, "gan.clusters")

    def fit_to_data(self, model_state, images, rng):
        return clusters.fit_model_state(model_state, images, self.clusters, rng)

    def _split_state(self, model_state):
        """``(discriminator state, cluster state or None)`` of the ``model_state``."""
        if not self.clusters:
            return model_state, None
        rest = {k: v for k, v in model_state.items() if k != clusters.STATE_KEY}
        return rest, model_state[clusters.STATE_KEY]

    def batch_transform(self):
        """The shared transform; a frozen text encoder's batches keep ``text_pooled`` only."""
        transform = super().batch_transform()
        if self.text is None or not self.text.frozen:
            return transform
        unused = {"text_tokens", "text_mask"}
        return lambda item: {k: v for k, v in transform(item).items() if k not in unused}

    def init_params(self, rng, batch):
        return self._init_variables(rng, batch)[0]

    def init_model_state(self, rng, batch):
        return self._init_variables(rng, batch)[1]

    def make_optimizer(self) -> TwoPlayerOptimizer:
        cfg, steps = self.config.optimizer, int(self.config.train.num_steps)
        return TwoPlayerOptimizer(
            generator=player_optimizer(cfg, cfg.learning_rate, steps),
            discriminator=player_optimizer(
                cfg, cfg.d_learning_rate, steps * self.objective.d_steps
            ),
        )

    def init_state(self, rng, batch, tx) -> TrainState:
        init_rng, step_rng = jax.random.split(rng)
        params, d_state = self._init_variables(init_rng, batch)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=params,
            model_state=d_state,
            rng=step_rng,
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    # --- training --------------------------------------------------------------
    def train_step(self, state, batch, tx, ema_decay):
        rng = jax.random.fold_in(state.rng, state.step)
        real = images_to_symmetric(batch["image"])
        labels = self._batch_condition(batch)
        d_state, cluster_state = self._split_state(state.model_state)
        if self.clusters:  # this batch's clusters, before the centroids move to it
            labels = clusters.assign(real, cluster_state["centroids"])
            cluster_state = clusters.update(cluster_state, real, labels)
        params, opt_state, d_state, metrics = two_player_step(
            self.players,
            self.objective,
            tx.generator,
            tx.discriminator,
            state.params,
            state.opt_state,
            d_state,
            real,
            labels,
            rng,
            state.step,
        )
        if self.clusters:
            d_state = {**d_state, clusters.STATE_KEY: cluster_state}
            share = cluster_state["counts"] / jnp.sum(cluster_state["counts"])
            metrics = dict(metrics, cluster_min_share=jnp.min(share))
        step = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        ema_params = {
            "generator": ema_update(state.ema_params["generator"], params["generator"], decay),
            "discriminator": params["discriminator"],
        }
        loss = metrics["d_loss"] + metrics["g_loss"]
        metrics = dict(metrics, loss=loss, ema_decay=decay)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema_params,
            model_state=d_state,
            first_nonfinite_step=mark_nonfinite(state, loss),
        )
        return new_state, metrics

    # --- sampling --------------------------------------------------------------
    def sampling_params(self, state: TrainState, options: SampleOptions | None = None):
        """The generator (its EMA), and for ``sample.sampler=drs`` the discriminator
        (``discriminator``) with its spectral-norm state (``discriminator_state``)."""
        params = {"generator": state.ema_params["generator"]}
        d_state, cluster_state = self._split_state(state.model_state)
        if cluster_state is not None:
            params["cluster_counts"] = cluster_state["counts"]
        if self.resolve_sample_options(options).sampler == "drs":
            params["discriminator"] = state.params["discriminator"]
            params["discriminator_state"] = d_state
        return params

    def eval_functions(self, params):
        """``generating_params``: ``() ->`` the networks among ``params`` (``generator``, and
        ``discriminator`` for DRS), which the ``params`` evaluator counts."""
        networks = {k: v for k, v in params.items() if k in ("generator", "discriminator")}
        return {"generating_params": lambda: networks}

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """``sampler`` is ``generator`` (the default) or ``drs`` (not text-conditioned), which
        alone reads ``drs_percentile`` (0: ``DEFAULT_PERCENTILE``)."""
        name = options.sampler or "generator"
        if name not in SAMPLERS:
            raise UserError(f"config key sample.sampler={name!r}: expected one of {list(SAMPLERS)}")
        if name == "drs" and self.text is not None:
            raise UserError(
                "config key sample.sampler='drs': for GANs without text conditioning; "
                "this one is text-conditioned (use sample.sampler=generator)"
            )
        used = ("sampler", "drs_percentile") if name == "drs" else ("sampler",)
        check_sample_options_used(self.config.family, options, used)
        if name == "drs":
            percentile = options.drs_percentile or rejection.DEFAULT_PERCENTILE
            options = options.replace(drs_percentile=percentile)
        return options.replace(sampler=name)

    def reference_batch_size(self) -> int:
        return self.objective.g_batch_size or self.config.train.batch_size // self.objective.d_steps

    def reference_texts(self) -> dict[str, np.ndarray]:
        """Text fields ``[P, ...]`` of the training captions the sampler's reference batch uses.

        The data's training captions (:func:`~jaxgen.text.conditioning.training_captions`),
        every ``k``-th of them for ``k = max(1, count // 256)``: all of them up to 511.
        """
        if self._reference_texts is None:
            from jaxgen.text.conditioning import training_captions

            corpus = training_captions(self.config.data.name)
            texts = list(corpus[:: max(1, len(corpus) // 256)])
            fields = self.text.text_fields(texts)
            self._reference_texts = {k: fields[k] for k in self.text_fields}
        return self._reference_texts

    def _sample_text(self, ref_rng, n_ref, num, conditioning):
        """Text fields of the reference rows (random training captions) then the requested."""
        pool = self.reference_texts()
        size = len(next(iter(pool.values())))
        pick = jax.random.randint(jax.random.fold_in(ref_rng, 1), (n_ref + num,), 0, size)
        rows = {k: jnp.take(jnp.asarray(v), pick, axis=0) for k, v in pool.items()}
        if conditioning is None:  # no prompts: random training captions
            return rows
        return {
            k: jnp.concatenate([rows[k][:n_ref], jnp.asarray(conditioning[k])])
            for k in self.text_fields
        }

    def sample(self, params, rng, num, conditioning=None, options=None):
        """float32 ``[num, H, W, C]`` in ``[0, 1]`` from the generator ``params["generator"]``.

        ``conditioning``: ``label`` int32 ``[num]`` (class; default: the classes in turn)
        or the prompts' text fields ``[num, ...]`` (text). ``options.sampler``: ``generator``
        (the default) draws ``z ~ N(0, I)``; ``drs`` keeps one of several draws per image by
        discriminator rejection sampling (:meth:`prepare_sampling` adds what it reads).
        """
        if self.resolve_sample_options(options).sampler == "drs":
            return self.rejection_sampler.sample(params, rng, num, conditioning)
        return self._draw(params, rng, num, conditioning)

    def _slot_labels(self, params, key, num):
        """int32 ``[num]``, the labels of ``num`` samples asked for without any: clusters
        drawn by size (``key``, ``params["cluster_counts"]``), or the classes in turn."""
        if self.clusters:
            return clusters.draw(key, params["cluster_counts"], num)
        return jnp.arange(num, dtype=jnp.int32) % self.num_classes

    def _draw(self, params, rng, num, conditioning):
        """``num`` draws of the generator, float32 ``[num, H, W, C]`` in ``[0, 1]``."""
        ref_rng, z_rng = jax.random.split(rng)
        n_ref = self.reference_batch_size()
        z_dim = self.config.model.z_dim
        z_ref = latents(ref_rng, n_ref, z_dim, self.info_codes)
        z = latents(z_rng, num, z_dim, self.info_codes)
        labels = None
        if self.text is not None:
            labels = self._sample_text(ref_rng, n_ref, num, conditioning)
        elif self.clusters or self.num_classes:
            if self.clusters:  # the reference rows' clusters drawn by size, as in training
                y_ref = clusters.draw(
                    jax.random.fold_in(ref_rng, 1), params["cluster_counts"], n_ref
                )
            else:
                y_ref = jax.random.randint(
                    jax.random.fold_in(ref_rng, 1), (n_ref,), 0, self.num_classes, jnp.int32
                )
            if conditioning is not None and "label" in conditioning:
                y = jnp.asarray(conditioning["label"], jnp.int32)
            else:
                y = self._slot_labels(params, jax.random.fold_in(z_rng, 1), num)
            labels = jnp.concatenate([y_ref, y])
        mask = jnp.concatenate([jnp.ones((n_ref,)), jnp.zeros((num,))])
        x = self._generate(params["generator"], jnp.concatenate([z_ref, z]), labels, mask)
        return jnp.clip((x[n_ref:] + 1.0) / 2.0, 0.0, 1.0)

    def prepare_sampling(self, params, options, source):
        """Sampler ``drs``: ``params`` plus ``"drs"``, its calibration
        (:meth:`jaxgen.gan.rejection_sampler.RejectionSampler.calibrate`)."""
        del source
        options = self.resolve_sample_options(options)
        if options.sampler != "drs":
            return params
        return self.rejection_sampler.calibrate(params, options.drs_percentile)

    @classmethod
    def describe(cls, config):
        generic = super().describe(config)
        return generic.replace(
            architecture=gan_summary.architecture(config), training=gan_summary.training(config)
        )
