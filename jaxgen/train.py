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
import os
import signal
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxgen import parallel
from jaxgen.checkpoints import load_params_from
from jaxgen.errors import UserError
from jaxgen.experiment import Experiment
from jaxgen.images import make_grid, save_png
from jaxgen.methods.base import TrainState
from jaxgen.metric_writer import MetricWriter

log = logging.getLogger("jaxgen")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _StopRequest:
    """Set by SIGTERM/SIGINT; the loop saves and exits at the next step boundary."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        self.signal = signum

    def requested(self, at_sync_point: bool) -> bool:
        """Whether to stop now. With several processes all must agree, so they
        compare their flags only at sync points (every ``log_every`` steps)."""
        flag = self.signal is not None
        if jax.process_count() == 1:
            return flag
        if not at_sync_point:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_sample_grid(exp: Experiment, state: TrainState, step: int, writer: MetricWriter):
    samples = exp.generate(state, exp.config.sample.num, exp.sample_rng())
    if parallel.is_main_process():
        grid = make_grid(samples["images"])
        save_png(os.path.join(exp.workdir, "samples", f"step_{step}.png"), grid)
        writer.write_image(step, "samples", grid)


def run_evals(exp: Experiment, state: TrainState, step: int, final: bool, writer: MetricWriter):
    results = exp.evaluate(state, step, final)
    if results and parallel.is_main_process():
        write_json(os.path.join(exp.workdir, "eval", f"step_{step}.json"), results)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()}, jsonl=False)
        log.info("eval at step %d: %s", step, json.dumps(results, sort_keys=True))
    return results


class Trainer:
    """Runs ``exp`` from its latest checkpoint (or from scratch) to ``train.num_steps``."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.cfg = exp.config.train
        repl = parallel.replicated(exp.mesh)
        step_fn = functools.partial(exp.method.train_step, tx=exp.tx, ema_decay=self.cfg.ema_decay)
        self.step_fn = jax.jit(
            step_fn,
            in_shardings=(exp.state_shardings, parallel.batch_sharded(exp.mesh)),
            out_shardings=(exp.state_shardings, repl),
            donate_argnums=0,
        )
        self.writer = MetricWriter(exp.workdir, parallel.is_main_process())

    def _initial_state(self, checkpoints, pipeline) -> TrainState:
        exp = self.exp
        if checkpoints.all_steps():
            step, state, data_state = checkpoints.restore_latest(
                exp.abstract_sharded_state(), fall_back=False
            )
            pipeline.set_state(data_state)
            log.info("resumed from checkpoint at step %d", step)
            return state
        state = exp.init_state()
        if exp.config.init_from:
            loaded = load_params_from(exp.config.init_from, state.params)
            # Two device copies: the step donates params and EMA, which must not share buffers.
            params = jax.device_put(loaded, exp.state_shardings.params)
            ema_params = jax.device_put(loaded, exp.state_shardings.ema_params)
            opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(params)
            state = state.replace(params=params, ema_params=ema_params, opt_state=opt_state)
            log.info("initialised parameters from %s", exp.config.init_from)
        return state

    def _check_finite(self, state: TrainState) -> None:
        bad = int(jax.device_get(state.first_nonfinite_step))
        if bad >= 0:
            raise NonFiniteLossError(
                f"loss became non-finite at step {bad + 1}; stopped, the last good "
                f"checkpoint is kept in {os.path.join(self.exp.workdir, 'checkpoints')}"
            )

    def _save(self, checkpoints, state, pipeline) -> None:
        self._check_finite(state)
        step = int(jax.device_get(state.step))
        checkpoints.save(step, state, pipeline.get_state())

    def run(self) -> TrainState:
        exp, cfg = self.exp, self.cfg
        checkpoints = exp.checkpoints()
        pipeline = exp.pipeline()
        state = self._initial_state(checkpoints, pipeline)
        step = int(jax.device_get(state.step))
        stop = _StopRequest()
        stop.install()
        try:
            window_start, window_steps, window_metrics = time.time(), 0, []
            run_start, run_start_step = time.time(), step
            while step < cfg.num_steps:
                batch = parallel.global_batch(next(pipeline), exp.mesh)
                state, metrics = self.step_fn(state, batch)
                step += 1
                window_steps += 1
                window_metrics.append(metrics)
                if step % cfg.log_every == 0 or step == cfg.num_steps:
                    self._check_finite(state)
                    elapsed = time.time() - window_start
                    self._log(
                        step,
                        window_metrics,
                        window_steps / max(elapsed, 1e-9),
                        (step - run_start_step) / max(time.time() - run_start, 1e-9),
                    )
                    window_start, window_steps, window_metrics = time.time(), 0, []
                if cfg.sample_every and step % cfg.sample_every == 0:
                    write_sample_grid(exp, state, step, self.writer)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self._save(checkpoints, state, pipeline)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.num_steps:
                    run_evals(exp, state, step, final=False, writer=self.writer)
                if stop.requested(at_sync_point=step % cfg.log_every == 0):
                    self._save(checkpoints, state, pipeline)
                    log.info("stopped by signal %s at step %d; checkpoint saved", stop.signal, step)
                    self.writer.close()
                    checkpoints.close()
                    sys.exit(0)
            if step not in checkpoints.all_steps():
                self._save(checkpoints, state, pipeline)
            if cfg.sample_every and step % cfg.sample_every:
                write_sample_grid(exp, state, step, self.writer)
            if exp.config.evals:
                run_evals(exp, state, step, final=True, writer=self.writer)
            return state
        finally:
            stop.uninstall()
            self.writer.close()
            checkpoints.close()

    def _log(self, step: int, window: list, steps_per_sec: float, run_rate: float) -> None:
        means = {
            k: float(np.mean([float(m[k]) for m in jax.device_get(window)])) for k in window[-1]
        }
        means["steps_per_sec"] = steps_per_sec
        self.writer.write_scalars(step, means)
        if parallel.is_main_process():
            eta = (self.cfg.num_steps - step) / max(run_rate, 1e-9)
            log.info(
                "step %d/%d  loss %.5g  %.2f steps/s  ETA %s",
                step, self.cfg.num_steps, means["loss"], steps_per_sec, _format_eta(eta),
            )  # fmt: skip
