"""Optimisation of the pixels (Gatys et al. 2016), coarse to fine.

The image is the only variable: at each of ``num_scales`` resolutions (halving from the
output size down), it starts from the previous scale's result upsampled (or, at the coarsest,
from the content image, the style image or white noise) and follows L-BFGS
(``optax.lbfgs`` with a zoom line search, unconstrained, as in the paper) or Adam (projected
back to ``[0, 1]`` after every step) on

    loss = content_weight * content_loss + style_weight * style_loss + tv_weight * tv_loss.

With ``keep_colors`` the variable is the YIQ luminance ``[H, W, 1]`` (fed to the network as
grey RGB) and the content image's I, Q are put back at the end (``color.py``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.errors import UserError
from jaxgen.style_transfer import color, inputs, network
from jaxgen.style_transfer.losses import content_loss, gram_matrix, style_loss, tv_loss
from jaxgen.style_transfer.network import FeatureNetwork

INITS = ("content", "style", "noise")
OPTIMIZERS = ("lbfgs", "adam")
TERMS = ("content_loss", "style_loss", "tv_loss", "loss")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to optimise one image.

    Attributes:
      size: longer side of the output in pixels (the content image's aspect ratio is kept).
      num_scales: resolutions, ``size / 2**(num_scales - 1)`` ... ``size``.
      num_steps: optimiser steps over all scales (split evenly, the remainder at the finest).
      init: ``content``, ``style`` or ``noise`` (uniform in ``[0, 1]``).
      optimizer: ``lbfgs`` or ``adam``.
      learning_rate: Adam's step size, in pixel units (images are in ``[0, 1]``).
      lbfgs_memory: number of past updates L-BFGS keeps.
      keep_colors: luminance-only transfer.
      style_scale: the style image is resized to ``style_scale**2`` times the output's area.
      seed: seeds the noise initialisation.
      log_every: ``on_log`` is called every this many steps (and at the last step).
      sample_every: ``on_sample`` is called every this many steps (0: never during the run).
    """

    size: int = 256
    num_scales: int = 2
    num_steps: int = 200
    init: str = "content"
    optimizer: str = "lbfgs"
    learning_rate: float = 0.02
    lbfgs_memory: int = 10
    keep_colors: bool = False
    style_scale: float = 1.0
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0

    def validate(self) -> None:
        """UserError naming the first bad setting (as its ``style.*``/``train.*`` config key)."""
        checks = (
            (self.init in INITS, "style.init", self.init, f"one of {INITS}"),
            (self.optimizer in OPTIMIZERS, "style.optimizer", self.optimizer,
             f"one of {OPTIMIZERS}"),
            (self.num_scales >= 1, "style.num_scales", self.num_scales, "an integer >= 1"),
            (self.num_steps >= self.num_scales, "train.num_steps", self.num_steps,
             ">= style.num_scales"),
            (self.learning_rate > 0, "optimizer.learning_rate", self.learning_rate, "a number > 0"),
            (self.lbfgs_memory >= 1, "style.lbfgs_memory", self.lbfgs_memory, "an integer >= 1"),
            (self.style_scale > 0, "style.style_scale", self.style_scale, "a number > 0"),
            (self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1"),
            (self.sample_every >= 0, "train.sample_every", self.sample_every, "an integer >= 0"),
        )  # fmt: skip
        for ok, key, value, expected in checks:
            if not ok:
                raise UserError(f"config key {key}={value!r}: expected {expected}")

    def scale_steps(self) -> list[int]:
        """Optimiser steps at each scale, coarsest first."""
        base = self.num_steps // self.num_scales
        return [base] * (self.num_scales - 1) + [self.num_steps - base * (self.num_scales - 1)]


@dataclasses.dataclass
class Result:
    """The stylised image float32 ``[H, W, 3]`` in ``[0, 1]``, its final loss terms, the time."""

    image: np.ndarray
    terms: dict[str, float]
    seconds: float
    steps: int


def scale_shape(final_shape: tuple[int, int], octaves: int) -> tuple[int, int]:
    """``final_shape`` halved ``octaves`` times (rounded)."""
    return tuple(max(1, round(n / 2**octaves)) for n in final_shape)


def check_sizes(content: np.ndarray, style: np.ndarray, net: FeatureNetwork, settings: Settings):
    """UserError when the coarsest scale is too small for the network's deepest layer."""
    final_shape = inputs.output_shape(content, settings.size)
    coarsest = scale_shape(final_shape, settings.num_scales - 1)
    area = settings.style_scale**2 * coarsest[0] * coarsest[1]
    for what, shape in (("output", coarsest), ("style image", inputs.shape_with_area(style, area))):
        if min(shape) < net.min_size:
            raise UserError(
                f"config key data.image_size={settings.size}: at the coarsest of "
                f"style.num_scales={settings.num_scales} scales the {what} is "
                f"{shape[1]}x{shape[0]} px, smaller than the {net.min_size} px that the "
                f"{net.name} layers need; raise data.image_size or lower style.num_scales"
            )


def prepare_targets(net: FeatureNetwork, content: jax.Array, style: jax.Array) -> dict:
    """Features of the content ``[H, W, 3]`` and Gram matrices of the style ``[h, w, 3]``."""
    c_feats = net.apply(net.params, content[None])
    s_feats = net.apply(net.params, style[None])
    return {
        "content": {n: c_feats[n] for n in net.content_layers},
        "grams": {n: gram_matrix(s_feats[n]) for n in net.style_weights},
    }


def make_terms_fn(net: FeatureNetwork, channels: int) -> Callable:
    """``(x [H, W, channels], targets, params) -> {content_loss, style_loss, tv_loss, loss}``."""

    def terms(x, targets, params):
        rgb = x if channels == 3 else jnp.repeat(x, 3, axis=-1)
        feats = net.apply(params, rgb[None])
        c = content_loss(feats, targets["content"], net.content_layers)
        s = style_loss(feats, targets["grams"], net.style_weights)
        t = tv_loss(x[None])
        total = net.content_weight * c + net.style_weight * s + net.tv_weight * t
        return {"content_loss": c, "style_loss": s, "tv_loss": t, "loss": total}

    return terms


def make_optimizer(settings: Settings) -> optax.GradientTransformationExtraArgs:
    if settings.optimizer == "lbfgs":
        return optax.lbfgs(memory_size=settings.lbfgs_memory)
    return optax.adam(settings.learning_rate)


def make_step(terms_fn: Callable, opt, settings: Settings) -> Callable:
    """Jitted ``(x, opt_state, targets, params) -> (x, opt_state)``: one optimiser step."""

    def step(x, opt_state, targets, params):
        def value_fn(y):
            return terms_fn(y, targets, params)["loss"]

        if settings.optimizer == "lbfgs":
            value, grad = optax.value_and_grad_from_state(value_fn)(x, state=opt_state)
            updates, opt_state = opt.update(
                grad, opt_state, x, value=value, grad=grad, value_fn=value_fn
            )
            return optax.apply_updates(x, updates), opt_state
        grad = jax.grad(value_fn)(x)
        updates, opt_state = opt.update(grad, opt_state, x)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), opt_state

    return jax.jit(step)


