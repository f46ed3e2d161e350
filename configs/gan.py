"""GANs. The default is SN-GAN's unconditional CIFAR-10 ResNet setting.

Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative
Adversarial Networks", ICLR 2018 (ResNet, hinge loss; reported FID 21.7,
Inception score 8.22): generator width 256 from a 4x4 start, discriminator
width 128 with spectral norm everywhere, z ~ N(0, I) of size 128, Adam
(lr 2e-4, beta1 0, beta2 0.9) for both players, n_dis = 5 discriminator
updates of batch 64 per generator update, 50k generator updates with the
learning rate decayed linearly to 0 (as in the authors' code). The paper
samples from the raw generator: ``train.ema_decay=0`` keeps that (try 0.9999).

  python launch.py --config=configs/gan.py --workdir=runs/sngan_cifar10
  python launch.py --config=configs/gan.py:preset=cpu --workdir=runs/gan_fmnist
  python launch.py --config=configs/gan.py:preset=cpu,cond=class --workdir=runs/cgan_fmnist

Arguments: ``preset=smoke|cpu`` (default: full), ``data=<source>`` (full
default ``tfds:cifar10``, otherwise ``fashion_mnist``), ``cond=none|class|text``
(class: conditional batch norm in G, projection discriminator; text: the same
driven by the pooled text embedding, with ``text_encoder=bert|transformer``, see
``configs/base.py``), ``loss=nonsaturating|hinge|wasserstein`` (default: the
preset's), ``arch=dcgan|resnet``.
"""

from configs.base import (
    add_second_extractor,
    add_text_config,
    common_args,
    get_base_config,
    parse_args,
    shrink_for_preset,
)


