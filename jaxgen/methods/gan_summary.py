"""One-line descriptions of a GAN config's networks and training, for result tables."""

from __future__ import annotations

from jaxgen.methods.description import config_value


def architecture(config) -> str:
    """E.g. ``dcgan (G 32, D 32, D norm batch)``."""
    model = config_value(config, "model", {}) or {}
    extra = model.get("g_extra_convs")
    return (
        f"{model.get('arch')} (G {model.get('g_width')}"
        + (f" +{extra} 3x3 convs" if extra else "")
        + f", D {model.get('d_width')}, D norm {model.get('d_norm')})"
    )


def training(config) -> str:
    """E.g. ``nonsaturating loss, no regulariser, 1 D steps``."""
    model = config_value(config, "model", {}) or {}
    gan = config_value(config, "gan", {}) or {}
    regs = []
    if model.get("d_norm") == "spectral":
        regs.append("SN")
    if float(gan.get("r1_gamma") or 0) > 0:
        regs.append(f"R1 gamma={gan['r1_gamma']}")
    if float(gan.get("gp_weight") or 0) > 0:
        regs.append(f"GP lambda={gan['gp_weight']}")
    if int(gan.get("info_codes") or 0) > 0:
        regs.append(f"InfoGAN code K={gan['info_codes']}")
    if int(gan.get("clusters") or 0) > 0:
        regs.append(f"conditioned on {gan['clusters']} pixel clusters")
    return (
        f"{gan.get('loss')} loss, " + ("+".join(regs) or "no regulariser") + ", "
        f"{config_value(config, 'train.d_steps')} D steps"
    )
