"""Image classifier: the 'domain' feature extractor of the sample metrics.

Trained through the same launcher as the generators (``configs/classifier.py``) with
softmax cross-entropy on the class labels:

  logits = ClassifierNet(x)                     [B, K]
  loss = mean_b -log softmax(logits)_b[y_b]     nats per image
  accuracy = mean_b [argmax logits_b == y_b]

It cannot sample (``--mode=sample`` is a :class:`UserError`) and has no likelihood.
With ``precision=bfloat16`` the network computes in bfloat16 in training; the logits are
cast to float32 for the cross-entropy and the accuracy. :meth:`Classifier.logits` (the
features of the metrics) computes in the dtype of the parameters it is given (float32).
``scripts/export_classifier.py`` writes its weights to ``jaxgen/evaluate/weights/``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxgen.errors import UserError
from jaxgen.methods.base import Method, images_to_unit
from jaxgen.methods.description import config_value, tuple_text
from jaxgen.models.classifier import ClassifierNet
from jaxgen.models.precision import floating_dtype


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, ...]
    feature_dim: int
    dropout: float
    label_smoothing: float

    @classmethod
    def from_config(cls, model) -> ClassifierConfig:
        cfg = cls(
            channels=tuple(int(c) for c in model.channels),
            feature_dim=int(model.feature_dim),
            dropout=float(model.dropout),
            label_smoothing=float(model.get("label_smoothing", 0.0)),
        )
        if not cfg.channels or min(cfg.channels) <= 0:
            raise UserError(f"config key model.channels={model.channels}: expected positive widths")
        if not 0.0 <= cfg.dropout < 1.0:
            raise UserError(f"config key model.dropout={cfg.dropout}: expected 0 <= dropout < 1")
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise UserError(
                f"config key model.label_smoothing={cfg.label_smoothing}: expected 0 <= value < 1"
            )
        return cfg


class Classifier(Method):
    """Cross-entropy classifier of ``batch["label"]`` from ``batch["image"]``."""

    supports_bfloat16 = True
    is_generator = False  # a feature extractor for the evaluators: it draws no images

    def __init__(self, config, data):
        super().__init__(config, data)
        if data.num_classes < 2:
            raise UserError(
                f"family 'classifier' needs labelled data; {config.data.name!r} has "
                f"{data.num_classes} classes"
            )
        self.model_config = ClassifierConfig.from_config(config.model)
        self.net = ClassifierNet(
            num_classes=data.num_classes,
            channels=self.model_config.channels,
            feature_dim=self.model_config.feature_dim,
            dropout=self.model_config.dropout,
        )

    def init_params(self, rng, batch):
        return self.net.init(rng, images_to_unit(batch["image"][:1]))["params"]

    def logits(self, params, images: jax.Array) -> jax.Array:
        """uint8 images ``[B, H, W, C]`` -> logits ``[B, K]`` (inference, no dropout)."""
        return self.net.apply({"params": params}, images_to_unit(images))

    def loss(self, params, batch, rng):
        images = images_to_unit(batch["image"], floating_dtype(params))
        logits = self.net.apply({"params": params}, images, train=True, rngs={"dropout": rng})
        logits = logits.astype(jnp.float32)  # [B, K]
        targets = optax.smooth_labels(
            jax.nn.one_hot(batch["label"], self.data.num_classes), self.model_config.label_smoothing
        )
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"accuracy": accuracy}

    def sample(self, params, rng, num, conditioning=None, options=None):
        del params, rng, num, conditioning, options
        raise UserError(
            "family 'classifier' cannot sample; export it with scripts/export_classifier.py "
            "and use it as the 'domain' feature extractor"
        )

    @classmethod
    def describe(cls, config):
        channels = config_value(config, "model.channels")
        generic = super().describe(config)
        return generic.replace(architecture=f"CNN {tuple_text(channels)}", training="cross-entropy")
