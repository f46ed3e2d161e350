"""Asynchronous checkpoints: a save returns before its files are written, the arrays it
captured are the ones at its step, and waiting makes the step complete on disk."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.checkpoints import Checkpoints, list_steps


def _state(value: float):
    return {"w": jnp.full((4096, 1024), value, jnp.float32), "step": jnp.asarray(int(value))}


def test_async_save_returns_early_and_keeps_the_values_of_its_step(tmp_path):
    workdir = str(tmp_path)
    checkpoints = Checkpoints(workdir, keep=3, async_save=True)
    state = _state(1.0)
    assert checkpoints.save(1, state, {"epoch": 0})
    in_flight = checkpoints._manager.is_saving_in_progress()
    # The caller goes on at once: the next step donates and overwrites the buffers.
    state = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(state)
    assert checkpoints.save(2, state, {"epoch": 0})  # waits for step 1 first
    checkpoints.wait()
    assert not checkpoints._manager.is_saving_in_progress()
    assert list_steps(workdir) == [1, 2]
    abstract = jax.eval_shape(lambda: _state(0.0))
    for step, expected in ((1, 1.0), (2, 2.0)):
        restored, data = checkpoints.restore(step, abstract)
        np.testing.assert_array_equal(restored["w"], np.full((4096, 1024), expected, np.float32))
        assert data == {"epoch": 0}
    assert not checkpoints.save(2, state, {"epoch": 0})  # a step is saved at most once
    checkpoints.close()
    assert in_flight, "the first save had finished before returning: not asynchronous"
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]


def test_sync_save_is_complete_when_it_returns(tmp_path):
    checkpoints = Checkpoints(str(tmp_path), keep=3, async_save=False)
    checkpoints.save(5, _state(5.0), {})
    assert not checkpoints._manager.is_saving_in_progress()
    assert list_steps(str(tmp_path)) == [5]
    checkpoints.close()
