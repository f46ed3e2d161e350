"""An experiment: config, data, model family, mesh and the jitted functions over them.

Train, sample and eval modes all build one :class:`Experiment`, so they share
the same state layout, the same sampling function and the same evaluators.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import parallel, preemption, runtime, validate
from jaxgen.checkpoints import Checkpoints
from jaxgen.data.description import DataDescription, read_description
from jaxgen.data.pipeline import LazySource, Pipeline, data_spec
from jaxgen.data.spec import DataSpec
from jaxgen.evaluate import EvalContext, check_evaluators, run_evaluators
from jaxgen.images import to_uint8
from jaxgen.methods import get_method_class
from jaxgen.methods.base import TrainState
from jaxgen.progress import Progress
from jaxgen.sampling import SampleOptions
from jaxgen.text.conditioner import sync_tokenizer
from jaxgen.text.conditioning import read_prompts

SAMPLE_STREAM = 1  # fold_in tags that separate the RNG streams of one seed
EVAL_STREAM = 2
FIT_STREAM = 3
DEFAULT_SAMPLE_BATCH = 256  # sample.batch_size of configs written before it existed

log = logging.getLogger("jaxgen")


class Experiment:
    """Everything derived from a config, built once per process."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, training: bool = True):
        """Validates the config, data and sampling inputs (UserError), then builds; writes
        nothing (a text model's saved ``tokenizer.json`` is read back if the workdir has one;
        ``jaxgen.run`` writes it once the workdir is locked).

        The data are opened when first used: in training at once (their errors come before
        anything is written); otherwise the workdir's ``data.json`` describes them, and
        they are opened only by what reads images (an evaluator, a VAE's interpolation).
        """
        self.config = config
        self.workdir = workdir
        validate.check_config_values(config)
        self.train_source = LazySource(config.data, config.data.train_split)
        self.eval_source = LazySource(config.data, config.data.eval_split)
        described = None if training else read_description(workdir, config.data)
        if described is None:
            self.spec = data_spec(self.train_source, config.data.cond)
        else:
            num_classes = len(described.class_names)
            self.spec = DataSpec(described.image_shape, num_classes, config.data.cond)
        self.method = get_method_class(config.family)(config, self.spec)
        if described is None:
            item = self.method.batch_transform()(self.train_source[0])
            described = DataDescription.of(
                self.spec.image_shape, self.train_source.class_names, item
            )
        self.data_description = described
        # The config's sampler options, checked and with the family's defaults filled in.
        self.sample_options = validate.check_sampling_inputs(config, self.method, self.spec)
        self.mesh = parallel.make_mesh()
        if training:
            validate.check_batch_size(
                config, self.mesh.size, jax.process_count(), len(self.train_source)
            )
            validate.check_eval_split(config, self.eval_source)  # else found after the last step
            self.method.data_fit_count(len(self.train_source))  # its UserError, before writing
        self.tx = self.method.make_optimizer()
        check_evaluators(
            config.evals,
            family=config.family,
            data_name=config.data.name,
            has_likelihood=self.method.has_likelihood,
            cond=self.spec.cond,
            image_shape=self.spec.image_shape,
        )
        if self.method.text is not None:
            sync_tokenizer(self.method.text, workdir, write=False)
        self.rng = jax.random.PRNGKey(config.seed)
        # Rows of every sampler call are split over the mesh's data axis: each device
        # computes its share, the partitioner follows the output sharding back to the noise.
        self._prepared = None  # (parameters, options, Method.prepare_sampling of them)
        self._sample_fn = jax.jit(
            self.method.sample,
            static_argnums=(2,),
            static_argnames=("options",),
            out_shardings=parallel.batch_sharded(self.mesh),
        )

    # --- data -----------------------------------------------------------
    def pipeline(self) -> Pipeline:
        return Pipeline(
            self.train_source.open(),
            self.config.train.batch_size,
            seed=self.config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            prefetch=self.config.data.prefetch,
            transform=self.method.batch_transform(),
        )

    def example_batch(self) -> dict[str, np.ndarray]:
        """A global-batch-shaped example (zeros) for shape inference."""
        return self.data_description.example_batch(self.config.train.batch_size)

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
        init = jax.jit(
            self._init_state_fn,
            out_shardings=self.state_shardings,
            compiler_options=runtime.RUN_ONCE_COMPILER_OPTIONS,
        )
        return init(self.rng, self.example_batch())

    def fit_to_data(self, state: TrainState) -> TrainState:
        """A fresh ``state`` whose ``model_state`` the family has fitted to training images
        spread evenly over the split (:meth:`Method.fit_to_data`; unchanged when the family
        asks for none). Every process reads the same images and the fit runs on the mesh, so
        all of them hold the same state."""
        count = self.method.data_fit_count(len(self.train_source))
        if not count:
            return state
        start = time.perf_counter()
        # Rows split evenly over the devices (a few images twice where the split is short).
        count = parallel.round_up(count, self.mesh.size)
        indices = np.linspace(0, len(self.train_source) - 1, count).round().astype(np.int64)
        images = np.stack([self.train_source[int(i)]["image"] for i in indices])
        fit = jax.jit(
            self.method.fit_to_data,
            out_shardings=self.state_shardings.model_state,
            compiler_options=runtime.RUN_ONCE_COMPILER_OPTIONS,
        )
        rng = jax.random.fold_in(self.rng, FIT_STREAM)
        model_state = fit(state.model_state, parallel.shard_rows(images, self.mesh), rng)
        jax.block_until_ready(model_state)
        log.info(
            "fitted the model state to %d training images in %.1f s",
            count, time.perf_counter() - start,
        )  # fmt: skip
        return state.replace(model_state=model_state)

    def abstract_sharded_state(self) -> TrainState:
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.abstract_state,
            self.state_shardings,
        )

    def checkpoints(self, read_only: bool = False) -> Checkpoints:
        return Checkpoints(
            self.workdir,
            self.config.train.keep_checkpoints,
            read_only=read_only,
            async_save=bool(self.config.train.get("async_checkpointing", False)),
        )

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

    def generate(
        self, state: TrainState, num: int, rng: jax.Array, what: str = "sampling"
    ) -> dict[str, np.ndarray]:
        """``num`` samples as uint8 ``[num, H, W, C]`` (+ ``labels`` or ``prompts``), in chunks
        split over the devices (:meth:`sample_images`); ``what`` names them in progress lines."""
        conditioning = self.conditioning(num)
        prompts = None if conditioning is None else conditioning.pop("prompts", None)
        labels = None if conditioning is None else conditioning.pop("prompt_labels", None)
        result = {"images": self.sample_images(state, num, rng, conditioning, what)}
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
        return self.sample_images(state, len(prompts), rng, conditioning, "sampling prompts")

    @property
    def sample_batch_size(self) -> int:
        """Images per sampler call (``sample.batch_size``), over all devices together."""
        return int(self.config.sample.get("batch_size", DEFAULT_SAMPLE_BATCH))

    def sample_images(
        self,
        state: TrainState,
        num: int,
        rng: jax.Array,
        conditioning=None,
        what="sampling",
        options: SampleOptions | None = None,
    ) -> np.ndarray:
        """``num`` uint8 samples ``[num, H, W, C]`` of the sampling parameters, drawn with
        ``options`` (resolved :class:`~jaxgen.sampling.SampleOptions`; None: the config's,
        :attr:`sample_options`); each distinct value compiles once.

        Drawn in calls of ``sample.batch_size`` images; call ``i`` uses the key
        ``fold_in(rng, i * sample.batch_size)`` and is padded to a multiple of the device
        count, its rows split over every device of every process. JAX's random numbers do not
        depend on how an array is split, and padding appends rows, so the samples of a seed
        are the same on 1 or 64 devices (up to floating-point differences of the kernels).
        Logs progress lines (``what``: count, images/s, ETA) and stops at a stop request.
        """
        options = self.sample_options if options is None else options
        params = self._prepared_params(self.method.sampling_params(state, options), options)
        chunk = self.sample_batch_size
        devices = self.mesh.size
        progress = None
        images = []
        for start in range(0, num, chunk):
            preemption.check_active()
            count = min(chunk, num - start)
            rows = parallel.round_up(count, devices)
            chunk_cond = None
            if conditioning is not None:
                host = jax.tree.map(
                    lambda x, s=start, c=count: np.asarray(x)[s : s + c], conditioning
                )
                chunk_cond = parallel.shard_rows(host, self.mesh, rows)
            key = jax.random.fold_in(rng, start)
            out = self._sample_fn(params, key, rows, chunk_cond, options=options)
            if progress is None:  # the split as the result array has it
                each = out.sharding.shard_shape(out.shape)[0]
                split = f"{len(out.sharding.device_set)} devices ({each} rows each)"
                progress = Progress(f"{what} on {split}", num)
            images.append(to_uint8(parallel.gather_rows(out)[:count]))
            progress.update(start + count)
        return np.concatenate(images)

    def _prepared_params(self, params, options: SampleOptions):
        """``Method.prepare_sampling`` of ``params`` with ``options``, computed once while the
        same parameters object is sampled with the same options (the cache holds it)."""
        cached = self._prepared
        if cached is not None and cached[0] is params and cached[1] == options:
            return cached[2]
        prepared = self.method.prepare_sampling(params, options, self.train_source)
        self._prepared = (params, options, prepared)
        return prepared

    def sample_rng(self) -> jax.Array:
        return jax.random.fold_in(self.rng, SAMPLE_STREAM)

    # --- evaluation -----------------------------------------------------
    def evaluate(self, state: TrainState, step: int, final: bool) -> dict[str, float]:
        params = self.method.sampling_params(state, self.sample_options)
        ctx = EvalContext(
            config=self.config,
            params=params,
            model_state=state.model_state,
            spec=self.spec,
            train_source=self.train_source,
            eval_source=self.eval_source,
            rng=jax.random.fold_in(jax.random.fold_in(self.rng, EVAL_STREAM), step),
            workdir=self.workdir,
            generate_fn=lambda num, rng: self.generate(state, num, rng, "sampling for evaluation"),
            prompts_fn=lambda prompts, rng: self.generate_for_prompts(state, prompts, rng),
            likelihood_fn=self.method.likelihood if self.method.has_likelihood else None,
            batch_transform=self.method.batch_transform(),
            functions=self.method.eval_functions(params),
        )
        return run_evaluators(ctx, self.config.evals, step, final)
