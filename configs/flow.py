"""Flow matching: rectified flow and MeanFlow (``jaxgen/methods/flow.py``).

  python launch.py --config=configs/flow.py:preset=cpu --workdir=runs/flow
  python launch.py --config=configs/flow.py:preset=cpu,objective=meanflow --workdir=runs/meanflow
  python launch.py --workdir=runs/meanflow --mode=sample --config.sample.steps=2
  python launch.py --config=configs/flow.py --workdir=runs/flow_cifar10     # full size

Arguments: ``preset=smoke|cpu`` (default: full), ``objective=rectified_flow|meanflow``,
``backbone=unet|dit`` (the UNet, default, or a DiT sized per preset: ``configs/backbones.py``),
``data=<source>``, ``cond=none|class``, ``cond=text`` with ``text_encoder=bert|transformer``
(``configs/base.py``), ``autoencoder=<VAE workdir>`` (flow in that VAE's latent space),
``sampler=<name>`` and ``steps=<int>`` (0: the sampler's default; ``docs/contract.md`` lists
the samplers). With ``cond=class`` or ``cond=text`` the condition is dropped with
probability 0.1 in training and ``sample.guidance`` sets classifier-free guidance (0:
unconditional, 1: conditional).

Choices and why:

* Full preset: CIFAR-10 32x32 with the DDPM UNet of ``configs/ddpm.py`` (35.7M parameters)
  and its optimisation (Adam 2e-4, 5000 warm-up steps, batch 128, 800k steps, EMA 0.9999,
  dropout 0.1, flips), so that the objective is the only difference from DDPM. A
  published-style setting, not a reproduction: rectified flow (Liu et al. 2022) used another
  network. Logit-normal(0, 1) training times (Esser et al. 2024, who found them better than
  uniform ones for rectified flow). Sampling: Euler, 50 steps.
* MeanFlow: the defaults of Geng et al. (2025)'s ImageNet ablations: times
  logit-normal(-0.4, 1.0), ``r < t`` for 25% of the pairs, adaptive weight power 1. Sampling:
  one step (``sample.steps=2`` or more: several jumps).
* ``cpu``: Fashion-MNIST 28x28 with the network, batch and optimiser of the ddpm config's
  ``cpu`` preset (UNet ch 16 x (1, 2, 4), batches of 32) and the 3000 steps that preset had
  before it moved to v prediction and 5000 steps, so that the NFE table of the README
  compares the three families at equal training; a rectified-flow step costs about a DDPM
  step (the same network evaluations), a MeanFlow step more (the Jacobian-vector product
  costs about one more forward pass). Euler at 20 steps: DDPM's cpu preset samples with
  DPM-Solver++ at 20 network evaluations, so both spend the same. The four sample evaluators
  of that preset share one set of 1000 samples in the domain classifier's features.
* ``smoke``: the whole train, checkpoint, sample and eval path in seconds (the tests).
* ``time_scale = 1``: the network sees ``t`` in [0, 1] (as SiT does), not DDPM's 1000 t.
  MeanFlow's target holds the network's ``d/dt``, which the sinusoidal time embedding's fast
  frequencies blow up at 1000 t: in a 400-step cpu-preset trial its error grew instead of
  falling; rectified flow reached the same FD either way in that trial.
* ``clip_denoised = False``: the samplers integrate the network's velocity as it is (clipping
  ``x0_hat = z_t - t F`` to [-1, 1] would change the ODE).
* No likelihood evaluator: the family computes none (``jaxgen/methods/flow.py``).
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
        objective="rectified_flow", backbone="unet", autoencoder="", sampler="", steps=0
    )
    args = parse_args(arg, dict(defaults, data=""))  # "": CIFAR-10 at full size, else Fashion-MNIST
    if not args["data"]:
        args["data"] = "tfds:cifar10" if args["preset"] == "full" else "fashion_mnist"
    meanflow = args["objective"] == "meanflow"
    c = get_base_config()
    c.family = "flow"
    c.data.name = args["data"]
    c.data.cond = args["cond"]
    c.data.image_size = 32

    c.model.unet = dict(
        ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
        num_heads=1, num_groups=32, resample_with_conv=True,
    )  # fmt: skip
    c.model.flow = dict(
        objective=args["objective"],  # checked by the family (model.flow.objective)
        time_sampling="logit_normal",
        time_mean=-0.4 if meanflow else 0.0,
        time_std=1.0,
        meanflow_fraction=0.25,
        meanflow_power=1.0,
        time_scale=1.0,  # the network's time input is t itself, not DDPM's 1000 t
    )
    c.model.cond_drop_prob = 0.1 if args["cond"] in ("class", "text") else 0.0
    c.model.clip_denoised = False
    c.model.random_flip = True
    c.model.autoencoder = args["autoencoder"]
    c.model.latent_scale = 1.0

    c.train.num_steps = 800_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9999
    c.train.checkpoint_every = 10_000
    c.train.sample_every = 10_000
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 5000
    c.optimizer.grad_clip_norm = 1.0

    c.sample.sampler = args["sampler"] or ("meanflow" if meanflow else "euler")
    c.sample.steps = args["steps"] or (1 if meanflow else 50)
    c.sample.guidance = 3.0 if args["cond"] == "text" else 1.0  # as configs/ddpm.py
    c.sample.eta = 0.0  # ddim and dpm_solver_pp: 0 the ODE, 1 ancestral / the SDE
    c.sample.spacing = ""  # "": the sampler's default

    c.evals.quality = dict(
        type="quality", num_samples=50_000, features="inception", inception_weights="", every=0,
        split="eval", reference_stats="", save_reference_stats="",
    )  # fmt: skip
    c.evals.params = dict(type="params", every=0)

    if args["preset"] == "cpu":
        c.data.image_size = 8 if args["data"] == "digits" else 28
        c.model.unet = dict(
            ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
            num_heads=1, num_groups=8, resample_with_conv=True,
        )  # fmt: skip
        c.model.random_flip = False
        c.train.num_steps = 3000
        c.train.batch_size = 32
        c.train.ema_decay = 0.998
        c.train.log_every = 100
        c.train.checkpoint_every = 500
        c.train.sample_every = 1000
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 200
        c.optimizer.schedule = "cosine"
        c.sample.steps = args["steps"] or (1 if meanflow else 20)
        set_domain_sample_evals(c)
    elif args["preset"] == "smoke":
        shrink_for_preset(c, "smoke")
        c.data.image_size = 8 if args["data"] == "digits" else 28
        c.model.unet = dict(
            ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), dropout=0.1,
            num_heads=1, num_groups=4, resample_with_conv=True,
        )  # fmt: skip
        c.optimizer.warmup_steps = 0
        c.sample.steps = args["steps"] or (1 if meanflow else 4)
        c.evals = dict(params=c.evals.params.to_dict())
    apply_backbone(c, args["backbone"], args["preset"])
    add_text_config(c, args)
    add_second_extractor(c, args["preset"])
    return c
