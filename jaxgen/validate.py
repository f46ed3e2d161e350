"""Checks of a run's config and sampling inputs, made before anything is written.

:class:`~jaxgen.experiment.Experiment` calls them all on construction, so a bad value fails in
seconds with a one-line :class:`~jaxgen.errors.UserError` naming its config key, rather than
at the first sample grid or after the last training step:

* :func:`check_config_values`: value ranges, from the config alone;
* :func:`check_sampling_inputs`: sampler options, ``sample.label`` and the prompts, given the
  family's method and the data;
* :func:`check_batch_size`: ``train.batch_size`` against devices, processes and data;
* :func:`check_eval_split`: the split the evaluators will read (training launches).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable

import ml_collections

from jaxgen.data.spec import check_global_batch
from jaxgen.dotted import MISSING, lookup
from jaxgen.errors import UserError
from jaxgen.parallel import PARAM_SHARDINGS
from jaxgen.samplers import SAMPLERS
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioning import load_prompts_file

log = logging.getLogger("jaxgen")

# (config key, allowed values, what the special values mean);
# bounds are ">= a", "> a", "[a, b]" or "[a, b)".
_RANGES = (
    ("train.num_steps", ">= 0", ""),
    ("train.batch_size", ">= 1", ""),
    ("train.log_every", ">= 1", ""),
    ("train.checkpoint_every", ">= 0", " (0: only at the end)"),
    ("train.sample_every", ">= 0", " (0: never)"),
    ("train.eval_every", ">= 0", " (0: only at the end)"),
    ("train.keep_checkpoints", ">= 1", ""),
    ("train.ema_decay", "[0, 1]", ""),
    ("optimizer.learning_rate", "> 0", ""),
    ("optimizer.d_learning_rate", "> 0", ""),
    ("optimizer.b1", "[0, 1)", ""),  # Adam's bias correction divides by 1 - b ** step
    ("optimizer.b2", "[0, 1)", ""),
    ("optimizer.eps", ">= 0", ""),
    ("optimizer.weight_decay", ">= 0", ""),
    ("optimizer.warmup_steps", ">= 0", ""),
    ("optimizer.grad_clip_norm", ">= 0", " (0: no clipping)"),
    ("sample.num", ">= 1", ""),
    ("sample.batch_size", ">= 1", " (images per sampler call over all devices)"),
    ("sample.steps", ">= 0", " (0: the sampler's default)"),
    ("sample.guidance", ">= 0", " (0: unconditional, 1: conditional)"),
    ("sample.final_snr", ">= 0", " (0: the process's least noisy level)"),
    ("sample.drs_percentile", "[0, 100)", " (0: 95)"),
    ("sample.temperature", ">= 0", " (0: greedy, 1: draws from the model)"),
    ("sample.timing_repeats", ">= 0", " (0: no timing)"),
    ("data.prefetch", ">= 0", ""),
    ("text.caption_seed", ">= 0", ""),
    ("model.dropout", "[0, 1)", ""),
    ("model.init_temperature", "> 0", ""),
    ("model.latent_scale", "> 0", ""),
    ("model.diffusion.sigma_min", "> 0", ""),
    ("model.diffusion.sigma_max", "> 0", ""),
    ("model.diffusion.sigma_data", "> 0", ""),
    ("model.diffusion.p_std", "> 0", ""),
    ("gan.gp_weight", ">= 0", " (0: off)"),
    ("gan.r1_gamma", ">= 0", " (0: off)"),
    ("gan.r1_every", ">= 1", ""),
    ("gan.mode_seeking", ">= 0", " (0: off)"),
    ("gan.g_batch_size", ">= 0", " (0: the discriminator's micro-batch size)"),
)  # gan.top_k, gan.cr_real, gan.cr_fake: checked by jaxgen.gan.step.Objective
# seed: Grain's shuffle takes an unsigned 32-bit seed.
MAX_SEED = 2**32 - 1
# data.cond: what a model is conditioned on.
COND_KINDS = ("none", "class", "text")
# Evaluator types that read real images of data.eval_split (the sample evaluators only with
# their option split=eval, the default); the others read none or the training split.
EVAL_SPLIT_READERS = ("likelihood", "clip_zero_shot")
SPLIT_OPTION_READERS = ("quality", "diversity", "c2st")
# Sizes anywhere under config.model and config.text (widths, depths, channel lists, heads,
# latent sizes, kernel sizes, sample counts): an integer or a non-empty tuple of integers, at
# least 1, or at least 0 for the second list.
MODEL_SIZES = (
    "channels", "ch", "ch_mult", "latent_dim", "hidden_dim", "z_dim", "g_width", "d_width",
    "num_heads", "num_groups", "width", "depth", "feature_dim", "levels", "cond_dim",
    "text_dim", "features", "output_features", "num_mixtures", "num_layers", "num_levels",
    "kernel_size", "vertical_rows", "vertical_cols", "embed_dim", "iwae_k", "max_len",
)  # fmt: skip
MODEL_SIZES_FROM_0 = (
    "latent_channels", "num_res_blocks", "convs_per_level", "num_resnet", "d_extra_blocks",
    "g_extra_convs", "vlb_terms", "num_classes", "clusters", "d_minibatch_std",
)  # fmt: skip
SIZED_SECTIONS = ("model", "text")
_EVAL_RANGES = (
    ("every", ">= 0", " (0: only at the end)"),
    ("num_samples", ">= 4", " (the sample metrics need at least 4)"),
    ("num_examples", ">= 1", ""),
    ("batch_size", ">= 1", ""),
    ("samples_per_prompt", ">= 1", ""),
    ("max_prompts", ">= 0", " (0: all)"),
    ("sprites_prompts", ">= 1", ""),
    ("kid_subsets", ">= 1", ""),
    ("kid_subset_size", ">= 1", ""),
    ("k", ">= 1", ""),
    ("steps", ">= 1", ""),
)


def _within(value: float, bound: str) -> bool:
    if bound.startswith(">="):
        return value >= float(bound[2:])
    if bound.startswith(">"):
        return value > float(bound[1:])
    low, high = (float(x) for x in bound[1:-1].split(","))
    return low <= value and (value < high if bound.endswith(")") else value <= high)


def _check_range(key: str, value, bound: str, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"config key {key}={value!r}: expected a number {bound}")
    if not math.isfinite(value):  # inf passes "> 0"; nan fails every bound but says so poorly
        raise UserError(f"config key {key}={value!r}: expected a finite number {bound}{hint}")
    if not _within(value, bound):
        raise UserError(f"config key {key}={value!r}: expected {bound}{hint}")


def _size_error(key: str, value) -> UserError | None:
    least = 0 if key.rsplit(".", 1)[-1] in MODEL_SIZES_FROM_0 else 1
    values = value if isinstance(value, (tuple, list)) else (value,)
    fine = bool(values) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= least for v in values
    )
    return None if fine else UserError(f"config key {key}={value!r}: expected integers >= {least}")


def check_model_sizes(config: ml_collections.ConfigDict) -> None:
    """UserError for the first size under ``config.model`` or ``config.text``
    (:data:`MODEL_SIZES`, :data:`MODEL_SIZES_FROM_0`, at any depth) that is not an integer,
    or a non-empty tuple of integers, in range: a bad width would otherwise fail inside the
    network's construction."""
    pending = []
    for name in SIZED_SECTIONS:
        section = lookup(config, name)
        if hasattr(section, "items"):
            pending.append((name, section))
    while pending:
        prefix, section = pending.pop()
        for name, value in section.items():
            key = f"{prefix}.{name}"
            if hasattr(value, "items"):
                pending.append((key, value))
            elif name in MODEL_SIZES or name in MODEL_SIZES_FROM_0:
                error = _size_error(key, value)
                if error is not None:
                    raise error


