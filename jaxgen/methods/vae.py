"""Variational autoencoder (Kingma & Welling 2014), beta-VAE and conditional VAE.

Reads as the objective does, per image ``x`` with ``D = H * W * C`` values:

  q(z|x) = N(mean(x), diag(exp(log_var(x))))        encoder
  z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)   reparameterisation
  log p(x|z) = sum_d log DLogistic(x_d; mu_d(z), s_d(z))   8-bit likelihood
  ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))
  loss = (-E_q[log p(x|z)] + beta * KL) / D          nats per dimension

The likelihood is the discretized logistic of PixelCNN++ (one component per
value), so it is a proper distribution over the 256 pixel values and bits/dim
are comparable with other families. The negative log-likelihood is estimated
with the importance-weighted bound (IWAE, Burda et al. 2016) with ``k``
samples: ``log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)]``.

Samplers (``sample.sampler``): ``prior`` (the default) decodes ``z ~ N(0, I)``; ``gmm``
decodes ``z`` from a mixture of ``model.gmm_components`` full-covariance Gaussians fitted to
the posterior means of the first ``model.gmm_examples`` training images once training is done
(ex-post density estimation, Ghosh et al. 2020; :mod:`jaxgen.methods.latent_mixture`). Both
show decoder means. The likelihoods stay those of the model with its ``N(0, I)`` prior.

Conditional VAE (``cond=class`` or ``cond=text``): the encoder is ``q(z|x, c)``, the
decoder ``p(x|z, c)``, the prior stays ``N(0, I)``; ``c`` is the class label or the
pooled embedding ``[B, D]`` of the caption's text (through a learned projection, see
:class:`~jaxgen.models.vae_nets.ConditionalBias`). Likelihoods are then conditional,
``log p(x|c)`` with the example's own label or caption, and samples decode ``z ~ N(0, I)``
with the prompts' ``c``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import parallel, paths
from jaxgen.distributions import (
    discretized_logistic_log_prob,
    gaussian_kl_to_standard,
    gaussian_log_prob,
)
from jaxgen.errors import UserError
from jaxgen.images import make_grid, save_png, to_uint8
from jaxgen.methods.base import Method, images_to_symmetric
from jaxgen.methods.description import config_value, tuple_text
from jaxgen.methods.gradients import cast_floating
from jaxgen.methods.latent_mixture import fit_mixture, sample_mixture
from jaxgen.models.precision import floating_dtype
from jaxgen.models.vae_nets import Decoder, Encoder, VAENetConfig
from jaxgen.sampling import SampleOptions

SAMPLERS = ("prior", "gmm")
GMM_KEY = "latent_mixture"  # where prepare_sampling puts the fitted mixture in the params
GMM_ENCODE_BATCH = 1000  # training images per encoder call of the mixture's fit


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    net: VAENetConfig
    beta: float = 1.0
    iwae_k: int = 64  # importance samples for the NLL estimate
    gmm_components: int = 10  # sampler "gmm": Gaussians fitted to the posterior means
    gmm_examples: int = 10_000  # sampler "gmm": training images encoded for the fit

    @classmethod
    def from_config(cls, model, num_classes: int, text_dim: int = 0) -> VAEConfig:
        channels = tuple(int(c) for c in model.channels)
        net = VAENetConfig(
            channels=channels,
            latent_dim=int(model.latent_dim),
            latent_channels=int(model.latent_channels),
            hidden_dim=int(model.hidden_dim),
            num_classes=num_classes,
            text_dim=text_dim,
            cond_dim=int(model.get("cond_dim", 256)),
            convs_per_level=int(model.get("convs_per_level", 1)),
            shared_scale=bool(model.get("shared_scale", False)),
        )
        if net.convs_per_level < 0:
            raise UserError(
                f"config key model.convs_per_level={net.convs_per_level}: expected >= 0"
            )
        if not model.beta >= 0 or model.beta == float("inf"):  # nan fails the comparison
            raise UserError(f"config key model.beta={model.beta}: expected a finite number >= 0")
        gmm_components = int(model.get("gmm_components", 10))
        gmm_examples = int(model.get("gmm_examples", 10_000))
        if gmm_components < 1 or gmm_examples < gmm_components:
            raise UserError(
                f"config keys model.gmm_components={gmm_components}, model.gmm_examples="
                f"{gmm_examples}: expected 1 <= gmm_components <= gmm_examples"
            )
        return cls(
            net=net,
            beta=float(model.beta),
            iwae_k=int(model.iwae_k),
            gmm_components=gmm_components,
            gmm_examples=gmm_examples,
        )


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(-1)


class VAE(Method):
    """The VAE family; ``cond=class`` or ``cond=text`` makes it a conditional VAE.

    With ``precision=bfloat16`` the networks run on bfloat16 inputs and weights, in training
    and in :meth:`sample`; the likelihood and KL are summed in float32, and
    :meth:`likelihood` (the IWAE bound) runs in float32.
    """

    supports_bfloat16 = True
    extras_use_test_images = True  # the interpolation strip runs between two test images

    def __init__(self, config, data):
        super().__init__(config, data)
        num_classes = data.num_classes if data.cond == "class" else 0
        if data.cond == "class" and not num_classes:
            raise UserError(f"cond=class but data {config.data.name!r} has no labels")
        text_dim = self.text.width if self.text is not None else 0
        self.cfg = VAEConfig.from_config(config.model, num_classes, text_dim)
        factor = 2 ** len(self.cfg.net.channels)
        height, width, _ = data.image_shape
        if height % factor or width % factor:
            raise UserError(
                f"config key data.image_size={height}: must be divisible by {factor} "
                f"(2 ** len(model.channels))"
            )
        self.encoder = Encoder(self.cfg.net)
        self.decoder = Decoder(self.cfg.net, data.image_shape)
        self.num_dims = int(np.prod(data.image_shape))

    def _condition(self, params, fields) -> dict:
        """Keyword arguments ``labels``/``text`` of the networks for a batch or ``conditioning``.

        ``fields`` holds ``label`` (cond=class) or the text fields (cond=text); the text
        condition is the pooled embedding ``[B, D]`` of the text encoder. Empty when the
        model is unconditional or ``fields`` is None.
        """
        if fields is None:
            return {}
        if self.text is not None:
            pooled = self.text.embed(params, fields).pooled
            return {"text": pooled.astype(self.compute_dtype)}
        if self.cfg.net.num_classes:
            return {"labels": fields["label"]}
        return {}

    # --- public pieces (also used by latent diffusion) ---------------------
    def latent_shape(self) -> tuple[int, ...]:
        if self.cfg.net.latent_channels:
            h, w, _ = self.data.image_shape
            f = 2 ** len(self.cfg.net.channels)
            return (h // f, w // f, self.cfg.net.latent_channels)
        return (self.cfg.net.latent_dim,)

    def encode(self, params, images: jax.Array, labels=None, text=None):
        """uint8 images [B, H, W, C] -> posterior (mean, log_var), each [B, *latent_shape].

        ``labels`` int32 [B] or ``text`` (the pooled text embedding, [B, D]): the condition.
        Computes and returns in the dtype of ``params`` (float32 or bfloat16).
        """
        x = images_to_symmetric(images, floating_dtype(params["encoder"]))
        return self.encoder.apply({"params": params["encoder"]}, x, labels, text)

    def decode(self, params, z: jax.Array, labels=None, text=None) -> jax.Array:
        """Latents [B, *latent_shape] -> mean images, float32 [B, H, W, C] in [0, 1].

        The decoder computes in the dtype of ``params`` (``z`` is cast to it).
        """
        z = z.astype(floating_dtype(params["decoder"]))
        mean, _ = self.decoder.apply({"params": params["decoder"]}, z, labels, text)
        return (mean.astype(jnp.float32) + 1.0) / 2.0

    # --- Method interface ------------------------------------------------
    def init_params(self, rng, batch):
        """``{"encoder", "decoder"}`` (+ the text encoder's under ``PARAMS_KEY``, cond=text)."""
        enc_rng, dec_rng, text_rng = jax.random.split(rng, 3)
        x = images_to_symmetric(batch["image"][:1])
        params = self.text.init_params(text_rng) if self.text is not None else {}
        first = {k: v[:1] for k, v in batch.items()}
        if self.text is not None and not all(k in batch for k in self.text.fields):
            first = self.text.null_fields(1)  # shapes only
        cond = self._condition(params, first)
        z = jnp.zeros((1, *self.latent_shape()))
        params["encoder"] = self.encoder.init(enc_rng, x, **cond)["params"]
        params["decoder"] = self.decoder.init(dec_rng, z, **cond)["params"]
        return params

    def _terms(self, params, batch, rng):
        """Per-image reconstruction log-likelihood and KL, in nats, each [B]."""
        x = images_to_symmetric(batch["image"], self.compute_dtype)
        cond = self._condition(params, batch)
        mean, log_var = self.encoder.apply({"params": params["encoder"]}, x, **cond)
        f32 = jnp.float32  # the noise and the draw in float32 (the same draw in either precision)
        z = mean.astype(f32) + jnp.exp(0.5 * log_var.astype(f32)) * jax.random.normal(
            rng, mean.shape, f32
        )
        z = z.astype(x.dtype)
        px_mean, px_log_scale = self.decoder.apply({"params": params["decoder"]}, z, **cond)
        log_px = _sum_except_batch(
            discretized_logistic_log_prob(
                x.astype(f32), px_mean.astype(f32), px_log_scale.astype(f32)
            )
        )
        kl = _sum_except_batch(gaussian_kl_to_standard(mean.astype(f32), log_var.astype(f32)))
        return log_px, kl

    def loss(self, params, batch, rng):
        log_px, kl = self._terms(params, batch, rng)
        loss = jnp.mean(-log_px + self.cfg.beta * kl) / self.num_dims
        elbo = log_px - kl
        metrics = {
            "reconstruction_nats": -jnp.mean(log_px),
            "kl_nats": jnp.mean(kl),
            "elbo_bits_per_dim": -jnp.mean(elbo) / (self.num_dims * math.log(2.0)),
        }
        return loss, metrics

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """``sampler`` is ``prior`` (the default) or ``gmm`` (unconditional models only); no
        other option applies."""
        from jaxgen.validate import check_sample_options_used

        name = options.sampler or "prior"
        if name not in SAMPLERS:
            raise UserError(f"config key sample.sampler={name!r}: expected one of {list(SAMPLERS)}")
        if name == "gmm" and self.data.cond != "none":
            raise UserError(
                f"config key sample.sampler='gmm': fits one mixture for an unconditional VAE; "
                f"this one has cond={self.data.cond} (use sample.sampler=prior)"
            )
        check_sample_options_used(self.config.family, options, ("sampler",))
        return options.replace(sampler=name)

    @functools.cached_property
    def _encode_means(self):
        """Jitted ``(params, uint8 images [B, H, W, C]) -> float32 posterior means``."""
        return jax.jit(lambda params, images: self.encode(params, images)[0].astype(jnp.float32))

    def prepare_sampling(self, params, options, source):
        """Sampler ``gmm``: ``params`` plus the mixture fitted to the posterior means of the
        first ``model.gmm_examples`` images of ``source`` (seeded by ``config.seed``)."""
        if self.resolve_sample_options(options).sampler != "gmm":
            return params
        num = min(self.cfg.gmm_examples, len(source))
        if num < self.cfg.gmm_components:
            raise UserError(
                f"config key model.gmm_components={self.cfg.gmm_components}: more than the "
                f"{num} training images to fit them to"
            )
        # Rows split over every device of every process, as the feature extractors do.
        mesh = parallel.make_mesh()
        rows = parallel.round_up(GMM_ENCODE_BATCH, mesh.size)
        means = []
        for start in range(0, num, GMM_ENCODE_BATCH):
            stop = min(start + GMM_ENCODE_BATCH, num)
            images = np.stack([source[i]["image"] for i in range(start, stop)])
            sharded = parallel.shard_rows(images, mesh, rows)
            out = np.asarray(parallel.gather_rows(self._encode_means(params, sharded)))
            means.append(out[: stop - start].reshape(stop - start, -1))
        mixture = fit_mixture(np.concatenate(means), self.cfg.gmm_components, self.config.seed)
        return {**params, GMM_KEY: parallel.put_replicated(mixture, mesh)}

    def sample(self, params, rng, num, conditioning=None, options=None):
        """Decoder means (the pixel noise of p(x|z) is left out) of ``z`` from the sampler of
        ``options``: ``prior``, z ~ N(0, I); ``gmm``, z from the mixture that
        :meth:`prepare_sampling` put in ``params``.

        ``conditioning``: ``label`` int32 [num] (cond=class) or the prompts' text fields
        (cond=text, from :meth:`text_conditioning`); float32 [num, H, W, C] in [0, 1]. The
        networks compute in ``compute_dtype``.
        """
        sampler = self.resolve_sample_options(options).sampler
        if sampler == "gmm":
            if GMM_KEY not in params:
                raise UserError(
                    "sample.sampler='gmm': the parameters hold no fitted mixture; sample "
                    "through Experiment.sample_images (it calls VAE.prepare_sampling first)"
                )
            z = sample_mixture(params[GMM_KEY], rng, num).reshape(num, *self.latent_shape())
        else:
            z = jax.random.normal(rng, (num, *self.latent_shape()))
        networks = {k: v for k, v in params.items() if k != GMM_KEY}
        params = cast_floating(networks, self.compute_dtype)
        if self.text is not None and conditioning is None:
            conditioning = self.text.null_fields(num)  # the empty text
        return self.decode(params, z, **self._condition(params, conditioning))

    has_likelihood = True

    def likelihood(self, params, batch, rng):
        """ELBO and the IWAE bound (k = ``model.iwae_k``) per image, in nats and bits/dim.

        Conditional models give ``log p(x|c)`` with the example's own label or caption.
        """
        x = images_to_symmetric(batch["image"])
        cond = self._condition(params, batch)
        cond = {k: v.astype(jnp.float32) if k == "text" else v for k, v in cond.items()}
        mean, log_var = self.encoder.apply({"params": params["encoder"]}, x, **cond)
        k = self.cfg.iwae_k

        def log_weight(sample_rng):
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(sample_rng, mean.shape)
            px_mean, px_log_scale = self.decoder.apply({"params": params["decoder"]}, z, **cond)
            log_px = _sum_except_batch(discretized_logistic_log_prob(x, px_mean, px_log_scale))
            log_pz = _sum_except_batch(gaussian_log_prob(z, 0.0, 0.0))
            log_qz = _sum_except_batch(gaussian_log_prob(z, mean, log_var))
            return log_px + log_pz - log_qz  # [B]

        log_w = jax.lax.map(log_weight, jax.random.split(rng, k))  # [k, B]
        log_px_iwae = jax.scipy.special.logsumexp(log_w, axis=0) - math.log(k)
        to_bpd = 1.0 / (self.num_dims * math.log(2.0))
        return {
            "elbo": jnp.mean(log_w, axis=0),
            "nll_iwae": -log_px_iwae,
            "bits_per_dim": -log_px_iwae * to_bpd,
            "elbo_bits_per_dim": -jnp.mean(log_w, axis=0) * to_bpd,
        }

    def _real_text_fields(self, real: dict) -> dict:
        """The text fields of the captions of ``real`` examples (as in training).

        Uses ``real``'s text fields or ``caption`` when it has them, else each example's
        training caption (:func:`~jaxgen.text.conditioning.caption_of` of image and label).
        """
        if all(k in real for k in self.text.fields):
            return {k: jnp.asarray(real[k]) for k in self.text.fields}
        transform = self.text.example_transform()
        keys = [k for k in ("image", "label", "caption") if k in real]
        items = [transform({k: real[k][i] for k in keys}) for i in range(len(real["image"]))]
        return {k: jnp.asarray(np.stack([it[k] for it in items])) for k in self.text.fields}

    def write_extras(self, params, real, rng, out_dir, step):
        """A strip of decoded linear interpolations between two test images' posterior means.

        Conditional models encode and decode with the images' own condition: the label
        switches half-way; the pooled caption embedding is interpolated with ``z``.
        """
        del rng
        images = jnp.asarray(real["image"])
        if self.text is not None:
            cond = self._condition(params, self._real_text_fields(real))
        else:
            cond = self._condition(params, {"label": jnp.asarray(real["label"])})
        mean, _ = self.encode(params, images, **cond)
        weights = jnp.linspace(0.0, 1.0, 10)

        def lerp(v):  # [2, ...] -> [10, ...]
            w = weights.reshape(-1, *[1] * (v.ndim - 1))
            return (1 - w) * v[0] + w * v[1]

        strip = {}
        if "labels" in cond:
            strip["labels"] = jnp.where(weights < 0.5, cond["labels"][0], cond["labels"][1])
        if "text" in cond:
            strip["text"] = lerp(cond["text"])
        decoded = to_uint8(jax.device_get(self.decode(params, lerp(mean), **strip)))
        images = np.concatenate([real["image"][:1], decoded, real["image"][1:2]])
        save_png(paths.join(out_dir, f"interpolation_{step}.png"), make_grid(images, columns=12))

    @classmethod
    def describe(cls, config):
        model = config_value(config, "model", {}) or {}
        latent = (
            f"{model['latent_channels']}-channel latent map"
            if model.get("latent_channels")
            else f"latent {model.get('latent_dim')}"
        )
        generic = super().describe(config)
        return generic.replace(
            architecture=f"conv VAE {tuple_text(model.get('channels'))}, {latent}",
            training=f"ELBO, beta={config_value(config, 'model.beta')}",
            likelihood_bound=f"IWAE, k={config_value(config, 'model.iwae_k')}",
            sampler_steps=None,  # one decoder call whatever the sampler
        )
