"""The denoising network of the diffusion and flow configs: ``backbone=unet|dit``.

``apply_backbone(c, backbone, preset)`` sets ``model.backbone`` and, for ``dit``, the
``model.dit`` section (``jaxgen/models/dit.py``) sized for the preset:

* full: DiT-S/2 of Peebles & Xie (2023): patch 2, width 384, depth 12, 6 heads, MLP ratio 4.
* cpu: a small DiT for 28x28 Fashion-MNIST on a 2-core CPU: patch 4 (7x7 = 49 tokens),
  width 128, depth 6, 4 heads.
* smoke: width 16, depth 1, 2 heads, patch 4 (takes 28x28 and 8x8 images).

``model.unet`` is left in place (unused by a DiT), so that ``--config.model.unet.*``
overrides keep parsing.
"""

from __future__ import annotations

import ml_collections

from jaxgen.errors import UserError

BACKBONES = ("unet", "dit")

DIT_PRESETS = {
    "full": dict(patch_size=2, width=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "cpu": dict(patch_size=4, width=128, depth=6, num_heads=4, mlp_ratio=4.0),
    "smoke": dict(patch_size=4, width=16, depth=1, num_heads=2, mlp_ratio=4.0),
}


def apply_backbone(c: ml_collections.ConfigDict, backbone: str, preset: str) -> None:
    """Sets ``c.model.backbone`` (and ``c.model.dit`` for ``dit``) for ``preset``
    (``full|cpu|smoke``); an unknown backbone is a one-line error naming the argument."""
    if backbone not in BACKBONES:
        raise UserError(f"config argument backbone={backbone!r}: expected one of {BACKBONES}")
    c.model.backbone = backbone
    if backbone == "dit":
        c.model.dit = dict(DIT_PRESETS[preset], time_freq_dim=256)