def check_config_values(config: ml_collections.ConfigDict) -> None:
    """UserError naming the first value out of range; keys absent from ``config`` are skipped.

    Checks ``seed`` (an int in [0, 2**32 - 1]), ``data.cond`` (one of :data:`COND_KINDS`),
    step counts, frequencies (0: never), ``train.keep_checkpoints``, the EMA decay,
    optimizer settings, ``sample.*`` numbers, ``train.param_sharding`` and each evaluator's
    ``every``, ``num_samples``, ``num_examples``, ``batch_size`` and prompt counts. Needs no
    data and compiles nothing.
    """
    for key, bound, hint in _RANGES:
        value = lookup(config, key)
        if value is not MISSING:
            _check_range(key, value, bound, hint)
    seed = lookup(config, "seed")
    if seed is not MISSING and (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise UserError(f"config key seed={seed!r}: expected an integer in [0, 2**32 - 1]")
    cond = lookup(config, "data.cond")
    if cond is not MISSING and cond not in COND_KINDS:
        raise UserError(f"config key data.cond={cond!r}: expected one of {COND_KINDS}")
    check_model_sizes(config)
    low, high = (
        lookup(config, "model.diffusion.sigma_min"),
        lookup(config, "model.diffusion.sigma_max"),
    )
    if low is not MISSING and high is not MISSING and not low < high:
        raise UserError(
            f"config key model.diffusion.sigma_min={low!r}: expected < "
            f"model.diffusion.sigma_max={high!r}"
        )
    sharding = lookup(config, "train.param_sharding")
    if sharding is not MISSING and sharding not in PARAM_SHARDINGS:
        raise UserError(
            f"config key train.param_sharding={sharding!r}: expected one of {PARAM_SHARDINGS}"
        )
    evals = lookup(config, "evals")
    for name, cfg in ({} if evals is MISSING else evals).items():
        for option, bound, hint in _EVAL_RANGES:
            if hasattr(cfg, "keys") and option in cfg:
                _check_range(f"evals.{name}.{option}", cfg[option], bound, hint)


def check_sample_ranges(options: SampleOptions) -> None:
    """``options.steps`` and ``options.guidance`` within the bounds that
    :func:`check_config_values` sets for ``sample.steps`` and ``sample.guidance``."""
    for key, bound, hint in _RANGES:
        section, _, name = key.partition(".")
        if section == "sample" and name in SampleOptions.names():
            _check_range(key, getattr(options, name), bound, hint)


def check_unused_sample_options(family: str, options: SampleOptions, keys: Iterable[str]) -> None:
    """UserError for any option of ``keys`` set to something other than its "unset" value
    (``""`` or 0): ``family`` would ignore it."""
    for key in keys:
        value = getattr(options, key)
        if value:
            unset = "empty" if isinstance(getattr(SampleOptions(), key), str) else 0
            raise UserError(
                f"config key sample.{key}={value!r}: family {family!r} does not use it; "
                f"leave it at {unset}"
            )


def check_sample_options_used(family: str, options: SampleOptions, used: Iterable[str]) -> None:
    """:func:`check_unused_sample_options` for every option outside ``used``: a family names
    the options it reads, so an option added later is refused by it until it reads it too."""
    used = set(used)
    unused = [name for name in SampleOptions.names() if name not in used]
    check_unused_sample_options(family, options, unused)


def check_sampling_inputs(config: ml_collections.ConfigDict, method, spec) -> SampleOptions:
    """The sampler options of ``method``'s family, ``sample.label`` and the prompts.

    Args:
      config: the run's config (its ``sample`` section).
      method: the family's :class:`~jaxgen.methods.base.Method`; its
        ``resolve_sample_options()`` checks ``sample.sampler``, ``steps``, ``guidance``,
        ``eta`` and ``spacing``.
      spec: the :class:`~jaxgen.data.spec.DataSpec` (conditioning and number of classes).

    Returns:
      The config's :class:`~jaxgen.sampling.SampleOptions`, the family's defaults filled in.

    ``sample.label`` must be -1 or a class (only with ``data.cond=class``); ``sample.prompt``
    and ``sample.prompts_file`` apply only with ``data.cond=text``, and the file must be a
    UTF-8 text file with at least one non-empty line.
    """
    options = method.resolve_sample_options()
    sample = config.get("sample", ml_collections.ConfigDict())
    label = sample.get("label", -1)
    if spec.cond == "class":
        if not -1 <= label < spec.num_classes:
            last = spec.num_classes - 1
            raise UserError(f"config key sample.label={label}: expected -1 or 0..{last}")
    elif label != -1:
        raise UserError(
            f"config key sample.label={label}: only used with data.cond=class, not {spec.cond!r}"
        )
    for key in ("prompt", "prompts_file"):
        if sample.get(key) and spec.cond != "text":
            raise UserError(
                f"config key sample.{key}={sample[key]!r}: only used with data.cond=text, "
                f"not {spec.cond!r}"
            )
    if spec.cond == "text" and sample.get("prompts_file"):
        load_prompts_file(sample.prompts_file)
    warn_ignored_eta(options)
    check_guidance_trained(method, options)
    return options


def check_guidance_trained(method, options: SampleOptions) -> None:
    """For a family that reads it (``method.reads_guidance``): ``sample.guidance`` other than
    1 on a conditional model needs its unconditional prediction, which only a network trained
    with its condition sometimes dropped (``model.cond_drop_prob > 0``) has learned; with 0 it
    would come from the untrained null label or text, and every sample, a run's final
    evaluation included, would be wrong. An unconditional model ignores guidance: a value other
    than 0 or 1 gets a warning."""
    if not method.reads_guidance:
        return  # its options' guidance is the unused default, checked by the family
    conditional = bool(getattr(method, "num_classes", 0)) or getattr(method, "text", None)
    if not conditional and options.guidance not in (0, 1):
        log.warning(
            "config key sample.guidance=%g: the model is unconditional (no labels, text or "
            "clusters) and ignores it",
            options.guidance,
        )
    if conditional and options.guidance != 1 and getattr(method, "cond_drop_prob", 1.0) == 0:
        raise UserError(
            f"config key sample.guidance={options.guidance:g}: needs the unconditional model, "
            "which model.cond_drop_prob=0 never trains; set model.cond_drop_prob > 0 (e.g. 0.1) "
            "or sample with guidance 1"
        )


def warn_ignored_eta(options: SampleOptions) -> None:
    """Logs a warning when ``sample.eta`` is set but ``options.sampler`` takes no eta.

    Only the families that use ``eta`` (diffusion and flow) get this far with it set; their
    samplers without it (``ddpm``, ``heun``, ``euler``, ``flow_heun``, ``meanflow``) ignore it.
    A warning, not an error: a preset's eta (the DDPM cpu preset's is 1) must not make every
    ``sample.sampler=heun`` override spell out ``sample.eta=0`` too."""
    spec = SAMPLERS.get(options.sampler)
    if options.eta and not (spec and spec.takes_eta):
        log.warning(
            "config key sample.eta=%g: sampler %r takes no eta and ignores it",
            options.eta,
            options.sampler,
        )


def check_grad_accum(train: ml_collections.ConfigDict) -> None:
    """``train.grad_accum_steps`` >= 1 and a divisor of ``train.batch_size``."""
    accum = train.get("grad_accum_steps", 1)
    if accum < 1 or train.batch_size % accum:
        raise UserError(
            f"config key train.grad_accum_steps={accum}: must be >= 1 and divide "
            f"train.batch_size={train.batch_size}"
        )


def check_batch_size(
    config: ml_collections.ConfigDict, mesh_size: int, process_count: int, train_size: int
) -> None:
    """``train.batch_size`` (global) against the ``mesh_size`` devices of all processes, the
    ``process_count`` processes, the ``train_size`` examples and ``train.grad_accum_steps``."""
    check_global_batch(config.train.batch_size, mesh_size, process_count, train_size)
    check_grad_accum(config.train)


def eval_split_readers(config: ml_collections.ConfigDict) -> list[str]:
    """What reads real images of ``data.eval_split``: the names of ``config.evals`` whose
    evaluators do, and for a classifier run ``scripts/export_classifier.py``, which reports
    the classifier's accuracy on that split."""
    evals = lookup(config, "evals")
    names = ["scripts/export_classifier.py"] if lookup(config, "family") == "classifier" else []
    for name, cfg in ({} if evals is MISSING else evals).items():
        kind = cfg.get("type", "") if hasattr(cfg, "get") else ""
        if kind in EVAL_SPLIT_READERS or (
            kind in SPLIT_OPTION_READERS and cfg.get("split", "eval") == "eval"
        ):
            names.append(name)
    return names


def check_eval_split(config: ml_collections.ConfigDict, eval_source=None) -> None:
    """Opens ``data.eval_split`` when an evaluator reads it, so that a split the data source
    lacks is refused before training rather than at the final evaluation (``data.train_split``
    is checked by opening it in the same way). ``eval_source``: the run's
    :class:`~jaxgen.data.pipeline.LazySource` of that split, which keeps what it opened for
    the evaluators (None: one made here)."""
    split = lookup(config, "data.eval_split")
    readers = eval_split_readers(config)
    if split is MISSING or not readers:
        return
    from jaxgen.data.pipeline import LazySource

    try:
        (eval_source or LazySource(config.data, split)).open()
    except UserError as e:
        reader = readers[0] if "/" in readers[0] else f"evals.{readers[0]}"
        raise UserError(f"config key data.eval_split={split!r} (read by {reader}): {e}") from None
