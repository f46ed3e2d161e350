"""The one training loop shared by every family.

Per step: the next global batch (sharded over the ``data`` mesh axis), the
family's jitted ``train_step`` with the state donated. Around it: progress
lines and ``metrics.jsonl``/TensorBoard every ``log_every`` steps, sample grids
every ``sample_every``, checkpoints every ``checkpoint_every`` and at the end,
evaluators when due, automatic resume, and on SIGTERM/SIGINT a checkpoint of
the current step followed by a clean exit.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import jax
import numpy as np

from jaxgen import parallel, paths
from jaxgen.checkpoints import (
    JSON_ITEM_FILE,
    Checkpoints,
    CorruptCheckpointError,
    list_steps,
    load_params_from,
)
from jaxgen.data.pipeline import check_iterator_state
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.images import make_grid, save_png
from jaxgen.methods.base import TrainState
from jaxgen.metric_writer import MetricWriter
from jaxgen.preemption import Preempted, StopRequest
from jaxgen.progress import format_eta
from jaxgen.workdir import config_dict

log = logging.getLogger("jaxgen")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; training stopped before saving the bad state."""


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` to ``path`` (a local path or URL) whole or not at all."""
    paths.write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def write_sample_grid(exp: Experiment, state: TrainState, step: int, writer: MetricWriter):
    log.info("sample grid at step %d: %d images", step, exp.config.sample.num)
    samples = exp.generate(state, exp.config.sample.num, exp.sample_rng(), "sample grid")
    if parallel.is_main_process():
        grid = make_grid(samples["images"])
        save_png(paths.join(exp.workdir, "samples", f"step_{step}.png"), grid)
        writer.write_image(step, "samples", grid)


def run_evals(exp: Experiment, state: TrainState, step: int, final: bool, writer: MetricWriter):
    log.info("%s evaluation at step %d", "final" if final else "periodic", step)
    results = exp.evaluate(state, step, final)
    if results and parallel.is_main_process():
        write_json(paths.join(exp.workdir, "eval", f"step_{step}.json"), results)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()}, jsonl=False)
        log.info("eval at step %d: %s", step, json.dumps(results, sort_keys=True))
    return results


class Trainer:
    """Runs ``exp`` from its latest checkpoint (or from scratch) to ``train.num_steps``.

    :meth:`prepare` restores or initialises the state and writes nothing, so that a
    checkpoint that does not restore stops the launch before its first write; :meth:`run`
    trains. Sample grids and evaluations of a step run after that step's checkpoint.
    """

    def __init__(self, exp: Experiment, stop: StopRequest | None = None):
        self.exp = exp
        self.cfg = exp.config.train
        self.stop = stop or StopRequest()  # one not entered never asks to stop
        self.run_items = {"config": config_dict(exp.config)}  # saved with every checkpoint
        tokenizer = exp.method.text.saved_tokenizer_json() if exp.method.text else None
        if tokenizer is not None:
            self.run_items["tokenizer"] = json.loads(tokenizer)
        repl = parallel.replicated(exp.mesh)
        step_fn = functools.partial(exp.method.train_step, tx=exp.tx, ema_decay=self.cfg.ema_decay)
        self.step_fn = jax.jit(
            step_fn,
            in_shardings=(exp.state_shardings, parallel.batch_sharded(exp.mesh)),
            out_shardings=(exp.state_shardings, repl),
            donate_argnums=0,
        )

    def prepare(self) -> tuple[TrainState, dict | None]:
        """The state to start from and the data-iterator state (None for a fresh run)."""
        exp = self.exp
        if list_steps(exp.workdir):
            checkpoints = exp.checkpoints(read_only=True)
            try:
                step, state, data_state = checkpoints.restore_latest(
                    exp.abstract_sharded_state(), fall_back=False
                )
            finally:
                checkpoints.close()
            folder = paths.join(checkpoints.directory, str(step))
            held = int(jax.device_get(state.step))
            if held != step:  # a folder copied or renamed by hand
                raise CorruptCheckpointError(
                    f"checkpoint {folder} holds the state of step {held}, not {step}; move it "
                    "away to resume from the previous one"
                )
            if data_state is not None:  # refused here, before this launch writes anything
                check_iterator_state(data_state, paths.join(folder, "data", JSON_ITEM_FILE))
            log.info("resumed from checkpoint at step %d", step)
            return state, data_state
        state = exp.fit_to_data(exp.init_state())
        if exp.config.init_from:
            loaded = load_params_from(exp.config.init_from, state.params)
            # Two device copies: the step donates params and EMA, which must not share buffers.
            params = jax.device_put(loaded, exp.state_shardings.params)
            ema_params = jax.device_put(loaded, exp.state_shardings.ema_params)
            opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(params)
            state = state.replace(params=params, ema_params=ema_params, opt_state=opt_state)
            log.info("initialised parameters from %s", exp.config.init_from)
        return state, None

    def _check_finite(self, state: TrainState, checkpoints: Checkpoints) -> None:
        bad = int(jax.device_get(state.first_nonfinite_step))
        if bad < 0:
            return
        steps = checkpoints.all_steps()
        kept = (
            f"the last good checkpoint, step {steps[-1]}, is kept in {checkpoints.directory}"
            if steps
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(f"loss became non-finite at step {bad + 1}; stopped, {kept}")

    def _save(self, checkpoints: Checkpoints, state: TrainState, pipeline) -> None:
        self._check_finite(state, checkpoints)
        step = int(jax.device_get(state.step))
        checkpoints.save(step, state, pipeline.get_state(), self.run_items)

    def _finished(self, step: int) -> bool:
        """Whether a relaunch finds nothing left to do (final checkpoint and evaluation)."""
        if step < self.cfg.num_steps:
            return False
        evals_done = not self.exp.config.evals or paths.exists(
            paths.join(self.exp.workdir, "eval", f"step_{step}.json")
        )
        return evals_done

    def run(self, state: TrainState, data_state: dict | None) -> TrainState:
        """Trains from ``state`` to ``train.num_steps``; raises Preempted after saving when a
        stop is requested."""
        exp, cfg = self.exp, self.cfg
        step = int(jax.device_get(state.step))
        if self._finished(step):
            log.info("already trained to step %d and evaluated; nothing to do", step)
            return state
        pipeline = exp.pipeline()
        if data_state is not None:
            pipeline.set_state(data_state)
        writer = MetricWriter(exp.workdir, parallel.is_main_process(), resume_step=step)
        checkpoints = exp.checkpoints()
        try:
            if self.stop.should_stop(step):
                raise Preempted(f"stopped before step {step + 1}")
            window_start, window_steps, window_metrics = time.time(), 0, []
            run_start, run_start_step = time.time(), step
            while step < cfg.num_steps:
                batch = parallel.global_batch(next(pipeline), exp.mesh)
                state, metrics = self.step_fn(state, batch)
                step += 1
                window_steps += 1
                window_metrics.append(metrics)
                if step % cfg.log_every == 0 or step == cfg.num_steps:
                    self._check_finite(state, checkpoints)
                    elapsed = time.time() - window_start
                    self._log(
                        writer,
                        step,
                        window_metrics,
                        window_steps / max(elapsed, 1e-9),
                        (step - run_start_step) / max(time.time() - run_start, 1e-9),
                    )
                    window_start, window_steps, window_metrics = time.time(), 0, []
                sample_due = bool(cfg.sample_every) and step % cfg.sample_every == 0
                eval_due = (
                    bool(cfg.eval_every) and step % cfg.eval_every == 0 and step < cfg.num_steps
                )
                stopping = self.stop.should_stop(step)
                if stopping or sample_due or eval_due or _due(step, cfg.checkpoint_every):
                    self._save(checkpoints, state, pipeline)
                if stopping:
                    checkpoints.wait()  # on disk before the process exits
                    raise Preempted(f"checkpoint of step {step} saved")
                if sample_due:
                    write_sample_grid(exp, state, step, writer)
                if eval_due:
                    run_evals(exp, state, step, final=False, writer=writer)
            self._save(checkpoints, state, pipeline)
            if cfg.sample_every and step % cfg.sample_every:
                write_sample_grid(exp, state, step, writer)
            if exp.config.evals:
                run_evals(exp, state, step, final=True, writer=writer)
            checkpoints.wait()
            return state
        finally:
            writer.close()
            _close_quietly(checkpoints)

    def _log(
        self, writer: MetricWriter, step: int, window: list, steps_per_sec: float, run_rate: float
    ) -> None:
        means = {
            k: float(np.mean([float(m[k]) for m in jax.device_get(window)])) for k in window[-1]
        }
        means["steps_per_sec"] = steps_per_sec
        writer.write_scalars(step, means)
        if parallel.is_main_process():
            eta = (self.cfg.num_steps - step) / max(run_rate, 1e-9)
            log.info(
                "step %d/%d  loss %.5g  %.2f steps/s  ETA %s",
                step, self.cfg.num_steps, means["loss"], steps_per_sec, format_eta(eta),
            )  # fmt: skip


def _close_quietly(checkpoints: Checkpoints) -> None:
    """Closes ``checkpoints`` while another exception may be propagating: a failed
    background write is logged rather than raised over it (a normal exit has waited)."""
    try:
        checkpoints.close()
    except UserError as e:
        log.error("%s", e)


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0
