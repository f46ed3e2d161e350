"""Diffusion models; the default reproduces DDPM on CIFAR-10 (Ho et al. 2020, Appendix B).

  python launch.py --config=configs/ddpm.py:preset=cpu --workdir=runs/ddpm
  python launch.py --config=configs/ddpm.py:preset=cpu --workdir=runs/ddpm --mode=eval
  python launch.py --config=configs/ddpm.py --workdir=runs/ddpm_cifar10       # the paper's run

Text to image on ``sprites`` (README: 94.4% / 89.8% of samples show the prompted shape for
shape-colour pairs seen / held out in training, 48 min on a 2-core CPU):

  python launch.py --config=configs/ddpm.py:preset=cpu,cond=text,data=sprites,edm=true \
      --config.model.unet.ch=24 --config.train.num_steps=12000 --workdir=runs/ddpm_sprites

Arguments: ``preset=smoke|cpu`` (default: full), ``data=<source>``, ``cond=none|class``,
``cond=text`` with ``text_encoder=bert|transformer`` (see ``configs/base.py``),
``prediction=eps|x0|v`` (default: ``v`` for ``preset=cpu``, else ``eps``, the paper's; an
under-trained eps network draws blotchy speckle, so a short run should predict ``v``: README,
"Where the DDPM preset's speckle came from"),
``weighting=uniform|min_snr`` (the loss weighting over noise levels; default: ``min_snr`` for
``preset=cpu`` without text, else ``uniform``),
``schedule=linear|cosine``, ``edm=true`` (EDM preconditioning and noise distribution instead
of the DDPM process), ``autoencoder=<VAE workdir>`` (latent diffusion),
``sampler=ddpm|ddim|dpm_solver_pp|heun`` and ``steps=<int>`` (0: the sampler's default),
``backbone=unet|dit`` (the network: the UNet, default, or a DiT sized per preset,
``configs/backbones.py``; full: DiT-S/2).
With ``cond=class`` or ``cond=text`` the condition is dropped with probability 0.1
in training and ``sample.guidance`` sets classifier-free guidance (0: unconditional, 1:
conditional). ``--config.model.clusters=K`` (``cond=none``) conditions the network on ``K``
k-means clusters of the training pixels instead, fitted before the first step and refined
online (``jaxgen/clusters.py``, as the GAN and PixelCNN presets do); each sample draws its
cluster by the clusters' shares, and the bound adds ``-log p(cluster)``.
"""

from configs.backbones import apply_backbone
from configs.base import (
    add_second_extractor,
    add_text_config,
    common_args,
    get_base_config,
    parse_args,
    set_domain_sample_evals,
    shrink_for_preset,
)


