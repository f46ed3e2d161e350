"""Chooses and builds the feature network of a style-transfer run from ``config.model``.

``model.network``: ``vgg19`` (needs ``model.vgg19.weights``), ``random_multiscale`` (the
random-filter fallback) or ``auto`` (VGG19 when a weights file is given, else the fallback,
which is logged as a warning). Each network has its own section, ``model.vgg19`` or
``model.random``, with its layers and loss weights, because feature magnitudes differ
between the two networks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.errors import UserError
from jaxgen.models.vgg import (
    POOLINGS,
    VGG19,
    VGG19_LAYERS,
    RandomMultiScale,
    random_multiscale_layers,
)
from jaxgen.style_transfer import weights as weights_lib

NETWORKS = ("auto", "vgg19", "random_multiscale")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """A frozen feature extractor and the loss settings that go with it.

    Attributes:
      name: ``vgg19`` or ``random_multiscale``.
      apply: ``(params, images)`` -> ``{layer: [B, h, w, C]}`` for float32 images
        ``[B, H, W, 3]`` in ``[0, 1]``.
      params: the frozen parameters ``apply`` takes (passed as an argument so that jitted
        functions do not bake them in as constants).
      content_layers: layers of the content loss.
      style_weights: layer -> weight ``w_l`` of the style loss.
      content_weight, style_weight, tv_weight: the weights of the three losses.
      min_size: the smallest image side (pixels) whose tapped feature maps are not empty.
      metadata: what to record about the network in the run's outputs.
    """

    name: str
    apply: Callable[[dict, jax.Array], dict[str, jax.Array]]
    params: dict
    content_layers: tuple[str, ...]
    style_weights: dict[str, float]
    content_weight: float
    style_weight: float
    tv_weight: float
    min_size: int
    metadata: dict


def parse_layers(text: str, key: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """``"conv1_1,conv2_1"`` -> ``("conv1_1", "conv2_1")``; UserError naming ``key`` if unknown."""
    layers = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in layers if t not in known]
    if bad or not layers:
        raise UserError(f"config key {key}={text!r}: expected comma-separated names from {known}")
    return layers


def parse_layer_weights(text: str, key: str, layers: tuple[str, ...]) -> dict[str, float]:
    """``"1,0.5,..."`` (one per layer; empty: equal) -> weights normalised to sum to one."""
    if not text.strip():
        values = [1.0] * len(layers)
    else:
        try:
            values = [float(t) for t in text.split(",")]
        except ValueError:
            raise UserError(
                f"config key {key}={text!r}: expected comma-separated numbers"
            ) from None
        if len(values) != len(layers) or min(values) < 0 or sum(values) <= 0:
            raise UserError(
                f"config key {key}={text!r}: expected {len(layers)} non-negative numbers "
                f"(one per style layer), not all zero"
            )
    total = sum(values)
    return {n: v / total for n, v in zip(layers, values, strict=True)}


def resolve_network_name(model: ml_collections.ConfigDict) -> str:
    """The network ``model.network`` asks for, with ``auto`` resolved."""
    if model.network not in NETWORKS:
        raise UserError(f"config key model.network={model.network!r}: expected one of {NETWORKS}")
    if model.network == "auto":
        return "vgg19" if model.vgg19.weights else "random_multiscale"
    if model.network == "vgg19" and not model.vgg19.weights:
        raise UserError(
            "config key model.vgg19.weights is empty: model.network=vgg19 needs a .npz or "
            ".safetensors export (scripts/convert_vgg19.py makes one)"
        )
    return model.network


def build_network(model: ml_collections.ConfigDict) -> FeatureNetwork:
    """Loads/creates the feature network; bad settings or weight files raise UserError."""
    name = resolve_network_name(model)
    if name == "vgg19":
        return _build_vgg19(model.vgg19)
    if model.network == "auto":
        reason = "no VGG19 weights given (model.vgg19.weights is empty)"
        log.warning(
            "style transfer: %s; falling back to a feature network of random multi-scale "
            "filters (Ustyuzhaninov et al. 2017; He et al. 2016): textures and colours "
            "transfer, semantic structure less so.",
            reason,
        )
    else:
        reason = "chosen by model.network=random_multiscale"
        log.info("style transfer: random multi-scale feature network (%s)", reason)
    return _build_random(model.random, reason)


def _sections(cfg, prefix: str, known: tuple[str, ...]):
    content = parse_layers(cfg.content_layers, f"{prefix}.content_layers", known)
    style_layers = parse_layers(cfg.style_layers, f"{prefix}.style_layers", known)
    style = parse_layer_weights(
        cfg.style_layer_weights, f"{prefix}.style_layer_weights", style_layers
    )
    for key in ("content_weight", "style_weight", "tv_weight"):
        if float(cfg[key]) < 0:
            raise UserError(f"config key {prefix}.{key}={cfg[key]}: expected a number >= 0")
    return content, style


def _build_vgg19(cfg) -> FeatureNetwork:
    if cfg.pooling not in POOLINGS:
        raise UserError(
            f"config key model.vgg19.pooling={cfg.pooling!r}: expected one of {POOLINGS}"
        )
    content, style = _sections(cfg, "model.vgg19", VGG19_LAYERS)
    params = jax.tree.map(jnp.asarray, weights_lib.load_vgg19(cfg.weights))
    taps = tuple(dict.fromkeys(content + tuple(style)))
    module = VGG19(taps=taps, pooling=cfg.pooling)
    pools = max(int(t[4]) for t in taps) - 1  # convX_Y sits behind X - 1 poolings
    return FeatureNetwork(
        name="vgg19",
        apply=lambda p, images: module.apply({"params": p}, images),
        params=params,
        content_layers=content,
        style_weights=style,
        content_weight=float(cfg.content_weight),
        style_weight=float(cfg.style_weight),
        tv_weight=float(cfg.tv_weight),
        min_size=2**pools,
        metadata={
            "feature_network": "vgg19",
            "weights": cfg.weights,
            "pooling": cfg.pooling,
            "content_layers": list(content),
            "style_layers": style,
        },
    )


def _build_random(cfg, reason: str) -> FeatureNetwork:
    for key in ("scales", "channels", "kernel_size", "depth"):
        if int(cfg[key]) < 1:
            raise UserError(f"config key model.random.{key}={cfg[key]}: expected an integer >= 1")
    if cfg.kernel_size % 2 == 0:
        raise UserError(f"config key model.random.kernel_size={cfg.kernel_size}: expected odd")
    known = random_multiscale_layers(cfg.scales)
    content, style = _sections(cfg, "model.random", known)
    taps = tuple(dict.fromkeys(content + tuple(style)))
    deepest = max([int(t[len("scale") :]) for t in taps if t != "color"] + [1])
    module = RandomMultiScale(
        taps=taps,
        scales=cfg.scales,
        channels=cfg.channels,
        kernel_size=cfg.kernel_size,
        depth=cfg.depth,
    )
    probe = jnp.zeros((1, 2**cfg.scales, 2**cfg.scales, 3), jnp.float32)
    params = module.init(jax.random.key(cfg.seed), probe)["params"]
    return FeatureNetwork(
        name="random_multiscale",
        apply=lambda p, images: module.apply({"params": p}, images),
        params=params,
        content_layers=content,
        style_weights=style,
        content_weight=float(cfg.content_weight),
        style_weight=float(cfg.style_weight),
        tv_weight=float(cfg.tv_weight),
        min_size=2 ** (deepest - 1) * (cfg.kernel_size // 2 + 1),  # reflect padding needs it
        metadata={
            "feature_network": "random_multiscale",
            "why": reason,
            "references": ["Ustyuzhaninov et al. 2017", "He et al. 2016"],
            "seed": cfg.seed,
            "scales": cfg.scales,
            "channels": cfg.channels,
            "kernel_size": cfg.kernel_size,
            "depth": cfg.depth,
            "content_layers": list(content),
            "style_layers": style,
        },
    )


def calibrate(net: FeatureNetwork, style: jax.Array) -> FeatureNetwork:
    """Scales the random network's filters to mean activation 1 on the style image.

    Gatys et al. rescale VGG19's filters so that each has mean activation 1 over ImageNet;
    the random network has no data set to calibrate on, so it uses the style image
    ``[H, W, 3]``: every tapped layer's last convolution (kernel and bias: ReLU is positively
    homogeneous) is divided by its filter's mean response (floored at a tenth of the layer's
    median, so that filters silent on the style are not blown up). Without this the style loss is
    dominated by the layers with the largest activations and fine texture is lost. VGG19 is
    returned unchanged.
    """
    if net.name != "random_multiscale":
        return net
    feats = jax.jit(net.apply)(net.params, style[None])
    params = {name: dict(value) for name, value in net.params.items()}
    depth = net.metadata["depth"]
    for layer, f in feats.items():
        mean = jnp.mean(f, axis=(0, 1, 2))  # [C]
        # A filter (almost) silent on the style would be blown up: floor at a tenth of the median.
        scale = 1.0 / jnp.maximum(mean, jnp.maximum(0.1 * jnp.median(mean), 1e-6))
        conv = layer if layer == "color" else f"{layer}_{depth}"
        params[conv] = {k: v * scale for k, v in params[conv].items()}
    metadata = {**net.metadata, "calibration": "filters scaled to mean activation 1 on the style"}
    return dataclasses.replace(net, params=params, metadata=metadata)