def stylize(
    content: np.ndarray,
    style: np.ndarray,
    net: FeatureNetwork,
    settings: Settings,
    on_log: Callable[[int, dict[str, float], tuple[int, int]], None] | None = None,
    on_sample: Callable[[int, np.ndarray], None] | None = None,
) -> Result:
    """Optimises the image for uint8 ``content`` ``[H, W, 3]`` and ``style`` ``[h, w, 3]``.

    Args:
      on_log: called as ``on_log(step, terms, (H, W))`` with floats for :data:`TERMS`, at
        step 0 (the initial image), every ``log_every`` steps and at the end of each scale.
      on_sample: called as ``on_sample(step, image)`` with the current float32 RGB image.
    """
    settings.validate()
    start = time.perf_counter()
    final_shape = inputs.output_shape(content, settings.size)
    check_sizes(content, style, net, settings)
    net = _calibrated(net, content, style, settings)
    channels = 1 if settings.keep_colors else 3
    terms_fn = make_terms_fn(net, channels)
    terms_jit = jax.jit(terms_fn)
    opt = make_optimizer(settings)
    step = 0
    x = None
    last_terms: dict[str, float] = {}
    for k, n_steps in enumerate(settings.scale_steps()):
        shape = scale_shape(final_shape, settings.num_scales - 1 - k)
        content_rgb, content_k, style_k = _scale_inputs(content, style, shape, settings)
        targets = jax.jit(lambda c, s: prepare_targets(net, c, s))(content_k, style_k)
        if x is None:
            x = _initial(settings, content_k, style_k, shape, channels)
        else:
            x = jax.image.resize(x, (*shape, channels), "bilinear")
        opt_state = opt.init(x)
        step_fn = make_step(terms_fn, opt, settings)
        if on_log is not None and step == 0:
            on_log(0, {k: float(v) for k, v in terms_jit(x, targets, net.params).items()}, shape)
        for i in range(n_steps):
            x, opt_state = step_fn(x, opt_state, targets, net.params)
            step += 1
            last = step == settings.num_steps
            if on_log is not None and (step % settings.log_every == 0 or last or i + 1 == n_steps):
                last_terms = {k: float(v) for k, v in terms_jit(x, targets, net.params).items()}
                on_log(step, last_terms, shape)
            if (
                on_sample is not None
                and settings.sample_every
                and step % settings.sample_every == 0
            ):
                on_sample(step, _to_rgb(x, content_rgb))
    if on_log is None:
        last_terms = {k: float(v) for k, v in terms_jit(x, targets, net.params).items()}
    image = _to_rgb(x, content_rgb)
    return Result(image, last_terms, time.perf_counter() - start, step)


