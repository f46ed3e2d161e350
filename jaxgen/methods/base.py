"""The interface between a model family and the generic trainer.

A family subclasses :class:`Method`. Single-optimizer families implement
``init_params``, ``loss`` and ``sample``; the default :meth:`Method.train_step`
differentiates ``loss``, applies the optax update and the EMA. Families whose
step has another shape (the GAN's two players) override ``init_state`` and
``train_step`` but keep the same :class:`TrainState`, so checkpoints, resume,
sharding and logging stay in one place (``jaxgen/trainer.py``).

Conventions:
  * ``batch["image"]``: uint8 ``[B, H, W, C]``; ``batch["label"]``: int32 ``[B]``
    (``-1`` when unlabelled); with text conditioning ``batch["tokens"]``: int32
    ``[B, L]``.
  * ``sample`` returns float32 images in ``[0, 1]`` of shape ``[N, H, W, C]``.
  * ``likelihood`` returns per-example arrays, in nats and bits/dim.

Mixed precision (``config.precision = "bfloat16"``, :attr:`Method.compute_dtype`):
parameters, gradients, optimizer state and EMA stay float32. A family's networks compute
in the dtype of the parameters they are handed (:func:`floating_dtype`): the generic step
gives ``loss`` a bfloat16 copy (:func:`~jaxgen.methods.gradients.loss_and_grads`), ``sample``
casts the float32 sampling parameters to ``compute_dtype`` itself, and ``likelihood`` uses
them as they are (float32). Inputs are cast to that dtype on the way in; network outputs
are cast back to float32 before losses, log-likelihoods and sampler updates, so reductions,
log-softmaxes and a sampler's state stay float32. With ``precision = "float32"`` every cast
is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen.data.spec import DataSpec, select_image_and_label
from jaxgen.methods.description import FamilyDescription, describe_config
from jaxgen.methods.gradients import PRECISIONS, REMAT_POLICIES, loss_and_grads
from jaxgen.sampling import SampleOptions

PyTree = Any
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds besides the data-iterator state.

    Attributes:
      step: int32 scalar, number of updates applied.
      params: trainable parameters (for a GAN ``{"generator", "discriminator"}``).
      opt_state: optax state (a dict of states for several optimizers).
      ema_params: exponential moving average of ``params``, used for sampling.
      model_state: non-trainable collections (e.g. spectral-norm vectors).
      rng: base PRNG key; step ``s`` uses ``fold_in(rng, s)``.
      first_nonfinite_step: int32 scalar, first step whose loss was NaN/inf, or -1.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    model_state: PyTree
    rng: jax.Array
    first_nonfinite_step: jax.Array


def images_to_unit(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 [0, 255] -> [0, 1] in ``dtype``."""
    return (images.astype(jnp.float32) / 255.0).astype(dtype)


