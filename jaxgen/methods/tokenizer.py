"""Image tokenizer: a convolutional autoencoder with finite scalar quantisation
(``family = image_tokenizer``, stage 1 of ``configs/tokens.py``).

Per training batch, with ``x`` the images in [-1, 1]:

  z = Encoder(x)                        [B, h, w, d], h = H / 2 ** len(model.channels)
  q = FSQ(z)                            codes on the grid of model.levels, straight-through
  x_hat = Decoder(q)                    [B, H, W, C]
  loss = mean (x_hat - x)^2             model.recon_loss = l2 (or mean |x_hat - x|: l1)

FSQ (:mod:`jaxgen.models.quantizer`) has no codebook parameters, no commitment loss and no
dead codes to restart. Each image becomes ``h * w`` token indices in ``[0, prod(levels))``,
read in raster order (:meth:`ImageTokenizer.encode_indices`); the prior of stage 2
(``family = token_prior``) models them. Logged per step: ``recon_mse`` (mean squared error
of the clipped reconstruction, pixels in [0, 1]), ``psnr`` (dB, of that batch MSE),
``codebook_usage`` (share of the codes used in the batch) and ``codebook_perplexity``.

The family draws no images of its own (``is_generator = False``, like the classifier) and
has no likelihood; the test split's reconstruction error is reported by the prior's
likelihood evaluator (``recon_mse``, ``recon_psnr``) next to its bits per token.
Mixed precision: the encoder and decoder compute in bfloat16 in training; the latents are
cast to float32 before the quantiser and the reconstruction before the loss. The frozen
tokenizer of a prior (:class:`FrozenTokenizer`) computes in float32.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.base import Method, images_to_symmetric
from jaxgen.methods.description import config_value, tuple_text
from jaxgen.models.precision import floating_dtype
from jaxgen.models.quantizer import FSQ, codebook_usage
from jaxgen.models.tokenizer_nets import TokenDecoder, TokenEncoder, TokenizerNetConfig

RECON_LOSSES = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    levels: tuple[int, ...]
    net: TokenizerNetConfig
    recon_loss: str

    @classmethod
    def from_config(cls, model) -> TokenizerConfig:
        levels = tuple(int(n) for n in model.levels)
        if not levels or min(levels) < 3:
            raise UserError(f"config key model.levels={tuple(model.levels)}: expected ints >= 3")
        channels = tuple(int(c) for c in model.channels)
        if not channels or min(channels) <= 0:
            raise UserError(f"config key model.channels={model.channels}: expected positive widths")
        if int(model.num_res_blocks) < 0:
            raise UserError(
                f"config key model.num_res_blocks={model.num_res_blocks}: expected >= 0"
            )
        if model.recon_loss not in RECON_LOSSES:
            raise UserError(
                f"config key model.recon_loss={model.recon_loss!r}: expected one of {RECON_LOSSES}"
            )
        net = TokenizerNetConfig(channels, int(model.num_res_blocks), len(levels))
        return cls(levels, net, str(model.recon_loss))


def psnr(mse: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB of a mean squared error of pixels in [0, 1]."""
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


