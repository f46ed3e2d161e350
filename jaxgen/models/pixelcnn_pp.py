"""PixelCNN++ (Salimans et al. 2017): a U-Net of gated resnets over two causal streams.

* ``u`` sees the rows above (down-shifted ``2 x 3`` windows); ``ul`` sees the rows
  above and the pixels to the left (down-right-shifted ``2 x 2`` windows) and
  takes ``u`` as an auxiliary input at every layer.
* Down path: ``num_resnet`` gated resnets per level, stride-2 convolutions between
  levels (``num_levels`` resolutions, 32 -> 16 -> 8 on CIFAR-10). Up path:
  transposed stride-2 convolutions back, ``num_resnet + 1`` resnets per level, each
  fed the matching down-path output through a shortcut connection.
* Gated resnet: ``x + a * sigmoid(b)`` with ``[a, b] = conv(dropout(concat_elu(
  conv(concat_elu(x)) + nin(concat_elu(aux)))))``, plus a conditioning bias.
* Output: ``nin(elu(ul))`` -> discretized logistic mixture parameters
  (:mod:`jaxgen.pixelcnn.logistic_mixture`). The network output at a pixel does
  not depend on that pixel at all; the colour channels are coupled in the head.

Departures from the paper's code: no weight normalisation or data-dependent
initialisation (plain variance-scaling init); the ``u`` upsampling is a ``2 x 3``
transposed convolution computed per row, the ``ul`` one a ``2 x 2``
(depth-to-space) one, as in the original.

The ``u`` stream is the row stream and ``ul`` the pixel stream of
:mod:`jaxgen.pixelcnn.layers`; :class:`~jaxgen.pixelcnn.layers.Bridge` modules
hand ``u`` to ``ul`` in the fast sampler.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.pixelcnn.layers import (
    Bridge,
    ConditionBias,
    Conditioning,
    Step,
    Upsample2x,
    WindowConv,
)


def concat_elu(x: jax.Array) -> jax.Array:
    """``elu([x, -x])``: ``[..., D]`` -> ``[..., 2D]``."""
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


class GatedResnet(nn.Module):
    """One gated residual block of stream ``u`` (2x3 window) or ``ul`` (2x2 window)."""

    stream: str
    level: int
    dropout: float

    @nn.compact
    def __call__(self, x, aux, cond, step: Step | None, train: bool) -> jax.Array:
        f = x.shape[-1]
        kw = 3 if self.stream == "u" else 2
        c1 = WindowConv(f, 2, kw, 1, 1, level=self.level, name="conv_in")(concat_elu(x), step)
        if aux is not None:
            c1 = c1 + nn.Dense(f, name="aux")(concat_elu(aux))
        c1 = nn.Dropout(self.dropout, deterministic=not train)(concat_elu(c1))
        c2 = WindowConv(2 * f, 2, kw, 1, 1, level=self.level, init_scale=0.1, name="conv_out")(
            c1, step
        )
        c2 = c2 + ConditionBias(2 * f, name="cond")(cond)
        a, b = jnp.split(c2, 2, axis=-1)
        return x + a * jax.nn.sigmoid(b)


def _resnet_pair(resnet_u, bridge, resnet_ul, u, ul, u_skip, ul_skip, up: bool, step, run):
    """One layer of both streams: ``u``'s resnet, the bridge, then ``ul``'s resnet.

    ``run = (run_u, run_ul)``; on the way up ``u_skip``/``ul_skip`` are the shortcut inputs.
    """
    run_u, run_ul = run
    if run_u:
        u = resnet_u(u, u_skip if up else None)
    u_here = bridge(u, step)
    if run_ul:
        ul = resnet_ul(ul, jnp.concatenate([u_here, ul_skip], axis=-1) if up else u_here)
    return u, ul


class ResnetPairs(nn.Module):
    """One gated-resnet layer of both streams; ``nn.scan`` stacks a level's layers.

    Carry ``(u, ul)``, scanned input ``(u_skip, ul_skip)`` (up path) or None; outputs the
    new ``(u, ul)``, which on the way down are the shortcuts of the up path.
    """

    level: int
    dropout: float
    up: bool

    @nn.compact
    def __call__(self, carry, skips, cond, step: Step | None, train: bool):
        phase = None if step is None else step.phase
        run = (phase in (None, "row"), phase in (None, "pixel"))

        def resnet(stream):
            block = GatedResnet(stream, self.level, self.dropout, name=stream)
            return lambda h, aux: block(h, aux, cond, step, train)

        u_skip, ul_skip = skips if self.up else (None, None)
        carry = _resnet_pair(
            resnet("u"), Bridge(self.level, name="bridge"), resnet("ul"), *carry,
            u_skip, ul_skip, self.up, step, run,
        )  # fmt: skip
        return carry, carry


def _stack_levels(first, rest):
    """``first [B, ...]`` before the stacked ``rest [N, B, ...]`` -> ``[N + 1, B, ...]``."""
    if first is None:
        return None
    return jnp.concatenate([first[None], rest], axis=0)


class PixelCNNPPNet(nn.Module):
    """Mixture parameters ``[B, H, W, num_outputs]`` from images ``[B, H, W, C]`` in [-1, 1].

    Attributes:
      num_outputs: outputs per pixel (see ``logistic_mixture.num_outputs``).
      features: width of both streams (160 in the paper).
      num_resnet: gated resnets per level on the way down (5 in the paper).
      num_levels: resolutions; ``H`` and ``W`` must be divisible by ``2 ** (num_levels - 1)``.
      dropout: dropout rate inside the resnets during training (0.5 in the paper).
      num_classes: > 0 for class-conditional models.
      cond_dim: width of the conditioning vector.
      scan_blocks: run each level's gated resnets as one ``nn.scan`` over stacked
        parameters (``ResnetPairs``) instead of unrolled: a smaller program that compiles
        faster, with the same function; the parameter tree differs (stacked per level).
    """

    num_outputs: int
    features: int = 160
    num_resnet: int = 5
    num_levels: int = 3
    dropout: float = 0.5
    num_classes: int = 0
    cond_dim: int = 64
    scan_blocks: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        label: jax.Array | None = None,
        context: jax.Array | None = None,
        step: Step | None = None,
        train: bool = False,
    ) -> jax.Array | None:
        phase = None if step is None else step.phase
        run_u, run_ul = phase in (None, "row"), phase in (None, "pixel")
        f, top = self.features, self.num_levels - 1
        cond = Conditioning(self.num_classes, self.cond_dim, name="cond")(label, context)
        x = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)  # marks the zero padding

        def resnet(stream, level, name):
            block = GatedResnet(stream, level, self.dropout, name=name)
            return lambda h, aux: block(h, aux, cond, step, train)

        def pair(level, up, i, u, ul, u_skip=None, ul_skip=None):
            where = f"{'up' if up else 'down'}{level}"
            return _resnet_pair(
                resnet("u", level, f"{where}_u{i}"), Bridge(level, name=f"{where}_bridge{i}"),
                resnet("ul", level, f"{where}_ul{i}"), u, ul, u_skip, ul_skip, up, step,
                (run_u, run_ul),
            )  # fmt: skip

        def scanned_pairs(level, up, length):
            return nn.scan(
                ResnetPairs,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=length,
            )(level, self.dropout, up, name=f"{'up' if up else 'down'}{level}_resnets")

        u = ul = None
        if run_u:
            u = WindowConv(f, 2, 3, 2, 1, full_input=True, name="u_in")(x, step)
        if run_ul:
            above = WindowConv(f, 1, 3, 1, 1, full_input=True, name="ul_in_above")(x, step)
            left = WindowConv(f, 2, 1, 1, 1, full_input=True, name="ul_in_left")(x, step)
            ul = above + left
        # The up path's shortcuts, in order: each level's input, then its resnets' outputs
        # (one entry each, or, with scan_blocks, one entry of all of them stacked).
        shortcuts = [(u, ul)]
        for level in range(self.num_levels):
            if level > 0:
                if run_u:
                    u = WindowConv(f, 2, 3, 1, 1, stride=2, level=level - 1, name=f"down{level}_u")(
                        u, step
                    )
                if run_ul:
                    ul = WindowConv(
                        f, 2, 2, 1, 1, stride=2, level=level - 1, name=f"down{level}_ul"
                    )(ul, step)
                shortcuts.append((u, ul))
            if self.scan_blocks:
                stack = scanned_pairs(level, False, self.num_resnet)
                (u, ul), outputs = stack((u, ul), None, cond, step, train)
                shortcuts.append(outputs)
                continue
            for i in range(self.num_resnet):
                u, ul = pair(level, False, i, u, ul)
                shortcuts.append((u, ul))

        if not self.scan_blocks:
            u, ul = shortcuts.pop()  # the up path starts at the last output
        for level in range(top, -1, -1):
            if self.scan_blocks:
                outputs = shortcuts.pop()
                if level == top:  # without the last output, where the up path starts
                    outputs = jax.tree.map(lambda a: a[:-1], outputs)
                level_in = shortcuts.pop()
                skips = tuple(map(_stack_levels, level_in, outputs))
                skips = jax.tree.map(lambda a: a[::-1], skips)
                stack = scanned_pairs(level, True, self.num_resnet + (level < top))
                (u, ul), _ = stack((u, ul), skips, cond, step, train)
            else:
                for i in range(self.num_resnet + (level < top)):
                    u, ul = pair(level, True, i, u, ul, *shortcuts.pop())
            if level > 0:
                if run_u:
                    u = Upsample2x(f, kw=3, level=level - 1, name=f"up{level}_u_upsample")(u, step)
                if run_ul:
                    ul = Upsample2x(f, kw=2, level=level - 1, name=f"up{level}_ul_upsample")(
                        ul, step
                    )
        if not run_ul:
            return None
        return nn.Dense(self.num_outputs, name="out")(nn.elu(ul))


def stack_resnet_params(params: dict, num_resnet: int, num_levels: int) -> dict:
    """An unrolled :class:`PixelCNNPPNet`'s parameters in the ``scan_blocks=True`` layout.

    Each level's ``{down,up}{level}_{u,ul}{i}`` trees become ``{down,up}{level}_resnets``
    with ``u`` and ``ul`` stacked on a new leading axis ``i``; the rest is unchanged.
    """
    params = dict(params)
    top = num_levels - 1
    for level in range(num_levels):
        for where, count in (("down", num_resnet), ("up", num_resnet + (level < top))):
            prefix = f"{where}{level}"
            stacked = {}
            for stream in ("u", "ul"):
                layers = [params.pop(f"{prefix}_{stream}{i}") for i in range(count)]
                stacked[stream] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
            params[f"{prefix}_resnets"] = stacked
    return params