def get_config(arg: str | None = None):
    allowed = common_args(loss="", arch="")
    allowed["data"] = ""
    args = parse_args(arg, allowed)
    preset = args["preset"]
    c = get_base_config()
    c.family = "gan"
    c.data.name = args["data"] or ("tfds:cifar10" if preset == "full" else "fashion_mnist")
    c.data.cond = args["cond"]
    c.data.image_size = 32 if c.data.name.startswith("tfds:cifar") else 28
    if c.data.name == "digits":
        c.data.image_size = 8

    c.model.arch = "resnet"
    c.model.z_dim = 128
    c.model.g_width = 256
    c.model.d_width = 128
    c.model.d_norm = "spectral"  # spectral | batch | layer | none
    c.model.d_extra_blocks = 2
    c.model.g_extra_convs = 0  # DCGAN: 3x3 convolutions added at each generator resolution
    c.model.d_minibatch_std = 0  # DCGAN: group size of D's minibatch stddev channel (0: off)
    c.model.text_dim = 128  # cond=text: width of the generator's projected text embedding

    c.gan = dict(
        loss="hinge", gp_weight=0.0, r1_gamma=0.0, r1_every=1, g_batch_size=0, mode_seeking=0.0,
        top_k=0.0, top_k_gamma=0.99, top_k_every=1000,
        diffaugment="", cr_real=0.0, cr_fake=0.0, cr_augment="translation",
        info_codes=0, info_weight=1.0,  # InfoGAN: values of a categorical code (0: off), lambda
        clusters=0,  # condition on K k-means clusters of the training pixels (0: off)
    )  # fmt: skip

    c.train.num_steps = 50_000  # generator updates
    c.train.d_steps = 5
    c.train.batch_size = 64 * 5  # 5 discriminator micro-batches of 64
    c.train.ema_decay = 0.0
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.train.sample_every = 5000
    c.optimizer.learning_rate = 2e-4  # generator
    c.optimizer.d_learning_rate = 2e-4
    c.optimizer.b1 = 0.0
    c.optimizer.b2 = 0.9
    c.optimizer.schedule = "linear"
    # sample.sampler: "generator" ("": the default) or "drs", discriminator rejection sampling;
    # drs_percentile: its acceptance shift (0: 95; jaxgen.gan.rejection).
    c.sample.drs_percentile = 0.0

    # inception_weights: the FID Inception file (scripts/convert_inception.py); checked before
    # training starts.
    inception = dict(features="inception", inception_weights="", every=0)
    # split (of the real images: eval or train), reference_stats / save_reference_stats (read /
    # write pytorch-fid mu-sigma .npz): how to match a paper's FID, docs/fid.md.
    stats = dict(split="eval", reference_stats="", save_reference_stats="")
    c.evals.quality = dict(type="quality", num_samples=10_000, **inception, **stats)
    # classifier_weights: "" is jaxgen/evaluate/weights/<data>_classifier.npz (README, "Data").
    c.evals.classifier = dict(
        type="classifier", num_samples=10_000, features="domain", classifier_weights="", every=0
    )
    c.evals.c2st = dict(type="c2st", num_samples=5_000, **inception)
    c.evals.params = dict(type="params", every=0)

    if preset == "cpu":
        # DCGAN at 28x28, unconditional by default. At 2000 steps the rarest class (pullover)
        # was 2% of the samples, at 4000 every class had more than 7%. With a spectrally
        # normalised discriminator, 10,000 steps with the rates decayed linearly to 0 (as
        # SN-GAN does; 7.0 minutes) stayed behind a plain PyTorch DCGAN given the same
        # minutes on precision, recall (0.58 against 0.69), contrastive FD and broken share;
        # the peer's widths (64) were worse (FD 40.6 in 4000 steps, 8.7 minutes), as were
        # 14,000 steps (recall 0.61 -> 0.58) and the mode-seeking term (0.3: FD 32.9, recall
        # 0.59). Batch norm in the discriminator, as in DCGAN and the peer, is what closed
        # the recall gap: 10,000 steps, FD 28.9 -> 23.7, recall 0.58 -> 0.74, 6.5 minutes;
        # 14,000 steps (8.8 minutes) FD 19.7 / 0.016 and precision 0.737 / 0.866 (2000
        # samples, domain / contrastive; benchmarks/README.md). That was still behind the peer
        # on contrastive precision and density; a discriminator rate of 1e-4 or 4e-4, a
        # generator rate of 1e-4, a discriminator of width 48 and the peer's batch of 128 did
        # not close it (same file). With batch norm in D the linear decay to 0 no longer pays:
        # constant rates (as the peer's), same 14,000 steps, three draws of 2000: FD 19.9 ->
        # 15.1 / 0.019 -> 0.017, recall 0.711 -> 0.786 / 0.835 -> 0.861, density 0.617 ->
        # 0.634 / 0.829 -> 0.848 (now level with the peer), contrastive precision 0.864 ->
        # 0.855 (still behind the peer's 0.888; an EMA of 0.9995, z_dim 100 or a discriminator
        # rate of 1e-4 on top did not close that gap). The raw generator, without the EMA of
        # its weights (as the peer and SN-GAN sample), closes it: same weights, three draws of
        # 2000, contrastive precision 0.870 -> 0.882, density 0.846 -> 0.874 and broken share
        # 0.073 -> 0.063 (contrastive), domain FD 14.8 either way (an EMA of 0.9995 was no
        # better than 0.999). Discriminator rejection sampling (sample.sampler=drs) on the
        # raw generator did not help: on the weights of the peers table's run, three draws of
        # 2000, contrastive precision 0.882 -> 0.875, density 0.871 -> 0.888, broken share
        # 0.058 -> 0.064, at 1/30 of the sampling speed; the discriminator's logits on
        # generated images spread little (std 0.67 nats).
        # DiffAugment (gan.diffaugment=translation,cutout: FD 22.4, precision 0.698) and
        # consistency regularisation (gan.cr_real=gan.cr_fake=10: FD 33.6) were worse than
        # this preset retrained beside them (FD 15.1, precision 0.723; benchmarks/README.md).
        # A 3x3 convolution at each generator resolution (model.g_extra_convs=1) gave the best
        # domain figures (FD 9.8, precision 0.766) but a worse contrastive C2ST and recall, and
        # took 11.4 minutes against 4.9 on the EPYC; cut to 10,000 steps, its pair was behind
        # the peer (given the same 8.8 minutes) on 5 contrastive figures (same file).
        # Training to 28,000 steps (the whole budget), a discriminator of width 64 and a
        # latent scaled by 0.9 or 0.8 left both precisions level with the peer's (same file).
        # What the precision lacked was images between classes: a continuous latent maps onto
        # a connected set, and the same recipe conditioned on the real classes had domain
        # precision 0.856. Conditioning on 10 clusters of the training images' pixels instead
        # (gan.clusters=10: k-means fitted to 20,000 training images before the first step,
        # then refined online; no labels; generated images draw their cluster in proportion
        # to its size), three draws of 2000, domain / contrastive: FD 15.1 -> 6.0 / 0.021 ->
        # 0.015, precision 0.723 -> 0.838 / 0.882 -> 0.910, density 0.639 -> 0.844 / 0.884 ->
        # 1.01, C2ST 0.807 -> 0.736 / 0.728 -> 0.691, broken 39.9% -> 14.9% / 6.5% -> 2.4%,
        # recall 0.769 -> 0.772 / 0.846 -> 0.772, 5.2 minutes against 4.9 (same file). The
        # clusters before that fit (every centroid starting at one point, the clusters filling
        # one by one; the smallest held 2.5% of the images, now 3.8%): FD 11.5 / 0.018,
        # precision 0.804 / 0.901, recall 0.784 / 0.811. 20 fitted clusters (three draws of
        # one run): FD 6.7 / 0.029, precision 0.850 / 0.926, recall 0.763 / 0.797. InfoGAN's code
        # (gan.info_codes=10), which should find such modes itself, found others than the
        # classes and was worse (precision 0.713 / 0.861). DRS on the weights of the unfitted
        # clusters (each image's cluster drawn by size, scored with it) moved most figures by
        # about their draws' spread: FD 11.5 -> 11.2, contrastive density 0.952 -> 0.978,
        # broken 3.0% -> 3.5% (same file); the generator stays the sampler.
        # The clusters narrowed what the generator draws within each of them: contrastive
        # precision and density at the level of held-out real images (0.910, 1.01), recall
        # 0.772 (real images 0.925). The mode-seeking term (Mao et al., 2019; gan.mode_seeking:
        # the generator's loss adds weight / ratio, the ratio of the mean distance between two
        # images of one cluster to that of their latents) widens it. One run each on the
        # 2-core Intel Xeon, three draws of 2000, domain / contrastive: weight 0.3, recall
        # 0.786 / 0.799, precision 0.818 / 0.914; weight 1, recall 0.798 / 0.861, precision
        # 0.802 / 0.887 (the peer's 0.871-0.882). Weight 0.75, in its pair with the peer (8.6
        # minutes on the Xeon): FD 6.0 -> 8.1 / 0.015 -> 0.016, precision 0.838 -> 0.805 /
        # 0.910 -> 0.894, recall 0.772 -> 0.803 / 0.772 -> 0.826, broken 14.9% -> 22.2% / 2.4%
        # -> 4.5%, ahead of the peer on 15 of 16 and level on the contrastive KID, where both
        # are as good as held-out real images; weight 0.5 left the contrastive recall level
        # with a peer given 9.6 minutes (0.827 against 0.816). 20,000 steps without the term
        # (11.5 minutes on the Xeon, past the budget) reached recall 0.800 / 0.792, and the
        # discriminator's minibatch standard deviation (model.d_minibatch_std=4) 0.764 / 0.780
        # (benchmarks/README.md, "Diversity within the GAN's clusters").
        # The conditional presets keep spectral norm, 10,000 steps, the
        # linear decay and the EMA: batch norm and the raw generator are unmeasured with their
        # projection discriminators.
        c.model.arch = "dcgan"
        c.model.z_dim = 64
        c.model.g_width = 32
        c.model.d_width = 32
        c.gan.loss = "nonsaturating"
        unconditional = args["cond"] == "none"
        c.model.d_norm = "batch" if unconditional else "spectral"
        c.gan.clusters = 10 if unconditional else 0
        c.gan.mode_seeking = 0.75 if unconditional else 0.0
        c.train.num_steps = 14_000 if unconditional else 10_000
        c.train.d_steps = 1
        c.train.batch_size = 64
        c.train.ema_decay = 0.0 if unconditional else 0.999
        c.train.log_every = 100
        c.train.checkpoint_every = 2000
        c.train.sample_every = 1000
        c.optimizer.learning_rate = 2e-4
        c.optimizer.d_learning_rate = 2e-4
        c.optimizer.b1 = 0.5
        c.optimizer.b2 = 0.999
        c.optimizer.schedule = "constant" if unconditional else "linear"
        c.evals.diversity = dict(type="diversity", every=0)
        for name in ("quality", "classifier", "c2st", "diversity"):
            c.evals[name].num_samples = 2000
            c.evals[name].features = "domain"
    elif preset == "smoke":
        shrink_for_preset(c, "smoke")
        c.model.arch = "dcgan"
        c.model.z_dim = 8
        c.model.g_width = 4
        c.model.d_width = 4
        c.train.d_steps = 2
        c.train.ema_decay = 0.9
        c.optimizer.schedule = "constant"
        # Pixel features: the smoke path needs no trained domain classifier.
        del c.evals["classifier"]
        for name in ("quality", "c2st"):
            c.evals[name].num_samples = 16
            c.evals[name].features = "pixels"
        c.evals.quality.kid_subset_size = 8
        c.evals.c2st.steps = 20
    if args["loss"]:
        c.gan.loss = args["loss"]
    if args["arch"]:
        c.model.arch = args["arch"]
    add_text_config(c, args)
    if args["cond"] == "text":
        # Without it the text-conditioned generator ignores z (one image per prompt: recall
        # 0.0, FD 30.0); weight 0.3 on the cpu preset gives FD 8.5, recall 0.76 and 79.8% of
        # samples in the prompted class (86.4% without).
        c.gan.mode_seeking = 0.3
    add_second_extractor(c, args["preset"])
    return c