class ImageTokenizer(Method):
    """The FSQ autoencoder; see the module docstring."""

    supports_bfloat16 = True
    is_generator = False  # it reconstructs and tokenizes; the token prior draws the images

    def __init__(self, config, data: DataSpec):
        super().__init__(config, data)
        if data.cond != "none":
            raise UserError(
                f"data.cond={data.cond!r}: the image tokenizer is unconditional (the token "
                "prior of configs/tokens.py:stage=prior takes the condition)"
            )
        self.cfg = TokenizerConfig.from_config(config.model)
        self.fsq = FSQ(self.cfg.levels)
        factor = 2 ** len(self.cfg.net.channels)
        height, width, channels = data.image_shape
        if height % factor or width % factor:
            raise UserError(
                f"config key model.channels={self.cfg.net.channels}: image size "
                f"{height}x{width} is not divisible by {factor} (2 ** len(model.channels))"
            )
        self.grid = (height // factor, width // factor)
        self.encoder = TokenEncoder(self.cfg.net)
        self.decoder = TokenDecoder(self.cfg.net, channels)

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image, ``h * w``."""
        return self.grid[0] * self.grid[1]

    # --- public pieces (the token prior uses them) -------------------------
    def latents(self, params, images: jax.Array) -> jax.Array:
        """uint8 images ``[B, H, W, C]`` -> float32 latents ``[B, h, w, d]`` (before FSQ)."""
        x = images_to_symmetric(images, floating_dtype(params["encoder"]))
        return self.encoder.apply({"params": params["encoder"]}, x).astype(jnp.float32)

    def decode_codes(self, params, codes: jax.Array) -> jax.Array:
        """Codes ``[B, h, w, d]`` -> float32 images ``[B, H, W, C]``, unclipped, ~[-1, 1]."""
        codes = codes.astype(floating_dtype(params["decoder"]))
        return self.decoder.apply({"params": params["decoder"]}, codes).astype(jnp.float32)

    def encode_indices(self, params, images: jax.Array) -> jax.Array:
        """uint8 images ``[B, H, W, C]`` -> int32 token indices ``[B, h * w]`` (raster order)."""
        indices = self.fsq.codes_to_indices(self.fsq.quantize(self.latents(params, images)))
        return indices.reshape(images.shape[0], -1)

    def decode_indices(self, params, indices: jax.Array) -> jax.Array:
        """int32 indices ``[B, h * w]`` -> float32 images ``[B, H, W, C]`` in [0, 1]."""
        codes = self.fsq.indices_to_codes(indices.reshape(-1, *self.grid))
        return jnp.clip((self.decode_codes(params, codes) + 1.0) / 2.0, 0.0, 1.0)

    # --- Method interface ----------------------------------------------------
    def init_params(self, rng, batch):
        enc_rng, dec_rng = jax.random.split(rng)
        x = images_to_symmetric(batch["image"][:1])
        codes = jnp.zeros((1, *self.grid, self.fsq.dim), jnp.float32)
        return {
            "encoder": self.encoder.init(enc_rng, x)["params"],
            "decoder": self.decoder.init(dec_rng, codes)["params"],
        }

    def loss(self, params, batch, rng):
        del rng
        x = images_to_symmetric(batch["image"])
        codes = self.fsq.quantize(self.latents(params, batch["image"]))
        x_hat = self.decode_codes(params, codes)
        error = x_hat - x
        loss = jnp.mean(error**2) if self.cfg.recon_loss == "l2" else jnp.mean(jnp.abs(error))
        # The reconstruction as it is drawn: clipped, pixels in [0, 1].
        mse = jnp.mean(((jnp.clip(x_hat, -1.0, 1.0) - x) / 2.0) ** 2)
        usage = codebook_usage(self.fsq.codes_to_indices(codes), self.codebook_size)
        return loss, {"recon_mse": mse, "psnr": psnr(mse), **usage}

    def sample(self, params, rng, num, conditioning=None, options=None):
        del params, rng, num, conditioning, options
        raise UserError(
            "family 'image_tokenizer' draws no images; train a token prior on it: "
            "configs/tokens.py:stage=prior,tokenizer=<this workdir>"
        )

    @classmethod
    def describe(cls, config):
        model = config_value(config, "model", {}) or {}
        levels = tuple(model.get("levels") or ())
        channels = model.get("channels") or ()
        size = config_value(config, "data.image_size")
        grid = ""
        if size and channels:
            side = int(size) // 2 ** len(channels)
            grid = f", {side}x{side} tokens"
        arch = (
            f"FSQ {tuple_text(list(levels))} = {math.prod(levels) if levels else '?'} codes, "
            f"conv {tuple_text(channels)}{grid}"
        )
        generic = super().describe(config)
        return generic.replace(
            architecture=arch, training=f"{model.get('recon_loss', 'l2')} reconstruction"
        )


class FrozenTokenizer:
    """A trained :class:`ImageTokenizer` run, loaded for a token prior (its EMA parameters,
    frozen, float32).

    Attributes:
      method: the :class:`ImageTokenizer` (its ``grid``, ``codebook_size``, ``num_tokens``).
      params: its float32 parameters.
      workdir: the run's workdir.
    """

    def __init__(self, workdir: str, data: DataSpec, key: str = "model.tokenizer"):
        from jaxgen.checkpoints import load_params_from
        from jaxgen.workdir import trained_config

        if not workdir:
            raise UserError(
                f"config key {key}='': expected the workdir of a trained image_tokenizer run "
                "(configs/tokens.py:stage=tokenizer)"
            )
        saved = trained_config(workdir)
        if saved is None:
            raise UserError(
                f"config key {key}={workdir!r}: no config.json there (expected an "
                "image_tokenizer run's workdir)"
            )
        tok_config = ml_collections.ConfigDict(saved)
        if tok_config.get("family") != "image_tokenizer":
            raise UserError(
                f"config key {key}={workdir!r}: the run's family is "
                f"{tok_config.get('family')!r}, expected 'image_tokenizer'"
            )
        size = int(tok_config.data.get("image_size", 0))
        if size != data.image_shape[0]:
            raise UserError(
                f"config key {key}={workdir!r}: the tokenizer was trained on {size}x{size} "
                f"images, this run's data.image_size is {data.image_shape[0]}"
            )
        self.workdir = workdir
        self.method = ImageTokenizer(tok_config, DataSpec(data.image_shape, 0, "none"))
        h, w, c = data.image_shape
        example = {"image": jnp.zeros((1, h, w, c), jnp.uint8), "label": jnp.zeros((1,), jnp.int32)}
        abstract = jax.eval_shape(self.method.init_params, jax.random.PRNGKey(0), example)
        try:
            self.params = load_params_from(workdir, abstract, key="ema_params")
        except UserError as e:
            raise UserError(str(e).replace("config key init_from", f"config key {key}")) from None

    @classmethod
    def from_method(cls, method: ImageTokenizer, params) -> FrozenTokenizer:
        """The frozen tokenizer of an in-memory :class:`ImageTokenizer` (tests)."""
        self = cls.__new__(cls)
        self.workdir, self.method, self.params = "", method, params
        return self

    def encode(self, images: jax.Array) -> jax.Array:
        """uint8 images ``[B, H, W, C]`` -> int32 tokens ``[B, N]``, no gradient."""
        return jax.lax.stop_gradient(self.method.encode_indices(self.params, images))

    def decode(self, tokens: jax.Array) -> jax.Array:
        """int32 tokens ``[B, N]`` -> float32 images ``[B, H, W, C]`` in [0, 1]."""
        return self.method.decode_indices(self.params, tokens)
