"""The GAN section of a config read into checked values: the networks' keys that only make
sense together, InfoGAN's code and the training objective. Each problem is a
:class:`~jaxgen.errors.UserError` naming the config key."""

from __future__ import annotations

import ml_collections

from jaxgen.errors import UserError
from jaxgen.gan.augment import parse_policy
from jaxgen.gan.losses import get_loss
from jaxgen.gan.step import Objective
from jaxgen.models.dcgan import D_NORMS

ARCHS = ("dcgan", "resnet")


def check_networks(config: ml_collections.ConfigDict) -> None:
    """``model.arch``, ``model.d_norm``, ``gan.loss``, gradient penalties against a
    batch-normalised discriminator, ``model.g_extra_convs`` and ``model.d_minibatch_std``
    (DCGAN only)."""
    m, g = config.model, config.gan
    if m.arch not in ARCHS:
        raise UserError(f"config key model.arch={m.arch!r}: expected one of {ARCHS}")
    if m.d_norm not in D_NORMS:
        raise UserError(f"config key model.d_norm={m.d_norm!r}: expected one of {D_NORMS}")
    get_loss(g.loss)
    if m.d_norm == "batch" and (g.gp_weight > 0 or g.r1_gamma > 0):
        raise UserError(
            "config key model.d_norm='batch': gradient penalties need per-example "
            "discriminator outputs; use spectral, layer or none"
        )
    extra_convs = int(m.get("g_extra_convs", 0))
    if extra_convs and m.arch != "dcgan":
        raise UserError(f"config key model.g_extra_convs={extra_convs}: only for arch=dcgan")
    group = int(m.get("d_minibatch_std", 0))
    if group < 0 or group == 1:
        raise UserError(
            f"config key model.d_minibatch_std={group}: expected 0 (off) or a group size >= 2"
        )
    if group and m.arch != "dcgan":
        raise UserError(f"config key model.d_minibatch_std={group}: only for arch=dcgan")


def info_codes(config: ml_collections.ConfigDict, conditional: bool) -> int:
    """``gan.info_codes`` (0 when absent): >= 0, and > 0 only for an unconditional DCGAN
    (``conditional``: the pair is class- or text-conditioned)."""
    codes = int(config.gan.get("info_codes", 0))
    if codes < 0:
        raise UserError(f"config key gan.info_codes={codes}: expected >= 0 (0: off)")
    if codes and (conditional or config.model.arch != "dcgan"):
        raise UserError(
            f"config key gan.info_codes={codes}: for unconditional DCGANs (cond=none, "
            f"model.arch=dcgan); this one has cond={config.data.cond!r}, "
            f"model.arch={config.model.arch!r}"
        )
    return codes


def clusters(config: ml_collections.ConfigDict, conditional: bool) -> int:
    """``gan.clusters`` (0 when absent): >= 0, and > 0 only without labels or text
    (``conditional``); at most the training images they are fitted to:
    :func:`jaxgen.clusters.fit_count`, when the data are open."""
    k = int(config.gan.get("clusters", 0))
    if k < 0:
        raise UserError(f"config key gan.clusters={k}: expected >= 0 (0: off)")
    if k and conditional:
        raise UserError(
            f"config key gan.clusters={k}: for GANs trained without labels or text (cond=none); "
            f"this one has cond={config.data.cond!r}"
        )
    return k


def objective(config: ml_collections.ConfigDict) -> Objective:
    """The :class:`~jaxgen.gan.step.Objective` of ``config.gan`` and ``train.d_steps``, which
    must divide ``train.batch_size``; keys older configs lack take their defaults."""
    g = config.gan
    d_steps = int(config.train.d_steps)
    if d_steps < 1 or config.train.batch_size % d_steps:
        raise UserError(
            f"config key train.d_steps={d_steps}: expected >= 1 and dividing "
            f"train.batch_size={config.train.batch_size}"
        )
    return Objective(
        loss=g.loss,
        d_steps=d_steps,
        g_batch_size=int(g.g_batch_size),
        r1_gamma=float(g.r1_gamma),
        r1_every=int(g.r1_every),
        gp_weight=float(g.gp_weight),
        mode_seeking=float(g.get("mode_seeking", 0.0)),
        top_k=float(g.get("top_k", 0.0)),
        top_k_gamma=float(g.get("top_k_gamma", 0.99)),
        top_k_every=int(g.get("top_k_every", 1000)),
        augment=parse_policy(g.get("diffaugment", ""), "gan.diffaugment"),
        cr_real=float(g.get("cr_real", 0.0)),
        cr_fake=float(g.get("cr_fake", 0.0)),
        cr_augment=parse_policy(g.get("cr_augment", "translation"), "gan.cr_augment"),
        info_weight=float(g.get("info_weight", 1.0)),
    )
