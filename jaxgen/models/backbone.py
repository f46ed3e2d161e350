"""The denoising network of a family, chosen by ``model.backbone``: ``unet`` or ``dit``.

Both modules take the same call, ``net(x, t, label, context, context_mask, pooled,
train=False, t2=None)`` -> ``[B, H, W, out_channels]`` in ``x``'s dtype (see
:class:`jaxgen.models.unet.UNet` and :class:`jaxgen.models.dit.DiT`), so a family builds one
with :func:`build_backbone` and never names either.

``two_times=True`` is for families whose network sees a second time ``t2`` (MeanFlow's
``(r, t)``): the module's ``temb2`` layers exist only in parameters made by an ``init`` that
was given ``t2``, so such a family must pass ``t2`` to ``init`` as well as to every
``apply``. The DiT records the flag and refuses a call that breaks it; the UNet has no such
flag (its parameter tree must stay that of older checkpoints), so there the caller's
``init`` alone decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.errors import UserError
from jaxgen.models import dit as dit_lib
from jaxgen.models import unet as unet_lib

BACKBONES = ("unet", "dit")

# The paper's DiT sizes (Peebles & Xie 2023, Table 1): (width, depth, heads) -> name.
_DIT_SIZES = {(384, 12, 6): "S", (768, 12, 12): "B", (1024, 24, 16): "L", (1152, 28, 16): "XL"}


def backbone_name(model_cfg: Mapping[str, Any]) -> str:
    """``model.backbone`` (default ``unet``), checked."""
    name = model_cfg.get("backbone", "unet") or "unet"
    if name not in BACKBONES:
        raise UserError(f"config key model.backbone={name!r}: expected one of {BACKBONES}")
    return name


def backbone_config(
    model_cfg,
    out_channels: int,
    num_classes: int = 0,
    context_dim: int = 0,
    two_times: bool = False,
) -> unet_lib.UNetConfig | dit_lib.DiTConfig:
    """The checked :class:`UNetConfig` or :class:`DiTConfig` of ``model_cfg`` (``model``, a
    ConfigDict or a dict as in ``config.json``)."""
    if not isinstance(model_cfg, ml_collections.ConfigDict):
        model_cfg = ml_collections.ConfigDict(dict(model_cfg))
    if backbone_name(model_cfg) == "unet":
        return unet_lib.UNetConfig.from_config(
            model_cfg.unet, out_channels, num_classes, context_dim
        )
    if model_cfg.get("dit") is None:
        raise UserError("config key model.backbone='dit' needs a model.dit section")
    return dit_lib.DiTConfig.from_config(
        model_cfg.dit, out_channels, num_classes, context_dim, two_times=two_times
    )


def build_backbone(
    model_cfg,
    out_channels: int,
    num_classes: int,
    context_dim: int,
    input_hw: tuple[int, int],
    two_times: bool = False,
) -> nn.Module:
    """The ``UNet`` or ``DiT`` of the ``model`` config section for ``input_hw`` inputs.

    Args:
      model_cfg: the ``model`` ConfigDict (``backbone``, and ``unet`` or ``dit``).
      out_channels: channels of the output (and, for the diffusion family, of the input).
      num_classes: 0 (no class input) or the number of classes (plus a null class).
      context_dim: 0 (no text) or the width of the text context and pooled embedding.
      input_hw: ``(H, W)`` of the network's input; refused if the architecture cannot take it.
      two_times: the caller passes ``t2`` to ``init`` and ``apply`` (module docstring).

    Raises:
      UserError: naming the ``model.backbone``, ``model.unet.*`` or ``model.dit.*`` key.
    """
    config = backbone_config(model_cfg, out_channels, num_classes, context_dim, two_times)
    config.check_input(*input_hw)
    if isinstance(config, dit_lib.DiTConfig):
        return dit_lib.DiT(config)
    return unet_lib.UNet(config)


def count_backbone_params(
    model_cfg,
    image_shape: tuple[int, int, int],
    num_classes: int = 0,
    context_dim: int = 0,
    two_times: bool = False,
    out_channels: int | None = None,
) -> int:
    """Parameters of the backbone for ``image_shape`` ``(H, W, C)`` inputs and
    ``out_channels`` outputs (default ``C``), counted with ``jax.eval_shape`` (nothing is
    computed)."""
    h, w, c = image_shape
    net = build_backbone(
        model_cfg, out_channels or c, num_classes, context_dim, (h, w), two_times=two_times
    )
    t2 = jnp.zeros((1,)) if two_times else None
    shapes = jax.eval_shape(
        lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, c)), jnp.zeros((1,)), t2=t2)
    )
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def _tuple_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def describe_backbone(model_cfg: Mapping[str, Any]) -> str:
    """The table cell of a saved ``model`` section (a dict or a ConfigDict), without building
    anything: ``"UNet ch 16 x (1, 2, 4), 1 res"`` or ``"DiT-S/2: width 384, depth 12,
    heads 6"`` (``DiT/4: ...`` for a size the paper does not name)."""
    if (model_cfg.get("backbone") or "unet") == "dit":
        dit = model_cfg.get("dit", {}) or {}
        width, depth, heads = dit.get("width"), dit.get("depth"), dit.get("num_heads")
        size = _DIT_SIZES.get((width, depth, heads))
        name = f"DiT-{size}" if size else "DiT"
        return f"{name}/{dit.get('patch_size')}: width {width}, depth {depth}, heads {heads}"
    unet = model_cfg.get("unet", {}) or {}
    return (
        f"UNet ch {unet.get('ch')} x {_tuple_text(unet.get('ch_mult'))}, "
        f"{unet.get('num_res_blocks')} res"
    )