def images_to_symmetric(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 [0, 255] -> [-1, 1] in ``dtype``."""
    return (images.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def check_step_options(config: ml_collections.ConfigDict, supports_bfloat16: bool) -> None:
    """Validates ``precision``, ``model.remat`` and ``train.grad_accum_steps``."""
    from jaxgen.errors import UserError

    precision = config.get("precision", "float32")
    if precision not in PRECISIONS:
        raise UserError(f"config key precision={precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "bfloat16" and not supports_bfloat16:
        raise UserError(
            f"config key precision=bfloat16: family {config.family!r} computes in float32 only"
        )
    remat = config.model.get("remat", "none")
    if remat not in REMAT_POLICIES:
        raise UserError(f"config key model.remat={remat!r}: expected one of {list(REMAT_POLICIES)}")
    from jaxgen.validate import check_grad_accum

    check_grad_accum(config.train)


def ema_update(ema: PyTree, new: PyTree, decay: float) -> PyTree:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, new)


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """``min(decay, (1 + step) / (10 + step))``: the EMA warms up over the first steps.

    With a fixed decay ``d`` the initial (random) parameters keep weight ``d ** step``:
    13.5% after 2000 steps at 0.999, visible as noise in short runs' samples. The warm-up
    (as TensorFlow's ``ExponentialMovingAverage(num_updates=...)``) makes it negligible.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


class Method:
    """Base class of a model family; see the module docstring."""

    # True once the family's networks compute in ``compute_dtype`` (see the module docstring);
    # ``precision = "bfloat16"`` is a UserError for a family that leaves it False.
    supports_bfloat16 = False
    # False for a family that draws no images (a classifier, CLIP): tables list it apart.
    is_generator = True
    # True for a family whose sampler reads ``sample.guidance`` (classifier-free guidance with
    # the null label or text of ``model.cond_drop_prob``): jaxgen.validate checks it then.
    reads_guidance = False

    def __init__(self, config: ml_collections.ConfigDict, data: DataSpec):
        self.config = config
        self.data = data
        check_step_options(config, self.supports_bfloat16)
        self.compute_dtype = PRECISIONS[config.get("precision", "float32")]
        self.text = None
        if data.cond == "text":
            from jaxgen.text.conditioner import TextConditioner

            self.text = TextConditioner(config, config.data.name)

    def resolve_sample_options(self, options: SampleOptions | None = None) -> SampleOptions:
        """``options`` (None: the config's ``sample.*``) checked for this family, with the
        family's defaults filled in; compiles nothing.

        Raises a one-line UserError naming the ``sample.*`` key of the first bad value.
        Resolving resolved options returns them unchanged.
        """
        from jaxgen.validate import check_sample_ranges

        if options is None:
            options = SampleOptions.from_config(self.config.get("sample", {}))
        check_sample_ranges(options)
        return self._resolve_sample_options(options)

    def _resolve_sample_options(self, options: SampleOptions) -> SampleOptions:
        """The family's part of :meth:`resolve_sample_options`.

        Default: the family has one sampler and no guidance, so every option must stay unset.
        """
        from jaxgen.validate import check_sample_options_used

        check_sample_options_used(self.config.family, options, used=())
        return options

    # --- what a single-optimizer family implements -------------------------
    def init_params(self, rng: jax.Array, batch: dict[str, jax.Array]) -> PyTree:
        """Returns the trainable parameters for an example batch."""
        raise NotImplementedError

    def init_model_state(self, rng: jax.Array, batch: dict[str, jax.Array]) -> PyTree:
        """Non-trainable state (default: none)."""
        del rng, batch
        return {}

    def data_fit_count(self, available: int) -> int:
        """How many of the ``available`` training images :meth:`fit_to_data` is given before
        the first step of a fresh run (default 0: it is not called). Raises UserError when
        the training split cannot give what the config asks."""
        del available
        return 0

    def fit_to_data(self, model_state: PyTree, images: jax.Array, rng: jax.Array) -> PyTree:
        """The ``model_state`` of a fresh run fitted to ``images`` (uint8 ``[N, H, W, C]``,
        spread evenly over the training split); default: unchanged."""
        del images, rng
        return model_state

    def loss(
        self, params: PyTree, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """Scalar training loss and scalar metrics for one global batch."""
        raise NotImplementedError

    def sample(
        self,
        params: PyTree,
        rng: jax.Array,
        num: int,
        conditioning: dict[str, jax.Array] | None = None,
        options: SampleOptions | None = None,
    ) -> jax.Array:
        """float32 images in [0, 1], ``[num, H, W, C]``.

        ``conditioning`` holds ``label`` int32 ``[num]`` and/or ``tokens``. ``options``: the
        sampler options (None: the config's), a static argument under ``jax.jit``; pass them
        through :meth:`resolve_sample_options` first to have them checked before compiling.
        """
        raise NotImplementedError

    @property
    def has_likelihood(self) -> bool:
        """Whether :meth:`likelihood` gives values (checked before training starts)."""
        return False

    def likelihood(
        self, params: PyTree, batch: dict[str, jax.Array], rng: jax.Array
    ) -> dict[str, jax.Array] | None:
        """Per-example ``{"bits_per_dim": [B], ...}``, or None without a likelihood."""
        del params, batch, rng
        return None

    def eval_functions(self, params: PyTree) -> dict[str, Callable]:
        """Further functions of the model that evaluators may call, by name, bound to
        ``params`` (they reach them as ``EvalContext.functions``). Default: none.

        E.g. the ``clip_zero_shot`` evaluator reads ``encode_images`` (uint8 ``[N, H, W, C]``
        -> float32 unit vectors ``[N, D]``) and ``encode_texts`` (``N`` strings -> the same).
        """
        del params
        return {}

    def batch_transform(self):
        """Per-example function of the input pipeline: source item -> batched fields.

        With text conditioning the fields of :attr:`text` (a
        :class:`~jaxgen.text.conditioner.TextConditioner`) are added.
        """
        return self.text.example_transform() if self.text else select_image_and_label

    def text_conditioning(self, prompts: list[str]) -> dict[str, jax.Array]:
        """Conditioning arrays for one sample per prompt (the text fields, ``[N, ...]``)."""
        if self.text is None:
            from jaxgen.errors import UserError

            raise UserError(f"family {self.config.family!r} was not trained with cond=text")
        return {k: jnp.asarray(v) for k, v in self.text.text_fields(prompts).items()}

    # write_extras reads two test images (``real``); None is passed when False.
    extras_use_test_images = False

    def write_extras(self, params: PyTree, real: dict, rng: jax.Array, out_dir: str, step: int):
        """Family-specific outputs of ``--mode=sample`` (e.g. a VAE's interpolations).

        ``real``: two test images ``{"image": uint8 [2, H, W, C], "label": int32 [2]}`` when
        :attr:`extras_use_test_images`, else None."""
        del params, real, rng, out_dir, step

    def sampling_params(self, state: TrainState, options: SampleOptions | None = None) -> PyTree:
        """The parameters used for sampling and evaluation (EMA by default); ``options``
        (None: the config's) is the sampler they are for, should it read more of ``state``."""
        del options
        return state.ema_params

    def prepare_sampling(self, params: PyTree, options: SampleOptions, source) -> PyTree:
        """The ``params`` that :meth:`sample` with resolved ``options`` reads: ``params`` plus
        what the sampler derives from them and the training images ``source`` (indexable,
        items with ``"image"``) before it draws. Default: ``params`` unchanged.

        Called on the host, outside ``jax.jit``, once per parameters and options.
        """
        del options, source
        return params

    # --- the generic step; override for other step shapes ------------------
    def make_optimizer(self) -> optax.GradientTransformation:
        """The optimizer passed back to ``init_state`` and ``train_step``."""
        from jaxgen.optim import build_optimizer

        return build_optimizer(self.config.optimizer, self.config.train.num_steps)

    def init_state(
        self, rng: jax.Array, batch: dict[str, jax.Array], tx: optax.GradientTransformation
    ) -> TrainState:
        init_rng, state_rng, step_rng = jax.random.split(rng, 3)
        params = self.init_params(init_rng, batch)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=params,
            model_state=self.init_model_state(state_rng, batch),
            rng=step_rng,
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    def train_step(
        self,
        state: TrainState,
        batch: dict[str, jax.Array],
        tx: optax.GradientTransformation,
        ema_decay: float,
    ) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, metrics), grads = loss_and_grads(
            self.loss,
            state.params,
            batch,
            rng,
            compute_dtype=self.compute_dtype,
            remat=self.config.model.get("remat", "none"),
            accum_steps=self.config.train.get("grad_accum_steps", 1),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree_utils.tree_norm(grads))
        return (
            state.replace(
                step=state.step + 1,
                params=params,
                opt_state=opt_state,
                ema_params=ema_update(
                    state.ema_params, params, ema_decay_at(state.step, ema_decay)
                ),
                first_nonfinite_step=mark_nonfinite(state, loss),
            ),
            metrics,
        )

    # --- what the comparison tables print ----------------------------------
    @classmethod
    def describe(cls, config) -> FamilyDescription:
        """The table cells of a run of this family, from its saved config alone (a plain dict
        as in ``config.json``, or a ConfigDict); no model is built. Default: the generic
        description (:func:`~jaxgen.methods.description.describe_config`); a family replaces
        the fields it knows better: ``super().describe(config).replace(architecture=...)``.
        """
        return describe_config(config, is_generator=cls.is_generator)


def mark_nonfinite(state: TrainState, loss: jax.Array) -> jax.Array:
    """Records the first step whose loss is not finite (checked on the host later)."""
    already = state.first_nonfinite_step >= 0
    return jnp.where(already | jnp.isfinite(loss), state.first_nonfinite_step, state.step).astype(
        jnp.int32
    )
