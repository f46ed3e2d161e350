"""Neural style transfer (Gatys et al. 2016): optimise the pixels of one image.

    python launch.py --config=configs/style_transfer.py --workdir=/tmp/style
    python launch.py --config=configs/style_transfer.py:content=me.jpg,style=art.jpg,preset=cpu \
        --workdir=/tmp/style
    python launch.py --config=configs/style_transfer.py:weights=vgg19.npz --workdir=/tmp/style

Arguments (``key=value``, comma-separated):
  content, style: image file, ``skimage:<name>`` or ``sklearn:<file>``; the defaults ship with
    scikit-image, so the run works offline.
  weights: a VGG19 ``.npz``/``.safetensors`` export (``scripts/convert_vgg19.py``). Without
    it the run uses the random multi-scale feature network and says so in the log and in
    ``stylized.json``.
  keep_colors: luminance-only transfer (keeps the content image's colours).
  preset: ``smoke`` (tiny, seconds), ``cpu`` (256 px), default ``full`` (512 px, three scales).

The result is ``<workdir>/stylized.png`` (+ ``stylized.json``). No dataset is read (the two
images come from ``style.content`` and ``style.style``): ``data.name``, ``data.dir`` and
``data.cond`` are refused; ``data.image_size`` is the output's longer side.
"""

from __future__ import annotations

import ml_collections

from configs.base import get_base_config, parse_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_args(
        arg,
        dict(
            preset="full",
            content="skimage:chelsea",
            style="skimage:immunohistochemistry",
            weights="",
            keep_colors=False,
        ),
    )
    c = get_base_config()
    c.family = "style_transfer"
    c.data.name = "none"
    c.data.image_size = 512  # longer side of the output, pixels
    c.train.batch_size = 1
    c.train.num_steps = 300  # optimiser steps over all scales
    c.train.log_every = 10
    c.train.sample_every = 100  # samples/step_<N>.png
    c.train.checkpoint_every = 0  # no checkpoints: a run is one optimisation
    c.optimizer.learning_rate = 0.02  # Adam only; pixels are in [0, 1]
    c.sample.num = 1

    c.style = ml_collections.ConfigDict()
    c.style.content = args["content"]
    c.style.style = args["style"]
    c.style.init = "content"  # content | style | noise
    c.style.optimizer = "lbfgs"  # lbfgs | adam (adam uses optimizer.learning_rate)
    c.style.lbfgs_memory = 10
    c.style.num_scales = 3  # coarse to fine: image_size / 2**(num_scales-1) ... image_size
    c.style.keep_colors = args["keep_colors"]
    c.style.style_scale = 1.0  # style image area relative to the output's

    c.model.network = "auto"  # auto | vgg19 | random_multiscale
    c.model.vgg19 = ml_collections.ConfigDict()
    c.model.vgg19.weights = args["weights"]
    c.model.vgg19.pooling = "avg"  # Gatys et al. use average pooling for synthesis
    c.model.vgg19.content_layers = "conv4_2"
    c.model.vgg19.style_layers = "conv1_1,conv2_1,conv3_1,conv4_1,conv5_1"
    c.model.vgg19.style_layer_weights = ""  # comma-separated, one per layer; empty: equal
    c.model.vgg19.content_weight = 1.0
    c.model.vgg19.style_weight = 1e3
    c.model.vgg19.tv_weight = 1.0

    c.model.random = ml_collections.ConfigDict()
    c.model.random.seed = 0
    c.model.random.scales = 5
    c.model.random.channels = 128
    c.model.random.kernel_size = 5
    c.model.random.depth = 1
    c.model.random.content_layers = "scale3"
    c.model.random.style_layers = "color,scale1,scale2,scale3,scale4,scale5"
    c.model.random.style_layer_weights = ""
    c.model.random.content_weight = 1.0
    c.model.random.style_weight = 10.0
    c.model.random.tv_weight = 1.0

    if args["preset"] == "cpu":
        c.data.image_size = 256
        c.train.num_steps = 200
        c.train.sample_every = 50
        c.style.num_scales = 2
    elif args["preset"] == "smoke":
        c.data.image_size = 32
        c.train.num_steps = 6
        c.train.log_every = 2
        c.train.sample_every = 3
        c.style.num_scales = 2
        c.model.random.scales = 3
        c.model.random.channels = 16
        c.model.random.kernel_size = 3
        c.model.random.style_layers = "color,scale1,scale2,scale3"
        c.model.random.content_layers = "scale2"
    return c