def get_config(arg: str | None = None):
    defaults = common_args(
        prediction="", weighting="", schedule="linear", edm=False, autoencoder="", sampler="",
        steps=0, backbone="unet",
    )  # fmt: skip
    args = parse_args(arg, dict(defaults, data=""))  # "": CIFAR-10 at full size, else Fashion-MNIST
    if not args["data"]:
        args["data"] = "tfds:cifar10" if args["preset"] == "full" else "fashion_mnist"
    if not args["prediction"]:
        args["prediction"] = "v" if args["preset"] == "cpu" else "eps"
    if not args["weighting"]:
        # The text preset's figures (README, "Text to image") were measured with the uniform
        # weighting; min-SNR has not been measured there yet.
        cpu_default = args["preset"] == "cpu" and args["cond"] != "text"
        args["weighting"] = "min_snr" if cpu_default else "uniform"
    c = get_base_config()
    c.family = "ddpm"
    c.data.name = args["data"]
    c.data.cond = args["cond"]
    c.data.image_size = 32

    # The paper's CIFAR-10 model: 35.7M parameters.
    c.model.unet = dict(
        ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
        num_heads=1, num_groups=32, resample_with_conv=True,
    )  # fmt: skip
    c.model.diffusion = dict(
        process="edm" if args["edm"] else "vp",
        schedule=args["schedule"], timesteps=1000, beta_start=1e-4, beta_end=0.02,
        prediction=args["prediction"], variance="large",
        sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, p_mean=-1.2, p_std=1.2,
        loss_weighting=args["weighting"], min_snr_gamma=5.0, level_sampling="uniform",
        input_perturbation=0.0,
    )  # fmt: skip
    c.model.cond_drop_prob = 0.1 if args["cond"] in ("class", "text") else 0.0
    c.model.clip_denoised = True
    c.model.random_flip = True
    c.model.autoencoder = args["autoencoder"]
    c.model.latent_scale = 1.0
    c.model.vlb_terms = 0  # 0: the exact bound over all timesteps
    # cond=none: K > 0 conditions the network on K k-means clusters of the training pixels,
    # fitted before the first step and refined online (jaxgen/clusters.py); each sample draws
    # its cluster by the clusters' shares, and the bound adds -log p(cluster).
    c.model.clusters = 0

    c.train.num_steps = 800_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9999
    c.train.checkpoint_every = 10_000
    c.train.sample_every = 10_000
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 5000
    c.optimizer.grad_clip_norm = 1.0

    c.sample.sampler = args["sampler"] or "ddpm"
    c.sample.steps = args["steps"]
    # Text: guidance 3 lifted the share of samples showing the prompted class from 60% to
    # 88% on the epsilon-prediction preset=cpu Fashion-MNIST run. On the v preset's weights
    # guidance 5 draws the class of a paraphrase with new words in 86.3% / 87.3% of samples
    # (two seeds; guidance 3: 82.7% / 85.3%) for some diversity: on 1000 samples of one seed,
    # recall 0.57 -> 0.44, FD 5.43 -> 5.92, broken 2.5% -> 4.6% (README, "Text to image").
    # The full preset keeps 3: unmeasured there.
    text_guidance = 5.0 if args["preset"] == "cpu" else 3.0
    c.sample.guidance = text_guidance if args["cond"] == "text" else 1.0
    c.sample.eta = 0.0  # ddim and dpm_solver_pp: 0 the ODE, 1 ancestral / the SDE
    c.sample.spacing = ""  # "": the sampler's default (uniform, logsnr or karras)
    c.sample.final_snr = 0.0  # SNR of the grid's last noisy level (0: the least noisy timestep)

    # inception_weights: the FID Inception file (scripts/convert_inception.py); checked before
    # training starts, so a run cannot fail at its final evaluation for want of it.
    # split (of the real images: eval or train), reference_stats / save_reference_stats (read /
    # write pytorch-fid mu-sigma .npz): how to match a paper's FID, docs/fid.md.
    c.evals.quality = dict(
        type="quality", num_samples=50_000, features="inception", inception_weights="", every=0,
        split="eval", reference_stats="", save_reference_stats="",
    )  # fmt: skip
    c.evals.likelihood = dict(type="likelihood", num_examples=10_000, batch_size=250, every=0)
    c.evals.params = dict(type="params", every=0)

    if args["preset"] == "cpu":
        # v-prediction: with eps-prediction this 0.69M-parameter UNet drew high-frequency
        # speckle instead of a garment in about a fifth of its samples (22.9% broken in the
        # contrastive features, whatever the sampler: DDIM 50 with clipping 27.2%), because
        # its x0 estimate (x_t - sigma * eps) / alpha multiplies the eps error by up to
        # sigma / alpha = 160 on the linear schedule's noisiest steps. Predicting v keeps x0
        # bounded there: same width and steps, 2.8% broken, contrastive FD 0.183 -> 0.047.
        c.data.image_size = 8 if args["data"] == "digits" else 28
        c.model.unet = dict(
            ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
            num_heads=1, num_groups=8, resample_with_conv=True,
        )  # fmt: skip
        c.model.random_flip = False
        c.model.vlb_terms = 50
        # Min-SNR-5 weighting: the plain v loss spends most of its gradient on the noisiest
        # half of the timesteps (SNR < 0.1), where the best answer is a blurred mean garment.
        # Same width and 5000 steps (2000 samples, domain features, DPM-Solver++ 20): FD
        # 19.5 -> 12.4, recall 0.62 -> 0.78, broken 25.8% -> 20.8%; bits/dim 4.65 -> 5.25,
        # since the low-noise terms that dominate the bound now weigh less. Gamma 2 at 5500
        # steps: recall 0.75, domain FD 12.1 (one draw); gamma 10: 0.78, 11.4 (three draws;
        # gamma 5: 0.79, 10.9); batch 64, the cosine noise schedule, a constant learning rate
        # with an EMA of 0.999 (0.775) and the peer's widths 32-64-64 at the 3200 steps that
        # fit the minutes (0.76) were no better (benchmarks/README.md, "Quality at equal
        # minutes"). 5500 steps took 16.75 to 20.35 minutes on the 2-core Xeon, as fast as
        # the VM ran that day (same file); the text preset's larger network (cross-attention)
        # keeps the 5000 it was measured with.
        # On the preset as it stands, gamma 20 (one training run, five sampling seeds) raised the
        # domain / contrastive recall to 0.847 / 0.879 from 0.834 / 0.859 for a domain FD of
        # 5.34 against 4.53 and precision 0.864 against 0.874: ahead of the peer on 14
        # figures, as many as the preset (benchmarks/README.md, "How much one draw says").
        c.train.num_steps = 5000 if args["cond"] == "text" else 5500
        # The 1000 timesteps drawn in proportion to their min-SNR-5 weight instead of
        # uniformly (the same objective, model.diffusion.level_sampling): under uniform draws
        # 57% of a batch's timesteps weigh below 0.1 (their SNR is under 0.11) and together
        # carry 5.4% of the loss, so a batch of 32 was worth about 12 evenly weighted images.
        # Same 5500 steps and sampler (ending at SNR 50), three draws of 2000, domain /
        # contrastive: FD 9.75 -> 8.04 / 0.031 -> 0.026, recall 0.818 -> 0.831 / 0.858 ->
        # 0.885, coverage 0.704 -> 0.743, C2ST 0.741 -> 0.720 / 0.689 -> 0.664; contrastive
        # precision 0.902 -> 0.887, which ending at SNR 100 (below) buys back in part
        # (benchmarks/README.md).
        unconditional_unet = (
            args["weighting"] == "min_snr" and not (args["edm"] or args["autoencoder"])
            and args["backbone"] == "unet" and args["cond"] == "none"
        )  # fmt: skip
        if unconditional_unet:
            c.model.diffusion.level_sampling = "importance"
        # model.clusters=10 (k-means clusters of the pixels, which took the GAN and PixelCNN
        # presets ahead): same 5500 steps (19.2 minutes) and SDE sampler, three draws of 2000,
        # domain / contrastive: FD 4.54 -> 3.77 / 0.033 -> 0.034, precision 0.868 -> 0.877 /
        # 0.912 -> 0.917, broken 12.8% -> 10.4% / 4.7% -> 3.7%, recall 0.813 -> 0.812 / 0.873
        # -> 0.860. Quality, not diversity: ahead of the PyTorch peer on 14 figures instead of
        # 15, so the preset stays unconditional (benchmarks/README.md, "The DDPM conditioned
        # on pixel clusters").
        c.train.batch_size = 32
        c.train.ema_decay = 0.998
        c.train.log_every = 100
        c.train.checkpoint_every = 2500
        c.train.sample_every = 2500
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 200
        c.optimizer.schedule = "cosine"
        if unconditional_unet:
            # Twice the rate, and Adam's second-moment average over about 100 steps instead of
            # 1000 (b2 0.99), so the step size keeps up with the loss's fast fall in a run this
            # short. Same 5500 steps (20.2 minutes on the idle 2-core Xeon) and sampler, three
            # draws of 2000, domain / contrastive: FD 8.38 -> 5.98 / 0.022 -> 0.027, recall
            # 0.814 -> 0.842 / 0.878 -> 0.869, coverage 0.738 -> 0.799, C2ST 0.725 -> 0.690 /
            # 0.651 -> 0.639, broken 19.0% -> 16.7% / 5.3% -> 5.2%, precision 0.852 -> 0.846 /
            # 0.898 -> 0.900, contrastive KID 0.0002 -> 0.0004 (the PyTorch peer's 0.0053); the
            # training loss ends 2.3% lower. b2 0.99 alone: FD 7.87, recall 0.822. A rate of
            # 3e-3 was worse in the runs' own evaluations (1000 samples, domain FD 7.34 against
            # 6.51, precision 0.845 against 0.861; benchmarks/README.md).
            # Input perturbation (model.diffusion.input_perturbation=0.1, DDPM-IP) moved no
            # figure beyond the spread of another training seed's (same file); it stays off.
            c.optimizer.learning_rate = 2e-3
            c.optimizer.b2 = 0.99
        c.sample.sampler = args["sampler"] or "dpm_solver_pp"
        if c.sample.sampler == "dpm_solver_pp" and not args["steps"] and args["cond"] != "text":
            # The 5500-step preset's weights, 2000 samples, domain / contrastive features: 20
            # steps FD 11.70 / 0.037, recall 0.785; 30 steps 11.24 / 0.029, recall 0.794 (same
            # seed; on another draw 10.52 / 0.022, and 50 steps 10.65 / 0.022). The text preset
            # was measured with the default 20. With the importance-sampled timesteps and the
            # grid ending at SNR 100 (below), 50 steps instead of 30 on the same weights (three
            # draws of 2000 from the same noise, domain / contrastive): FD 8.36 -> 8.38 / 0.032
            # -> 0.022, density 0.877 / 0.929 -> 0.877 / 0.938, precision 0.853 / 0.896 ->
            # 0.852 / 0.898, recall 0.811 -> 0.814 (domain); on three draws with another seed
            # the contrastive FD 0.035 -> 0.025 and precision 0.893 -> 0.898. Sampling takes
            # 1.75 times as long (10.9 against 19.1 images/s on the idle 2-core Xeon).
            c.sample.steps = 50 if unconditional_unet else 30
            # The min-SNR-5 network is hardly trained above SNR 5 (weight 5 / SNR), and there it
            # roughened smooth garments into grain and blotches, visible in any 2000-sample
            # draw. Ending the grid at SNR 50 and returning the x0 estimate from there keeps
            # them smooth. The preset's weights, three draws of 2000 from the same noise, domain
            # / contrastive: the full grid (SNR 10^4) FD 10.9 / 0.026, recall 0.787, precision
            # 0.854 / 0.915 (the record before); SNR 50: FD 9.7 / 0.031, recall 0.818,
            # precision 0.842 / 0.902; SNR 20: FD 9.2 / 0.046, recall 0.816, precision 0.837 /
            # 0.892. One draw on a batch-16 probe's weights: SNR 100, 20, 10, 5 gave recall
            # 0.793, 0.801, 0.793, 0.777 (full grid 0.759), the contrastive precision falling
            # from 0.918 to 0.871 (benchmarks/README.md). With the importance-sampled timesteps
            # above, three draws: SNR 50, FD 8.04 / 0.026, precision 0.844 / 0.887, recall
            # 0.831; SNR 100, FD 8.36 / 0.032, precision 0.853 / 0.896, recall 0.811, density
            # 0.877 / 0.929 (0.864 / 0.909), the trade that left fewer figures level with the
            # PyTorch peer's. Measured on the unconditional pixel-space UNet with min-SNR
            # weighting only; the other variants (EDM, latent, DiT, class-conditional, uniform
            # weighting) keep 0.
            if unconditional_unet:
                c.sample.final_snr = 100.0
                # The reverse SDE instead of the ODE (sample.eta=1: SDE-DPM-Solver++(2M)), same
                # 50 steps ending at SNR 100: its fresh noise at every step washes out part of
                # the error the small network made at the steps before. Its pair on the idle
                # 2-core Intel Xeon (5500 steps in 18.8 minutes, against the 20.36-minute peer of
                # the ODE's pair there; three draws of 2000, domain / contrastive): FD 5.98 ->
                # 4.54 / 0.027 -> 0.033, precision 0.846 -> 0.868 / 0.900 -> 0.912, recall 0.842
                # -> 0.813 / 0.869 -> 0.873, coverage 0.799 -> 0.839, C2ST 0.690 -> 0.665, broken
                # 16.7% -> 12.8% / 5.2% -> 4.7%; ahead of the peer on 15 of 16 (the ODE: 14),
                # level on the domain recall (the peer's 0.818 +- 0.024; benchmarks/README.md).
                # Under five sampling seeds (benchmarks/peers/seed_draws.py) these weights'
                # domain recall is 0.834 +- 0.015 per draw, and neither half the noise (eta 0.5)
                # nor the ODE at 100 steps moves it on the same seeds (+0.000, +0.001); half the
                # noise costs domain FD, coverage and broken share (benchmarks/README.md, "How
                # much one draw says").
                c.sample.eta = 1.0
        set_domain_sample_evals(c)
        c.evals.likelihood = dict(type="likelihood", num_examples=500, batch_size=250, every=0)
    elif args["preset"] == "smoke":
        shrink_for_preset(c, "smoke")
        c.data.image_size = 8 if args["data"] == "digits" else 28
        c.model.unet = dict(
            ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), dropout=0.1,
            num_heads=1, num_groups=4, resample_with_conv=True,
        )  # fmt: skip
        c.model.diffusion.timesteps = 100
        c.model.vlb_terms = 3
        c.optimizer.warmup_steps = 0
        c.sample.sampler = args["sampler"] or "ddim"
        c.sample.steps = args["steps"] or 4
        c.evals = dict(params=c.evals.params.to_dict())
        c.evals.likelihood = dict(type="likelihood", num_examples=16, batch_size=8, every=0)
    if (args["edm"] or args["autoencoder"]) and "likelihood" in c.evals:
        del c.evals["likelihood"]  # the variational bound is the discrete VP process's, in pixels
    apply_backbone(c, args["backbone"], args["preset"])
    add_text_config(c, args)
    add_second_extractor(c, args["preset"])
    return c
