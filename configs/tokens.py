"""Autoregressive image tokens: an FSQ tokenizer, then a Transformer prior over its tokens.

Two stages, two runs (as latent diffusion uses a trained VAE run): ``stage=tokenizer``
trains the convolutional autoencoder with finite scalar quantisation (``family =
image_tokenizer``; 28x28 Fashion-MNIST -> 7x7 = 49 tokens from 1000 codes); ``stage=prior``
trains a causal Transformer over the tokens of the tokenizer run named by ``tokenizer=``
(``family = token_prior``) and draws images by sampling tokens left to right (key/value
cache) and decoding them with the frozen tokenizer.

  python launch.py --config=configs/tokens.py:preset=cpu,stage=tokenizer --workdir=runs/tok
  python launch.py --config=configs/tokens.py:preset=cpu,stage=prior,tokenizer=runs/tok \
      --workdir=runs/tok_prior
  python launch.py --workdir=runs/tok_prior --mode=sample --config.sample.timing_repeats=3

Arguments: ``stage=tokenizer|prior`` (default ``tokenizer``), ``tokenizer=<workdir>`` (the
prior's tokenizer run; required with ``stage=prior``), ``preset=smoke|cpu`` (default: full),
``data=<source>`` (default ``tfds:cifar10`` at full size, else ``fashion_mnist``),
``cond=none|class`` and ``cond=text`` with ``text_encoder=bert|transformer`` (the prior's
condition; the tokenizer is unconditional), ``sampler=fast|plain``. With ``cond=class`` or
``cond=text`` the condition is dropped with probability 0.1 in training and
``sample.guidance`` sets classifier-free guidance (0: unconditional, 1: conditional).
``sample.temperature`` (0: greedy) and ``sample.top_k`` (0: all codes) shape each draw.

The prior's ``likelihood`` evaluator reports ``bits_per_token`` (exact, of the tokens: not
pixel bits/dim) and the tokenizer's reconstruction error on the same test images
(``recon_mse``, pixels in [0, 1], and ``recon_psnr``).

The full preset is the two-stage recipe of VQGAN (Esser et al. 2021) at CIFAR-10's size, the
data of PixelCNN++'s full preset, so that the two compare: a convolutional f=4 tokenizer
(32x32 -> 8x8 = 64 tokens; VQGAN's f=16 is for 256x256 images) with FSQ levels
(8, 5, 5, 5), Mentzer et al.'s choice for a ~2^10 codebook, trained with VQGAN's Adam betas
(0.5, 0.9) but without its perceptual and adversarial terms; and a GPT-style prior of 12
blocks of width 512 (8 heads, dropout 0.1; VQGAN's is 24 x 1024 for 256 tokens), AdamW
with warm-up and cosine decay.
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
from jaxgen.errors import UserError

STAGES = ("tokenizer", "prior")


def get_config(arg: str | None = None):
    args = parse_args(arg, common_args(stage="tokenizer", tokenizer="", sampler="") | {"data": ""})
    preset, stage = args["preset"], args["stage"]
    if stage not in STAGES:
        raise UserError(f"config argument stage={stage!r}: expected one of {STAGES}")
    if not args["data"]:
        args["data"] = "tfds:cifar10" if preset == "full" else "fashion_mnist"
    c = get_base_config()
    c.data.name = args["data"]
    c.data.image_size = {"digits": 8}.get(c.data.name, 32 if "cifar" in c.data.name else 28)
    c.evals.params = dict(type="params", every=0)
    if stage == "tokenizer":
        if args["cond"] != "none":
            raise UserError(
                f"config argument cond={args['cond']!r}: the tokenizer stage is unconditional; "
                "give cond to stage=prior"
            )
        _tokenizer(c, preset)
    else:
        c.data.cond = args["cond"]
        _prior(c, preset, args)
        add_text_config(c, args)
        if preset == "cpu" and "prompts" in c.evals:
            c.evals.prompts.samples_per_prompt = 1
    add_second_extractor(c, args["preset"])
    return c


def _tokenizer(c, preset: str) -> None:
    c.family = "image_tokenizer"
    m = c.model
    m.levels = (8, 5, 5, 5)  # 1000 codes
    m.channels = (128, 256)  # f = 4: 32x32 -> 8x8 tokens
    m.num_res_blocks = 2
    m.recon_loss = "l2"
    c.train.num_steps = 100_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.999
    c.train.sample_every = 0  # the tokenizer draws no images
    c.train.checkpoint_every = 10_000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 4e-4
    c.optimizer.b1 = 0.5
    c.optimizer.b2 = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 2000
    c.optimizer.grad_clip_norm = 1.0
    if preset == "cpu":
        # 405k parameters, ~0.24 s of CPU time per step of 32 images (measured on the 2-core
        # CPU under load): 1500 steps (0.8 epochs) take ~6 min.
        m.channels = (32, 64)  # 28x28 -> 7x7 tokens
        m.num_res_blocks = 1
        c.train.num_steps = 1500
        c.train.batch_size = 32
        c.train.ema_decay = 0.99
        c.train.log_every = 100
        c.train.checkpoint_every = 500
        c.optimizer.name = "adam"
        c.optimizer.learning_rate = 2e-3
        c.optimizer.b1 = 0.9
        c.optimizer.b2 = 0.999
        c.optimizer.weight_decay = 0.0
        c.optimizer.warmup_steps = 100
    elif preset == "smoke":
        shrink_for_preset(c, "smoke")
        c.train.sample_every = 0
        m.levels = (5, 3, 3)  # 45 codes
        m.channels = (8, 16)
        m.num_res_blocks = 0
        c.optimizer.warmup_steps = 0


def _prior(c, preset: str, args: dict) -> None:
    c.family = "token_prior"
    m = c.model
    m.tokenizer = args["tokenizer"]  # the stage-1 run's workdir
    m.width = 512
    m.depth = 12
    m.num_heads = 8
    m.mlp_ratio = 4
    m.dropout = 0.1
    m.cond_drop_prob = 0.1 if args["cond"] in ("class", "text") else 0.0
    c.train.num_steps = 200_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9999
    c.train.checkpoint_every = 10_000
    c.train.sample_every = 10_000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 4e-4
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.01
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 5000
    c.optimizer.grad_clip_norm = 1.0
    c.sample.sampler = args["sampler"] or "fast"
    c.sample.guidance = 1.0 if args["cond"] in ("class", "text") else 0.0
    c.sample.temperature = 1.0  # 0: greedy
    c.sample.top_k = 0  # 0: every code
    c.evals.likelihood = dict(type="likelihood", num_examples=10_000, batch_size=500, every=0)
    c.evals.quality = dict(
        type="quality", num_samples=50_000, features="inception", inception_weights="", every=0,
        split="eval", reference_stats="", save_reference_stats="",
    )  # fmt: skip
    if preset == "cpu":
        # 1.06M parameters, ~0.26 s of CPU time per step of 32 images (49 tokens each): 2400
        # steps take ~10.5 min, then ~2.5 s per 250 samples and per 500 test likelihoods.
        m.width = 128
        m.depth = 4
        m.num_heads = 4
        m.dropout = 0.0
        c.train.num_steps = 2400
        c.train.batch_size = 32
        c.train.ema_decay = 0.995
        c.train.log_every = 100
        c.train.checkpoint_every = 800
        c.train.sample_every = 2400
        c.optimizer.learning_rate = 1e-3
        c.optimizer.weight_decay = 0.0
        c.optimizer.warmup_steps = 100
        c.sample.num = 36
        c.evals.likelihood = dict(type="likelihood", num_examples=10_000, batch_size=500, every=0)
        set_domain_sample_evals(c)
    elif preset == "smoke":
        shrink_for_preset(c, "smoke")
        m.width = 16
        m.depth = 1
        m.num_heads = 2
        m.mlp_ratio = 2
        m.dropout = 0.1
        c.optimizer.warmup_steps = 0
        c.sample.num = 4
        c.evals = dict(params=c.evals.params.to_dict())
        c.evals.likelihood = dict(type="likelihood", num_examples=16, batch_size=8, every=0)
