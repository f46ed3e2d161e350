"""Autoregressive image models: PixelCNN, Gated PixelCNN and PixelCNN++ (``family = pixelcnn``).

``config.model.variant`` picks the network and its likelihood:

* ``pixelcnn``: masked convolutions (van den Oord et al. 2016a), 256-way softmax;
* ``gated``: Gated PixelCNN (van den Oord et al. 2016b), 256-way softmax;
* ``pixelcnn_pp``: PixelCNN++ (Salimans et al. 2017), discretized logistic mixture.

Training is teacher-forced (all pixels in one pass); the loss is the negative
log-likelihood in nats per dimension and ``bits_per_dim`` = loss / ln 2. The
likelihood is exact, so :meth:`PixelCNN.likelihood` gives per-example test
``bits_per_dim``. ``sample.sampler`` = ``fast`` (default, cached incremental) or
``plain`` (a full network pass per pixel and channel); both give the same images.
``sample.temperature`` (default 1: draws from the model; 0: greedy) tempers every draw: the
256-way logits are divided by it, the mixture's logits too and its logistics' scales
multiplied.
Class-conditional with ``cond=class``. With ``model.clusters=K`` (data without labels or
text) the network is conditioned on the image's cluster among ``K`` clusters of the training
pixels, fitted by k-means before the first step and refined online as training goes
(:mod:`jaxgen.clusters`; its state in the ``model_state``); each sample draws its cluster
by the clusters' shares of the data, and ``bits_per_dim`` is then an upper bound,
``-log2 (p(c) p(x | c)) / D`` with ``c`` the image's nearest cluster (``p(x)`` sums
``p(c) p(x | c)`` over every ``c``).
Text-conditional with ``cond=text``: the pooled text embedding ``[B, D]`` of the caption
(training, likelihood) or of the prompt
(sampling) is the network's ``context`` vector, projected to the conditioning vector
that biases every gate (conditional gates, van den Oord et al. 2016b); the likelihood is
then ``-log p(x | caption)``. A jointly trained text encoder's parameters sit under
:data:`~jaxgen.text.conditioner.PARAMS_KEY` in the family's parameters (none for the
frozen pretrained one, whose outputs arrive in the batch). Without text, a ``context``
vector ``[B, D]`` in the batch or the conditioning also conditions the network.

Mixed precision (``precision=bfloat16``): the network (and a jointly trained text
encoder) computes in bfloat16 in training and in sampling; its outputs are cast to float32
before the 256-way log-softmax or the logistic-mixture log-likelihood, which are summed in
float32, and before each draw. :meth:`PixelCNN.likelihood` runs in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgen import clusters
from jaxgen.data.spec import DataSpec
from jaxgen.errors import UserError
from jaxgen.methods.base import Method
from jaxgen.methods.cluster_conditioning import ClusterConditioned
from jaxgen.methods.description import config_value
from jaxgen.methods.gradients import cast_floating
from jaxgen.models.gated_pixelcnn import GatedPixelCNNNet
from jaxgen.models.pixelcnn import PixelCNNNet
from jaxgen.models.pixelcnn_pp import PixelCNNPPNet
from jaxgen.pixelcnn import categorical, logistic_mixture
from jaxgen.pixelcnn.sampling import SAMPLERS, ARModel
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import PARAMS_KEY
from jaxgen.validate import check_sample_options_used

VARIANTS = ("pixelcnn", "gated", "pixelcnn_pp")


def build_model(model_config, data: DataSpec, num_classes: int) -> ARModel:
    """The network and head of ``model_config.variant`` for images of ``data.image_shape``."""
    m = model_config
    height, width, channels = data.image_shape
    variant = m.variant
    if variant not in VARIANTS:
        raise UserError(f"config key model.variant={variant!r}: expected one of {VARIANTS}")
    if m.get("scan_blocks", False) and variant != "pixelcnn_pp":
        raise UserError(
            f"config key model.scan_blocks=True: only model.variant='pixelcnn_pp' has "
            f"repeated blocks to scan, not {variant!r}"
        )
    if variant == "pixelcnn_pp":
        factor = 2 ** (m.num_levels - 1)
        if height % factor or width % factor:
            raise UserError(
                f"config key model.num_levels={m.num_levels}: image size {height}x{width} "
                f"is not divisible by {factor}"
            )
        net = PixelCNNPPNet(
            num_outputs=logistic_mixture.num_outputs(channels, m.num_mixtures),
            features=m.features, num_resnet=m.num_resnet, num_levels=m.num_levels,
            dropout=m.dropout, num_classes=num_classes, cond_dim=m.cond_dim,
            scan_blocks=bool(m.get("scan_blocks", False)),
        )  # fmt: skip
        return ARModel(net, data.image_shape, "logistic_mixture", m.num_mixtures)
    if m.features % (2 * channels) or m.output_features % channels:
        raise UserError(
            f"config keys model.features={m.features} and model.output_features="
            f"{m.output_features}: expected multiples of 2 * channels = {2 * channels}"
        )
    if variant == "pixelcnn":
        cls, extra = PixelCNNNet, {"num_blocks": m.num_layers}
    else:
        rows, cols = int(m.get("vertical_rows", 2)), int(m.get("vertical_cols", 3))
        if rows < 2:
            raise UserError(f"config key model.vertical_rows={rows}: expected at least 2")
        if cols < 3 or cols % 2 == 0:
            raise UserError(f"config key model.vertical_cols={cols}: expected an odd number >= 3")
        cls = GatedPixelCNNNet
        extra = {"num_layers": m.num_layers, "vertical_rows": rows, "vertical_cols": cols}
    net = cls(
        channels=channels, num_outputs=categorical.num_outputs(channels), features=m.features,
        kernel_size=m.kernel_size, output_features=m.output_features,
        num_classes=num_classes, cond_dim=m.cond_dim, **extra,
    )  # fmt: skip
    return ARModel(net, data.image_shape, "categorical")


class PixelCNN(ClusterConditioned, Method):
    """Exact-likelihood autoregressive models over 8-bit pixels."""

    supports_bfloat16 = True

    def __init__(self, config, data: DataSpec):
        super().__init__(config, data)
        self.num_classes = 0
        if data.cond == "class":
            self.num_classes = int(config.model.get("num_classes", 0)) or data.num_classes
            if self.num_classes <= 0:
                raise UserError(f"cond=class: data source {config.data.name!r} has no labels")
        self.cond_drop_prob = float(config.model.get("cond_drop_prob", 0.0))
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise UserError(
                f"config key model.cond_drop_prob={self.cond_drop_prob}: expected in [0, 1)"
            )
        # sample.temperature >= 0 and model.clusters >= 0: jaxgen.validate, before this.
        self.temperature = float(config.get("sample", {}).get("temperature", 1.0))
        self.clusters = self.read_clusters(config, data)
        self.model = build_model(config.model, data, self.num_classes or self.clusters)
        self.num_dims = math.prod(data.image_shape)

    @staticmethod
    def _net_params(params) -> dict:
        """The network's parameters (without the text encoder's or the clusters)."""
        return {k: v for k, v in params.items() if k not in (PARAMS_KEY, clusters.STATE_KEY)}

    def _cond(self, params, source: dict | None, drop: jax.Array | None = None) -> dict:
        """The network's conditioning inputs from a batch or sampling ``conditioning``.

        ``label`` int32 ``[B]`` (cond=class); ``context`` float32 ``[B, D]``: with
        cond=text the pooled text embedding of the batch's text fields (the null text,
        zeros, where ``drop`` bool ``[B]`` is True), else a ``context`` entry of
        ``source`` if there is one.
        """
        source = source or {}
        cond = {}
        if self.num_classes or self.clusters:
            cond["label"] = jnp.asarray(source["label"], jnp.int32)
        if self.text is not None:
            missing = [k for k in self.text.fields if k not in source]
            if missing:
                raise UserError(
                    f"cond=text: the conditioning lacks the text fields {missing}; "
                    "give prompts (sample.prompt or sample.prompts_file)"
                )
            pooled = self.text.embed(params, source).pooled.astype(jnp.float32)
            if drop is not None:
                pooled = jnp.where(drop[:, None], 0.0, pooled)
            cond["context"] = pooled
        elif "context" in source:
            cond["context"] = jnp.asarray(source["context"], jnp.float32)
        return cond

    def init_params(self, rng, batch):
        x = jnp.zeros(batch["image"].shape, jnp.float32)
        params, net_rng = {}, rng
        if self.text is not None:  # cond=text excludes cond=class: no labels
            net_rng, text_rng = jax.random.split(rng)
            params.update(self.text.init_params(text_rng))
            cond = {"context": jnp.zeros((x.shape[0], self.text.width), jnp.float32)}
        elif self.clusters:  # the label embedding's shape; the batch has no clusters yet
            cond = {"label": jnp.zeros((x.shape[0],), jnp.int32)}
        else:
            cond = self._cond(params, batch)
        # A counter-based (rbg) key compiles far faster than threefry for hundreds of tensors.
        key = jax.random.key(jax.random.bits(net_rng, (), jnp.uint32), impl="rbg")
        net = self.model.net.init(key, x, cond.get("label"), cond.get("context"))["params"]
        return {**net, **params}

    def _nll(self, params, batch, rng, train: bool) -> jax.Array:
        """Per-image negative log-likelihood in nats, ``[B]`` (given the caption with text).

        In training with cond=text, ``model.cond_drop_prob`` of the captions are replaced
        by the null text, so that the same network also models ``p(x)``.
        """
        images = batch["image"]
        drop = None
        if train and self.text is not None and self.cond_drop_prob > 0:
            drop_rng, rng = jax.random.split(rng)
            drop = jax.random.bernoulli(drop_rng, self.cond_drop_prob, (images.shape[0],))
        cond = self._cond(params, batch, drop)
        out, _ = self.model.apply(
            self._net_params(params), images, cond, train=train, rng=rng if train else None
        )
        return -self.model.log_prob(out, images)

    def loss(self, params, batch, rng):
        nats_per_dim = jnp.mean(self._nll(params, batch, rng, train=True)) / self.num_dims
        return nats_per_dim, {"bits_per_dim": nats_per_dim / math.log(2.0)}

    has_likelihood = True

    def likelihood(self, params, batch, rng):
        if self.clusters:  # the bound -log p(c) - log p(x | c) at the image's nearest cluster
            labels, log_share = self.nearest_clusters(params, batch["image"])
            nll = self._nll(params, {**batch, "label": labels}, rng, train=False) - log_share
        else:
            nll = self._nll(params, batch, rng, train=False)
        return {"bits_per_dim": nll / (self.num_dims * math.log(2.0)), "nll": nll}

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """``sampler`` is ``fast`` (the default) or ``plain``; no other option applies."""
        name = options.sampler or "fast"
        if name not in SAMPLERS:
            raise UserError(
                f"config key sample.sampler={name!r}: expected one of {sorted(SAMPLERS)}"
            )
        check_sample_options_used(self.config.family, options, ("sampler",))
        return options.replace(sampler=name)

    def sample(self, params, rng, num, conditioning=None, options=None):
        """float32 images in [0, 1], ``[num, H, W, C]``, drawn by the sampler of ``options``
        (:class:`~jaxgen.sampling.SampleOptions`; None: the config's); the network runs in
        ``compute_dtype``."""
        name = self.resolve_sample_options(options).sampler
        params = cast_floating(params, self.compute_dtype)
        conditioning = dict(conditioning or {})
        if self.num_classes and "label" not in conditioning:
            conditioning["label"] = jnp.arange(num, dtype=jnp.int32) % self.num_classes
        if self.clusters and "label" not in conditioning:  # drawn by the clusters' shares
            rng, cluster_rng = jax.random.split(rng)
            conditioning["label"] = self.draw_clusters(params, cluster_rng, num)
        if self.text is not None and not any(k in conditioning for k in self.text.fields):
            # No prompt: the null text (a meaningful p(x) only with model.cond_drop_prob > 0).
            cond = {"context": jnp.zeros((num, self.text.width), jnp.float32)}
        else:
            cond = self._cond(params, conditioning)  # the text is encoded once, before the loop
        net_params = self._net_params(params)
        images = SAMPLERS[name](
            self.model, net_params, rng, num, cond, temperature=self.temperature
        )
        return images.astype(jnp.float32) / 255.0

    @classmethod
    def describe(cls, config):
        model = config_value(config, "model", {}) or {}
        variant = model.get("variant")
        if variant == "pixelcnn_pp":
            arch = (
                f"PixelCNN++ {model.get('num_levels')}x{model.get('num_resnet')} resnets, "
                f"{model.get('features')} features, {model.get('num_mixtures')} logistics"
            )
        else:
            name = {"gated": "Gated PixelCNN", "pixelcnn": "PixelCNN"}.get(variant, str(variant))
            arch = f"{name}, {model.get('num_layers')} layers, {model.get('features')} features"
            rows, cols = int(model.get("vertical_rows") or 2), int(model.get("vertical_cols") or 3)
            if variant == "gated" and rows != 2:
                arch += f", {rows}-row vertical windows"
            if variant == "gated" and cols != 3:
                arch += f", {cols} columns wide"
        generic = super().describe(config)
        k = int(model.get("clusters") or 0)
        return generic.replace(
            architecture=arch + (f", conditioned on {k} pixel clusters" if k else ""),
            training="max. likelihood, teacher forcing",
            likelihood_bound=f"bound: the image's nearest of {k} clusters" if k else "exact",
        )
