"""An experiment: config, data, model family, mesh and the jitted functions over them.

Train, sample and eval modes all build one :class:`Experiment`, so they share
the same state layout, the same sampling function and the same evaluators.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import parallel, preemption, validate
from jaxgen.checkpoints import Checkpoints
from jaxgen.data.pipeline import Pipeline, data_spec, load_source
from jaxgen.evaluate import EvalContext, check_evaluators, run_evaluators
from jaxgen.images import to_uint8
from jaxgen.methods import get_method_class
from jaxgen.methods.base import TrainState
from jaxgen.text.conditioner import sync_tokenizer
from jaxgen.text.conditioning import read_prompts

SAMPLE_STREAM = 1  # fold_in tags that separate the RNG streams of one seed
EVAL_STREAM = 2
SAMPLE_CHUNK = 256


class Experiment:
    """Everything derived from a config, built once per process."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        """Validates the config, data and sampling inputs (UserError), then builds; writes
        nothing (a text model's saved ``tokenizer.json`` is read back if the workdir has one;
        ``jaxgen.run`` writes it once the workdir is locked)."""
        self.config = config
        self.workdir = workdir
        validate.check_config_values(config)
        self.train_source = load_source(config.data, config.data.train_split)
        self.eval_source = load_source(config.data, config.data.eval_split)
        self.spec = data_spec(self.train_source, config.data.cond)
        self.method = get_method_class(config.family)(config, self.spec)
        validate.check_sampling_inputs(config, self.method, self.spec)
        self.mesh = parallel.make_mesh()
        validate.check_batch_size(
            config, self.mesh.size, jax.process_count(), len(self.train_source)
        )
        self.tx = self.method.make_optimizer()
        check_evaluators(config.evals, self.method)
        if self.method.text is not None:
            sync_tokenizer(self.method.text, workdir, write=False)
        self.rng = jax.random.PRNGKey(config.seed)
        self._sample_fn = jax.jit(self.method.sample, static_argnums=(2,))

    # --- data -----------------------------------------------------------
    def pipeline(self) -> Pipeline:
        return Pipeline(
            self.train_source,
            self.config.train.batch_size,
            seed=self.config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            prefetch=self.config.data.prefetch,
            transform=self.method.batch_transform(),
        )

    def example_batch(self) -> dict[str, np.ndarray]:
        """A global-batch-shaped example (zeros) for shape inference."""
        item = self.method.batch_transform()(self.train_source[0])
        n = self.config.train.batch_size
        return {k: np.zeros((n, *np.shape(v)), np.asarray(v).dtype) for k, v in item.items()}

    # --- state ----------------------------------------------------------
    @functools.cached_property
    def abstract_state(self) -> TrainState:
        return jax.eval_shape(self._init_state_fn, self.rng, self.example_batch())

    def _init_state_fn(self, rng, batch):
        return self.method.init_state(rng, batch, self.tx)

    @functools.cached_property
    def state_shardings(self) -> TrainState:
        """Per-leaf shardings of the state (``train.param_sharding``)."""
        return parallel.state_shardings(
            self.abstract_state, self.mesh, self.config.train.get("param_sharding", "replicated")
        )

    def init_state(self) -> TrainState:
        init = jax.jit(self._init_state_fn, out_shardings=self.state_shardings)
        return init(self.rng, self.example_batch())

    def abstract_sharded_state(self) -> TrainState:
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.abstract_state,
            self.state_shardings,
        )

    def checkpoints(self, read_only: bool = False) -> Checkpoints:
        return Checkpoints(self.workdir, self.config.train.keep_checkpoints, read_only=read_only)

    # --- sampling -------------------------------------------------------
    def conditioning(self, num: int) -> dict[str, jax.Array] | None:
        """Conditioning of ``num`` samples: labels (``sample.label`` or the classes in turn) or
        the text fields of ``sample.prompt`` / ``sample.prompts_file`` (plus ``prompts``)."""
        if self.spec.cond == "class":
            label = self.config.sample.label  # in range: checked on construction
            labels = np.full(num, label) if label >= 0 else np.arange(num) % self.spec.num_classes
            return {"label": jnp.asarray(labels, jnp.int32)}
        if self.spec.cond == "text":
            prompts, labels = read_prompts(self.config.sample, num, self.config.data.name)
            cond = dict(self.method.text_conditioning(prompts), prompts=np.asarray(prompts))
            if labels is not None:
                cond["prompt_labels"] = labels
            return cond
        return None

    def generate(self, state: TrainState, num: int, rng: jax.Array) -> dict[str, np.ndarray]:
        """``num`` samples as uint8 ``[num, H, W, C]`` (+ ``labels`` or ``prompts``), in chunks."""
        conditioning = self.conditioning(num)
        prompts = None if conditioning is None else conditioning.pop("prompts", None)
        labels = None if conditioning is None else conditioning.pop("prompt_labels", None)
        result = {"images": self.sample_images(state, num, rng, conditioning)}
        if prompts is not None:
            result["prompts"] = prompts
            if labels is not None:  # default prompts: the class each one names
                result["labels"] = labels
        elif conditioning is not None:
            result["labels"] = np.asarray(conditioning["label"])
        return result

    def generate_for_prompts(self, state: TrainState, prompts: list[str], rng: jax.Array):
        """One uint8 ``[H, W, C]`` sample per prompt, ``[len(prompts), H, W, C]``."""
        conditioning = self.method.text_conditioning(list(prompts))
        return self.sample_images(state, len(prompts), rng, conditioning)

    def sample_images(self, state: TrainState, num: int, rng: jax.Array, conditioning=None):
        """``num`` uint8 samples ``[num, H, W, C]`` of the sampling parameters, in chunks."""
        params = self.method.sampling_params(state)
        images = []
        for start in range(0, num, SAMPLE_CHUNK):
            preemption.check_active()
            count = min(SAMPLE_CHUNK, num - start)
            chunk_cond = (
                None
                if conditioning is None
                else jax.tree.map(lambda x, s=start, c=count: x[s : s + c], conditioning)
            )
            out = self._sample_fn(params, jax.random.fold_in(rng, start), count, chunk_cond)
            images.append(to_uint8(jax.device_get(out)))
        return np.concatenate(images)

    def sample_rng(self) -> jax.Array:
        return jax.random.fold_in(self.rng, SAMPLE_STREAM)

    # --- evaluation -----------------------------------------------------
    def evaluate(self, state: TrainState, step: int, final: bool) -> dict[str, float]:
        ctx = EvalContext(
            config=self.config,
            method=self.method,
            params=self.method.sampling_params(state),
            model_state=state.model_state,
            spec=self.spec,
            train_source=self.train_source,
            eval_source=self.eval_source,
            rng=jax.random.fold_in(jax.random.fold_in(self.rng, EVAL_STREAM), step),
            workdir=self.workdir,
            generate_fn=lambda num, rng: self.generate(state, num, rng),
            prompts_fn=lambda prompts, rng: self.generate_for_prompts(state, prompts, rng),
        )
        return run_evaluators(ctx, self.config.evals, step, final)
