"""Autoregressive models: PixelCNN, Gated PixelCNN, PixelCNN++ (``model.variant``).

The default reproduces PixelCNN++ on CIFAR-10 (Salimans et al. 2017: 2.92 bits/dim
on the test set) with the paper's hyperparameters:

  python launch.py --config=configs/pixelcnn.py --workdir=runs/pixelcnn_pp_cifar10
  python launch.py --config=configs/pixelcnn.py:preset=cpu --workdir=runs/pixelcnn_cpu
  python launch.py --config=configs/pixelcnn.py:preset=cpu --workdir=runs/pixelcnn_cpu --mode=eval

Arguments: ``preset=smoke|cpu`` (default: full), ``data=<source>`` (default
``tfds:cifar10``; ``fashion_mnist`` for ``preset=cpu``), ``cond=none|class``,
``cond=text`` with ``text_encoder=bert|transformer`` (see ``configs/base.py``; the pooled
caption embedding conditions every gate), ``variant=pixelcnn|gated|pixelcnn_pp``.
``--config.sample.sampler=plain`` uses the plain sampler instead of the cached one (same
images, much slower). ``--config.model.clusters=K`` (cond=none) conditions the network on
``K`` clusters of the training pixels, fitted by k-means before the first step and refined
online (``preset=cpu``: 20).
"""

from configs.base import (
    add_second_extractor,
    add_text_config,
    common_args,
    get_base_config,
    parse_args,
    set_domain_sample_evals,
    shrink_for_preset,
)

DEFAULT_DATA = {"full": "tfds:cifar10", "cpu": "fashion_mnist", "smoke": "fashion_mnist"}
# preset=cpu defaults to Gated PixelCNN: at equal CPU time (2 cores, ~115 s of training) it
# reached 3.27 test bits/dim against 3.39 for the small PixelCNN++ (which costs 2.1x per step).
# At the preset's 2200 steps (18% more minutes than the Gated preset's, whose windows grew
# since) PixelCNN++ has the better likelihood, 2.90 against 2.97, but more broken samples: 60% /
# 17% of 2000 (domain / contrastive) against 49% / 10% (benchmarks/README.md).
DEFAULT_VARIANT = {"full": "pixelcnn_pp", "cpu": "gated", "smoke": "pixelcnn_pp"}