def evaluate(
    image: np.ndarray,
    content: np.ndarray,
    style: np.ndarray,
    net: FeatureNetwork,
    settings: Settings,
) -> dict[str, float]:
    """Loss terms of a float32 RGB ``image`` ``[H, W, 3]`` at the output size (finest scale)."""
    net = _calibrated(net, content, style, settings)
    _, content_k, style_k = _scale_inputs(content, style, image.shape[:2], settings)
    targets = prepare_targets(net, content_k, style_k)
    x = jnp.asarray(image, jnp.float32)
    if settings.keep_colors:
        x = color.luminance(x)
    terms = make_terms_fn(net, x.shape[-1])(x, targets, net.params)
    return {k: float(v) for k, v in terms.items()}


def _calibrated(net, content, style, settings: Settings) -> FeatureNetwork:
    """``network.calibrate`` on the style image as the network sees it at the finest scale."""
    _, _, style_final = _scale_inputs(
        content, style, inputs.output_shape(content, settings.size), settings
    )
    return network.calibrate(net, style_final)


def _scale_inputs(content, style, shape, settings: Settings):
    """``(content RGB, network content, network style)`` at ``shape``, all ``[h, w, 3]``.

    The style is resized to ``style_scale**2`` times the area of ``shape``. With
    ``keep_colors`` the network sees grey images of the luminance, the style's matched to the
    content's mean and standard deviation.
    """
    content_rgb = jnp.asarray(inputs.resize(content, shape))
    area = settings.style_scale**2 * shape[0] * shape[1]
    style_k = jnp.asarray(inputs.resize(style, inputs.shape_with_area(style, area)))
    if not settings.keep_colors:
        return content_rgb, content_rgb, style_k
    c_y = color.luminance(content_rgb)
    s_y = color.match_luminance(color.luminance(style_k), c_y)
    return content_rgb, jnp.repeat(c_y, 3, axis=-1), jnp.repeat(s_y, 3, axis=-1)


def _initial(settings: Settings, content_k, style_k, shape, channels):
    if settings.init == "content":
        x = content_k
    elif settings.init == "style":
        x = jax.image.resize(style_k, (*shape, 3), "bilinear")
    else:
        x = jax.random.uniform(jax.random.key(settings.seed), (*shape, 3), jnp.float32)
    return x[..., :channels]  # with keep_colors the inputs are grey: any channel is Y


def _to_rgb(x, content_rgb) -> np.ndarray:
    """The variable ``[H, W, 3 or 1]`` -> float32 RGB ``[H, W, 3]`` in ``[0, 1]``."""
    if x.shape[-1] == 3:
        return np.asarray(jnp.clip(x, 0.0, 1.0))
    return np.asarray(color.recolor(x, content_rgb))
