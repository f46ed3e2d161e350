"""Diffusion models: DDPM (Ho et al. 2020), EDM preconditioning, guidance, latent diffusion.

Per training batch, with ``x_0`` the images in [-1, 1] (or a VAE's latents):

  (t, alpha, sigma) ~ the process's noise levels        uniform timesteps, or EDM's lognormal
  x_t = alpha * x_0 + sigma * eps,  eps ~ N(0, I)       the forward process q(x_t | x_0)
  F = UNet(c_in * x_t, t, cond)                          cond dropped with prob cond_drop_prob
  loss = mean (F - F*)^2                                 F* = eps, x_0, v or EDM's target

Sampling integrates from noise with a sampler from :mod:`jaxgen.samplers` (``sample.sampler``,
``sample.steps``) driven by ``x0_hat = c_skip x_t + c_out F`` of the EMA parameters, with
classifier-free guidance ``F = F_uncond + sample.guidance * (F_cond - F_uncond)``: guidance 0 is
the unconditional model, 1 the conditional one (no extra cost), above 1 sharper samples.
``cond`` is a class label (``cond=class``: a learned embedding, the null class when dropped) or
a caption (``cond=text``: cross-attention to the text encoder's token embeddings and the
pooled embedding added to the time embedding; the null text when dropped).
``likelihood`` is the variational bound in bits/dim (discrete VP process, pixel space only).

Mixed precision (``precision=bfloat16``): the UNet (and a jointly trained text encoder, and
latent diffusion's frozen VAE) compute in bfloat16 in training and in sampling; ``x_t``,
the noise, the schedule's and EDM's coefficients, the time embedding's sinusoid, the
regression target and the loss stay float32 (the network's input is cast to bfloat16
after the preconditioning, its output back to float32). Sampling: every network
evaluation runs in ``compute_dtype`` (the EMA parameters cast once per call), while the
sampler's state (``x_t``, the ODE solvers' ``x0`` history) and the guidance combination
are float32, as are the returned images. ``likelihood`` (the variational bound) runs in
float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import clusters
from jaxgen.diffusion.config import DiffusionConfig, importance_levels
from jaxgen.diffusion.likelihood import VariationalBound, nats_to_bits_per_dim
from jaxgen.diffusion.objectives import Preconditioning, guided, min_snr_weight, q_sample
from jaxgen.diffusion.process import EDMProcess, VPProcess
from jaxgen.diffusion.schedules import make_schedule
from jaxgen.errors import UserError
from jaxgen.methods.base import Method, images_to_symmetric
from jaxgen.methods.cluster_conditioning import ClusterConditioned
from jaxgen.methods.description import config_value
from jaxgen.methods.gradients import cast_floating
from jaxgen.models.backbone import build_backbone, describe_backbone
from jaxgen.models.precision import floating_dtype
from jaxgen.samplers import get_sampler, initial_noise
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import PARAMS_KEY, drop_text
from jaxgen.text.encoder import TextEmbedding


def _batch_size(cond) -> int:
    return jax.tree.leaves(cond)[0].shape[0]


class Diffusion(ClusterConditioned, Method):
    """The diffusion family (``family = "ddpm"``)."""

    supports_bfloat16 = True
    reads_guidance = True

    def __init__(self, config, data):
        super().__init__(config, data)
        model = config.model
        self._make_process(model)
        self.num_classes = data.num_classes if data.cond == "class" else 0
        if data.cond == "class" and not self.num_classes:
            raise UserError(f"cond=class but data {config.data.name!r} has no labels")
        self.clusters = self.read_clusters(config, data)
        if self.clusters:  # the network takes the cluster index as a class-conditional its label
            self.num_classes = self.clusters
        self.cond_drop_prob = float(model.get("cond_drop_prob", 0.0))
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise UserError(
                f"config key model.cond_drop_prob={self.cond_drop_prob}: expected in [0, 1]"
            )
        self.autoencoder = None
        if model.get("autoencoder", ""):
            from jaxgen.methods.latent import LatentAutoencoder

            self.autoencoder = LatentAutoencoder(
                model.autoencoder, data, float(model.get("latent_scale", 1.0)), self.compute_dtype
            )
        self.x_shape = self.autoencoder.latent_shape if self.autoencoder else data.image_shape
        self.net = build_backbone(  # model.backbone: the UNet (default) or a DiT
            model,
            out_channels=self.x_shape[-1],
            num_classes=self.num_classes,
            context_dim=self.text.width if self.text else 0,
            input_hw=self.x_shape[:2],
        )
        self.unet_config = self.net.config  # a UNetConfig or a DiTConfig
        # Clipping x0_hat to the data range only makes sense in pixel space.
        self.clip = bool(model.get("clip_denoised", True)) and self.autoencoder is None
        self.random_flip = bool(model.get("random_flip", False))
        self.vlb_terms = int(model.get("vlb_terms", 0))
        self.resolve_sample_options()  # bad sample.* options fail here, before compiling

    def _make_process(self, model) -> None:
        """Sets ``dcfg``, ``process``, ``precond`` and ``bound`` (None: no likelihood) from the
        ``model`` section; a family with another noise process overrides this."""
        self.dcfg = DiffusionConfig.from_config(model.diffusion)
        if self.dcfg.process == "edm":
            self.process = EDMProcess(
                self.dcfg.sigma_min, self.dcfg.sigma_max, self.dcfg.sigma_data,
                self.dcfg.p_mean, self.dcfg.p_std,
            )  # fmt: skip
            self.precond = Preconditioning("edm", self.dcfg.sigma_data)
            self.bound = None
        else:
            schedule = make_schedule(
                self.dcfg.schedule, self.dcfg.timesteps, self.dcfg.beta_start, self.dcfg.beta_end
            )
            self.process = VPProcess(schedule)
            self.precond = Preconditioning(self.dcfg.prediction)
            self.bound = VariationalBound(schedule, self.dcfg.variance)
            if self.dcfg.level_sampling == "importance":
                weights = min_snr_weight(
                    self.precond, schedule.alphas, schedule.sigmas, self.dcfg.min_snr_gamma
                )
                self._level_log_probs, self._level_weight = importance_levels(np.asarray(weights))

    # --- data <-> diffusion space ------------------------------------------
    def _encode(self, batch, rng) -> jax.Array:
        """uint8 images -> ``x_0``: [-1, 1] pixels or scaled VAE latents, ``[B, *x_shape]``."""
        flip_rng, enc_rng = jax.random.split(rng)
        images = batch["image"]
        if self.random_flip:
            flip = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0], 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1], images)
        if self.autoencoder is not None:
            return self.autoencoder.encode(images, enc_rng)
        return images_to_symmetric(images)

    def _decode(self, x0: jax.Array) -> jax.Array:
        """``x_0`` -> float32 images in [0, 1]."""
        if self.autoencoder is not None:
            return self.autoencoder.decode(x0)
        return jnp.clip((x0 + 1.0) / 2.0, 0.0, 1.0)

    # --- the network as a denoiser -----------------------------------------
    def _output(self, params, x_t, t, alpha, sigma, cond, train=False, rng=None, t2=None):
        """Raw network output ``F``, float32 ``[B, ...]``, for float32 ``x_t`` ``[B, ...]``.

        Levels ``t``, ``alpha``, ``sigma``: float32 ``[B]``. ``cond``: labels int32 ``[B]``
        (class), a :class:`TextEmbedding` (text) or None. The UNet computes in the dtype of
        ``params`` (its input is cast after the float32 preconditioning). ``t2``: float32
        ``[B]``, a second time input for networks built with ``two_times`` (else None).
        """
        rngs = {"dropout": rng} if train else None
        extra = {} if t2 is None else {"t2": t2}
        unet_params = {k: v for k, v in params.items() if k not in (PARAMS_KEY, clusters.STATE_KEY)}
        x_in = self.precond.network_input(x_t, alpha, sigma).astype(floating_dtype(unet_params))
        if isinstance(cond, TextEmbedding):
            out = self.net.apply(
                {"params": unet_params}, x_in, t, None, cond.tokens, cond.mask, cond.pooled,
                train=train, rngs=rngs, **extra,
            )  # fmt: skip
        else:
            labels = cond if self.num_classes else None
            out = self.net.apply(
                {"params": unet_params}, x_in, t, labels, train=train, rngs=rngs, **extra
            )
        return out.astype(jnp.float32)

    def _condition(self, params, conditioning) -> jax.Array | TextEmbedding | None:
        """Labels or the text embedding of a batch / of sampling ``conditioning``."""
        if self.text is not None:
            return None if conditioning is None else self.text.embed(params, conditioning)
        if self.num_classes and conditioning is not None:
            return conditioning.get("label")
        return None

    def _null(self, num: int):
        """The unconditional input of ``num`` examples: the null class or the null text."""
        if self.text is not None:
            return self.text.null_embedding(num)
        return jnp.full((num,), self.num_classes, jnp.int32)

    def _x0(self, output, x_t, alpha, sigma) -> jax.Array:
        x0 = self.precond.denoised(output, x_t, alpha, sigma)
        return jnp.clip(x0, -1.0, 1.0) if self.clip else x0

    def denoiser(self, params, cond=None, guidance: float = 1.0):
        """``denoise(x, t, alpha, sigma) -> x0_hat`` (scalar levels) with guidance.

        ``cond``: labels ``[B]``, a :class:`TextEmbedding` or None (unconditional: the null
        class or text). ``guidance`` must be a Python number: 0 and 1 take one network pass,
        other values two.
        """
        conditional = self.num_classes or self.text is not None
        null = None
        if not conditional:
            guidance = 1.0
        elif cond is None or guidance == 0:
            guidance, cond = 1.0, None
        else:
            null = self._null(_batch_size(cond))

        def denoise(x, t, alpha, sigma):
            b = x.shape[0]
            tb, ab, sb = (jnp.full((b,), v, jnp.float32) for v in (t, alpha, sigma))
            c = self._null(b) if cond is None and conditional else cond
            if guidance == 1:
                out = self._output(params, x, tb, ab, sb, c)
            else:
                both = self._output(
                    params, jnp.concatenate([x, x]), jnp.concatenate([tb, tb]),
                    jnp.concatenate([ab, ab]), jnp.concatenate([sb, sb]),
                    jax.tree.map(lambda u, v: jnp.concatenate([u, v]), null, c),
                )  # fmt: skip
                out = guided(both[:b], both[b:], guidance)
            return self._x0(out, x, ab, sb)

        return denoise

    # --- Method interface ----------------------------------------------------
    def init_params(self, rng, batch):
        del batch
        unet_rng, text_rng = jax.random.split(rng)
        x = jnp.zeros((1, *self.x_shape), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        params = dict(self.net.init({"params": unet_rng}, x, jnp.zeros((1,)), labels)["params"])
        if self.text is not None:
            params.update(self.text.init_params(text_rng))
        return params

    def _train_levels(self, rng, batch: int):
        """``(t_model, alpha, sigma)``, float32 ``[batch]`` each: the process's own draw, or
        timesteps drawn in proportion to their min-SNR weight (``level_sampling``)."""
        if self.dcfg.level_sampling != "importance":
            return self.process.sample_train_levels(rng, batch)
        log_probs = jnp.asarray(self._level_log_probs)
        steps = jax.random.categorical(rng, log_probs, shape=(batch,))
        alpha, sigma = self.process.coefficients(steps)
        return steps.astype(jnp.float32), alpha, sigma

    def loss(self, params, batch, rng):
        data_rng, drop_rng, level_rng, noise_rng, dropout_rng = jax.random.split(rng, 5)
        x0 = self._encode(batch, data_rng)
        b = x0.shape[0]
        cond = None
        drop = jax.random.bernoulli(drop_rng, self.cond_drop_prob, (b,))
        if self.text is not None:
            cond = drop_text(self.text.embed(params, batch), drop)
        elif self.num_classes:
            cond = jnp.where(drop | (batch["label"] < 0), self.num_classes, batch["label"])
        t, alpha, sigma = self._train_levels(level_rng, b)
        eps = jax.random.normal(noise_rng, x0.shape)
        x_t = q_sample(x0, eps, alpha, sigma)
        target = self.precond.target(x0, x_t, alpha, sigma)
        if self.dcfg.input_perturbation:
            xi = jax.random.normal(jax.random.fold_in(noise_rng, 1), x0.shape)
            x_t = q_sample(x0, eps + self.dcfg.input_perturbation * xi, alpha, sigma)
        out = self._output(params, x_t, t, alpha, sigma, cond, train=True, rng=dropout_rng)
        mse = jnp.mean((out - target) ** 2, axis=tuple(range(1, out.ndim)))  # [B]
        if self.dcfg.level_sampling == "importance":
            return self._level_weight * jnp.mean(mse), {"mse": jnp.mean(mse)}
        if self.dcfg.loss_weighting == "min_snr":
            weight = min_snr_weight(self.precond, alpha, sigma, self.dcfg.min_snr_gamma)
            return jnp.mean(weight * mse), {"mse": jnp.mean(mse)}
        loss = jnp.mean(mse)
        return loss, {"mse": loss}

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """Sampler (default ``ddpm``), steps (default: the sampler's, else every timestep) and
        spacing (default: the sampler's) filled in; ``eta`` in [0, 1]; ``final_snr`` 0 or
        within the process's range of SNRs."""
        name = options.sampler or "ddpm"
        spec = get_sampler(name)
        steps = int(options.steps) or spec.default_steps or self.dcfg.timesteps
        spacing = options.spacing or spec.spacing
        final_snr = float(options.final_snr)
        with jax.ensure_compile_time_eval():  # a check only: nothing is staged under jit
            self.process.grid(steps, spacing, final_snr)  # a known spacing, steps that fit it
        if not 0.0 <= options.eta <= 1.0:
            raise UserError(f"config key sample.eta={options.eta!r}: expected in [0, 1]")
        return SampleOptions(
            name, steps, float(options.guidance), float(options.eta), spacing, final_snr
        )

    def sampler_plan(self, options: SampleOptions | None = None):
        """``(spec, grid, kwargs)``: the :class:`~jaxgen.samplers.SamplerSpec`, the noise-level
        :class:`~jaxgen.samplers.Grid` (``grid.num_levels`` steps, ``spec.nfe`` of them network
        evaluations) and the sampler's keyword arguments for ``options`` (None: the config's).
        """
        options = self.resolve_sample_options(options)
        kwargs = {}
        if get_sampler(options.sampler).takes_eta:
            kwargs["eta"] = options.eta
        elif options.sampler == "ddpm":
            kwargs["variance"] = self.dcfg.variance
        grid = self.process.grid(options.steps, options.spacing, options.final_snr)
        return get_sampler(options.sampler), grid, kwargs

    def sample(self, params, rng, num, conditioning=None, options=None):
        """``num`` images in [0, 1], float32 ``[num, H, W, C]``, drawn with ``options``
        (:class:`~jaxgen.sampling.SampleOptions`; None: the config's).

        The networks compute in ``compute_dtype``; the sampler's state stays float32.
        """
        options = self.resolve_sample_options(options)
        spec, grid, kwargs = self.sampler_plan(options)
        params = cast_floating(params, self.compute_dtype)
        noise_rng, sampler_rng = jax.random.split(rng)
        if self.clusters and "label" not in (conditioning or {}):  # by the clusters' shares
            sampler_rng, cluster_rng = jax.random.split(sampler_rng)
            labels = self.draw_clusters(params, cluster_rng, num)
            conditioning = {**(conditioning or {}), "label": labels}
        cond = self._condition(params, conditioning)
        denoise = self.denoiser(params, cond, options.guidance)
        x = initial_noise(noise_rng, (num, *self.x_shape), grid)
        return self._decode(spec.fn(denoise, x, grid, sampler_rng, **kwargs))

    @property
    def has_likelihood(self) -> bool:
        return self.bound is not None and self.autoencoder is None

    def likelihood(self, params, batch, rng):
        """The variational bound per image in bits/dim (``model.vlb_terms`` sampled timesteps).

        Conditional models are evaluated with the true labels or captions (``-log p(x | y)``);
        with ``model.clusters`` the bound is ``-log p(c) - log p(x | c)`` at the image's nearest
        cluster ``c``, a bound on ``-log p(x)`` too. Returns None for the EDM process and for
        latent diffusion (see :attr:`has_likelihood`).
        """
        if not self.has_likelihood:
            return None
        x0 = images_to_symmetric(batch["image"])
        cluster_nats = 0.0
        if self.clusters:
            labels, log_share = self.nearest_clusters(params, batch["image"])
            batch, cluster_nats = {**batch, "label": labels}, -log_share
        cond = self._condition(params, batch)

        def x0_fn(x_t, t):
            alpha, sigma = self.process.coefficients(t)
            out = self._output(params, x_t, t.astype(jnp.float32), alpha, sigma, cond)
            return self._x0(out, x_t, alpha, sigma)

        nats = self.bound.nats(x0_fn, x0, rng, self.vlb_terms)
        dims = int(np.prod(self.data.image_shape))
        return {
            "bits_per_dim": nats_to_bits_per_dim(nats["total"] + cluster_nats, dims),
            "vlb_prior_bits_per_dim": nats_to_bits_per_dim(nats["prior"], dims),
            "vlb_decoder_bits_per_dim": nats_to_bits_per_dim(nats["decoder"], dims),
        }

    @classmethod
    def describe(cls, config):
        model = config_value(config, "model", {}) or {}
        arch = describe_backbone(model)
        diff = model.get("diffusion", {}) or {}
        process = "EDM" if diff.get("process") == "edm" else f"{diff.get('schedule')} schedule"
        terms = model.get("vlb_terms")
        bound = f"VLB, {terms} sampled terms" if terms else "VLB, all terms"
        k = int(model.get("clusters") or 0)
        if model.get("autoencoder"):
            arch += ", latent"
        if k:
            arch += f", conditioned on {k} pixel clusters"
            bound += f", the image's nearest of {k} clusters"
        generic = super().describe(config)
        return generic.replace(
            architecture=arch,
            training=f"{process}, {diff.get('prediction')}-prediction",
            likelihood_bound=bound,
        )
