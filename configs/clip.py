"""CLIP-style contrastive pretraining of a text encoder on image-caption pairs.

Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021: symmetric InfoNCE over a batch of (image, caption) pairs
with a learned temperature (initial 0.07, inverse capped at 100). Here the towers
are small (a CNN and a pre-LN Transformer over a word-level caption tokenizer) and
the captions come from ``jaxgen.data.captions`` (Fashion-MNIST) or the ``sprites``
source. The trained text tower is then a frozen text encoder for the generators.

  python launch.py --config=configs/clip.py:preset=cpu --workdir=runs/clip_fmnist
  python launch.py --config=configs/clip.py:preset=cpu,data=sprites --workdir=runs/clip_sprites
  python launch.py --config=configs/clip.py:preset=cpu --workdir=runs/clip_fmnist --mode=eval

Arguments: ``preset=smoke|cpu`` (default: full), ``data=fashion_mnist|sprites``,
``cond=text`` (the only choice), ``tokenizer=word|byte``.
"""

from configs.base import common_args, get_base_config, parse_args, shrink_for_preset
from jaxgen.errors import UserError
from jaxgen.text.conditioning import default_text_config


def get_config(arg: str | None = None):
    allowed = common_args(tokenizer="word")
    allowed["cond"] = "text"
    args = parse_args(arg, allowed)
    if args["cond"] != "text":
        raise UserError(f"config argument cond={args['cond']!r}: clip needs cond=text")
    c = get_base_config()
    c.family = "clip"
    c.data.name = args["data"]
    c.data.cond = "text"
    c.data.image_size = 32 if args["data"] == "sprites" else 28

    c.text = default_text_config()
    c.text.tokenizer = args["tokenizer"]
    c.text.max_len = 16 if args["tokenizer"] == "word" else 64
    c.text.width = 256
    c.text.depth = 4
    c.text.num_heads = 8

    c.model.image_channels = (64, 128, 256)
    c.model.embed_dim = 256
    c.model.init_temperature = 0.07

    c.train.num_steps = 20_000
    c.train.batch_size = 256
    c.train.sample_every = 0  # CLIP draws no images
    c.train.ema_decay = 0.999
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 5e-4
    c.optimizer.weight_decay = 0.1
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-6
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 500

    c.evals.zero_shot = dict(type="clip_zero_shot", num_examples=2000, every=0)
    c.evals.params = dict(type="params", every=0)

    if args["preset"] == "cpu":
        c.text.width = 64
        c.text.depth = 2
        c.text.num_heads = 4
        c.model.image_channels = (16, 32, 64)
        c.model.embed_dim = 64
        c.train.num_steps = 1000
        c.train.batch_size = 128
        c.train.log_every = 50
        c.train.checkpoint_every = 500
        c.train.ema_decay = 0.99  # 0.999 would still weigh the initialisation 37% at step 1000
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 50
        c.evals.zero_shot.num_examples = 1000
    elif args["preset"] == "smoke":
        shrink_for_preset(c, "smoke")
        c.train.sample_every = 0
        c.train.ema_decay = 0.0
        c.text.width = 16
        c.text.depth = 1
        c.text.num_heads = 2
        c.model.image_channels = (8, 16)
        c.model.embed_dim = 16
        c.optimizer.warmup_steps = 0
        c.evals.zero_shot.num_examples = 16
    return c