def get_config(arg: str | None = None):
    args = parse_args(arg, common_args(variant="") | {"data": ""})
    preset = args["preset"]
    c = get_base_config()
    c.family = "pixelcnn"
    c.data.name = args["data"] or DEFAULT_DATA[preset]
    c.data.cond = args["cond"]
    c.data.image_size = {"digits": 8}.get(c.data.name, 32 if "cifar" in c.data.name else 28)

    m = c.model
    m.variant = args["variant"] or DEFAULT_VARIANT[preset]
    m.num_classes = 0  # 0: the data source's number of classes (with cond=class)
    m.cond_dim = 64
    m.cond_drop_prob = 0.0  # cond=text: share of captions replaced by the null text in training
    m.clusters = 0  # cond=none: K > 0 conditions on K k-means clusters of the pixels
    # PixelCNN++ (Salimans et al. 2017, github.com/openai/pixel-cnn defaults).
    m.features = 160
    m.num_resnet = 5
    m.num_levels = 3
    m.num_mixtures = 10
    m.dropout = 0.5
    # One nn.scan per level over the gated resnets: a smaller program, faster to compile
    # (benchmarks/README.md); its checkpoints store each level's resnets stacked.
    m.scan_blocks = False
    # PixelCNN and Gated PixelCNN (van den Oord et al. 2016).
    m.num_layers = 15
    m.kernel_size = 7
    m.vertical_rows = 2  # Gated: rows of the later vertical windows (R - 1 more rows a layer)
    m.vertical_cols = 3  # Gated: their columns (odd; (Q - 1) / 2 more to each side a layer)
    m.output_features = 1024
    if m.variant != "pixelcnn_pp":
        m.features = 128

    # 12 images on each of 8 GPUs; Adam(0.95, 0.9995); Polyak averaging 0.9995.
    c.train.batch_size = 96
    c.train.num_steps = 500_000
    c.train.ema_decay = 0.9995
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.train.sample_every = 25_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.95
    c.optimizer.b2 = 0.9995
    # The paper decays the rate by 0.999995 per step (to 0.08x at 500k); cosine is the
    # closest schedule jaxgen.optim offers.
    c.optimizer.schedule = "cosine"
    c.sample.sampler = "fast"
    c.sample.temperature = 1.0  # divides the logits of every draw (1: from the model, 0: greedy)

    # num_examples: the whole CIFAR-10 test split (10,000 images).
    c.evals.likelihood = dict(type="likelihood", num_examples=10_000, batch_size=500, every=0)
    c.evals.params = dict(type="params", every=0)

    if preset == "cpu":
        # Gated PixelCNN, unconditional: 6 layers of 32 features, 6x5 vertical windows (see
        # below); ~0.24 s per step of 16 images, so 2200 steps (0.59 epochs) take ~9 min on
        # the 2-core CPU, ~35 s more for the likelihood of the 10,000 test images and ~2 s for
        # 36 samples (fast sampler).
        m.features = 32
        m.num_resnet = 1
        m.num_levels = 3
        m.num_mixtures = 5
        m.dropout = 0.0
        m.num_layers = 6
        # Taller vertical windows: with 2-row windows (the default) the 6 layers see only 8 rows
        # above a pixel of the 28-row image, and samples were strokes and fragments (81.6%
        # broken, domain). 4-row windows see 18 rows at about the same step time: 2500 steps,
        # 2000 samples, FD 71.9 -> 62.6 (domain) and 0.877 -> 0.665 (contrastive), recall
        # 0.26 -> 0.37, 73% broken; bits/dim 3.03 (3.00 after 3500 steps with 2 rows). The
        # conditional presets keep 2 rows, with which their README figures were measured.
        # 6-row, 5-column windows see all 28 rows above a pixel and 13 columns to either side
        # (3-column windows: 8), and most samples became whole garments instead of their
        # left or right part: 2000 samples, 3500 steps, FD 61.0 -> 47.3 (domain) and 0.577 ->
        # 0.144 (contrastive), 72.1% -> 47.8% broken (domain); 6 rows with 3 columns alone:
        # 57.5 / 0.230, 67.8%. They cost 1.6x per step, so the preset trains 2200 steps in
        # the same minutes: FD 51.4 / 0.167, recall 0.43 -> 0.47, 57.6% broken, at 3.02 test
        # bits/dim instead of 2.98 (benchmarks/README.md, "Quality at equal minutes").
        unconditional = args["cond"] == "none"
        m.vertical_rows = 6 if unconditional else 2
        m.vertical_cols = 5 if unconditional else 3
        m.output_features = 64
        c.train.batch_size = 16
        # The conditional presets keep the 3500 steps their README figures were measured with.
        c.train.num_steps = 2200 if unconditional else 3500
        c.train.ema_decay = 0.995
        c.train.checkpoint_every = 1000
        c.train.sample_every = c.train.num_steps
        c.optimizer.b1 = 0.9
        c.optimizer.b2 = 0.999
        c.optimizer.learning_rate = 2e-3
        if unconditional:
            # Twice the rate: the 2200 steps of 16 images are 0.59 epochs, and the loss was
            # still falling fast at 2e-3. Same minutes, 2000 samples, domain / contrastive: FD
            # 51.4 -> 48.1 / 0.167 -> 0.129, recall 0.47 -> 0.64 / 0.79 -> 0.80, precision
            # 0.740 -> 0.744 / 0.825 -> 0.842, broken 57.6% -> 49.3% / 10.8% -> 9.6%, 2.97
            # test bits/dim instead of 3.02. At 8e-3, 2.96 bits/dim and contrastive precision
            # 0.870, but contrastive FD 0.254 and recall 0.74. 4e-3 with Adam's b2 0.99 traded
            # the domain recall (0.57 against 0.64) and the contrastive FD (0.148 against 0.129)
            # for fewer broken samples (47.0% / 8.6%) (benchmarks/README.md, "Quality at equal
            # minutes").
            c.optimizer.learning_rate = 4e-3
        if unconditional:
            # Conditioned on 20 clusters of the training pixels, fitted by k-means before the
            # first step and refined online (no labels; jaxgen/clusters.py), each sample
            # drawing its cluster by the clusters' shares: a sample commits to a kind of
            # garment before its first pixel, where the unconditional network decided row by
            # row and drew hybrids (a boot's top over a bag's bottom). Same steps, 2000
            # samples, domain / contrastive: FD 48.1 -> 30.1 / 0.129 -> 0.060, precision
            # 0.744 -> 0.815 / 0.842 -> 0.849, recall 0.639 -> 0.644 / 0.797 -> 0.819,
            # broken 49.3% -> 33.5% / 9.6% -> 8.9%; 2.966 bits/dim (a bound: the image's
            # nearest cluster) against 2.968. 10 fitted clusters: FD 37.6 / 0.103, precision
            # 0.813 / 0.873, recall 0.644 / 0.801, 2.957 bits/dim; 10 clusters before the fit
            # (all centroids starting at one point): FD 42.7 / 0.096, recall 0.617 / 0.773.
            # Its pair with 20 (three draws): ahead of the peer on all 16 figures, the domain
            # precision 0.823 against 0.805 among them (benchmarks/README.md, "The clusters
            # fitted before training").
            m.clusters = 20
        c.optimizer.warmup_steps = 100
        c.optimizer.grad_clip_norm = 1.0
        c.sample.num = 36
        c.evals.likelihood = dict(type="likelihood", num_examples=10_000, batch_size=500, every=0)
        set_domain_sample_evals(c)
    elif preset == "smoke":
        shrink_for_preset(c, "smoke")
        m.features = 8
        m.num_resnet = 1
        m.num_levels = 2
        m.num_mixtures = 2
        m.dropout = 0.1
        m.num_layers = 2
        m.kernel_size = 3
        m.output_features = 8
        m.cond_dim = 8
        c.train.ema_decay = 0.9
        c.sample.num = 4
        c.evals.likelihood = dict(type="likelihood", num_examples=16, batch_size=8, every=0)
    add_text_config(c, args)
    if preset == "cpu" and "prompts" in c.evals:
        c.evals.prompts.samples_per_prompt = 1  # 486 prompts: ~30 s of fast sampling
    add_second_extractor(c, args["preset"])
    return c
