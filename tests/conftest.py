"""Shared fixtures: smoke configs, launcher subprocesses, a persistent compilation cache."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.setdefault(
    "JAXGEN_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "xla")
)
# The suite's models are tiny: XLA's optimisation passes cost more compile time than they
# save in run time (the cold-cache suite takes 30% less time). Semantics are unchanged;
# launches from the tests inherit it. Benchmarks and the dry runs compile fully optimised.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# With those passes off, XLA:CPU's older loop emitters compile the suite's steps in a third
# less time than its fusion emitters (measured on the smoke presets' training steps).
# Constant folding is off too: on a loaded CPU XLA's alarm about a slow fold printed 16 lines
# into the stderr of a launch whose one-line error a fault test checks. Each process runs its
# kernels on one thread: the xdist workers already fill the cores, and Eigen's pool threads
# spin while they wait (the DDPM smoke tests took 8% less CPU time, idle machine).
TEST_XLA_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false --xla_disable_hlo_passes=constant_folding "
    "--xla_cpu_multi_thread_eigen=false"
)
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# The files that take longest, run first: with `pytest -n auto --dist=loadfile` each worker
# takes whole files in collection order, and a long file left for last keeps one worker busy
# while the others are idle.
LONG_FILES = (
    "test_faults.py", "test_api.py", "test_diffusion.py", "test_pixelcnn_text.py",
    "test_pixelcnn.py", "test_style_transfer.py", "test_bf16.py", "test_gan_text.py",
    "test_diffusion_text.py", "test_parallel.py", "test_ar_sampling.py", "test_vae_text.py",
)  # fmt: skip
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def xla_flags_with_devices(count: int) -> str:
    """``XLA_FLAGS`` for a child process that sees ``count`` simulated CPU devices."""
    return f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={count}"


def load_config(spec: str):
    """``configs/<family>.py:args`` -> ConfigDict, as the launcher builds it."""
    from jaxgen.cli import load_config_file

    path, _, arg = spec.partition(":")
    return load_config_file(os.path.join(REPO, path) + (f":{arg}" if arg else ""))


def launch(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``python launch.py ARGS`` in the repo and returns the finished process."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "launch.py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclasses.dataclass
class CliResult:
    """Exit status and standard error of one launcher call."""

    code: int
    stderr: str

    @property
    def lines(self) -> list[str]:
        """The lines of stderr other than progress (``INFO``) lines."""
        return [line for line in self.stderr.strip().splitlines() if not line.startswith("INFO:")]


def run_cli(capfd, *args: str) -> CliResult:
    """Runs ``launch.py ARGS`` in this process (its compiled functions stay warm), through
    the same ``main`` as the launcher; ``capfd`` is pytest's fixture."""
    import logging

    from jaxgen.cli import main

    capfd.readouterr()
    # pytest takes over the root logger's output; the launcher's lines go to stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))  # as the launcher prints
    logging.getLogger("jaxgen").addHandler(handler)
    try:
        code = main(["launch.py", *args])
    finally:
        logging.getLogger("jaxgen").removeHandler(handler)
    return CliResult(code, capfd.readouterr().err)


def assert_refused(result: CliResult, *expected: str) -> None:
    """Exit 2, at most three lines on stderr, the last an ``error:`` naming ``expected``."""
    assert result.code == 2, result.stderr[-3000:]
    assert 1 <= len(result.lines) <= 3, result.lines
    assert result.lines[-1].startswith("error:"), result.lines
    for text in expected:
        assert text in result.lines[-1], (text, result.lines[-1])


def tree_digest(directory: str) -> str:
    """A hash of every file's path and bytes under ``directory`` (to show nothing changed)."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def state_digest(state) -> str:
    """SHA-256 over each leaf's tree path, dtype, shape and bytes (PRNG keys as key data)."""
    import jax
    import numpy as np

    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaf = np.asarray(jax.device_get(leaf))
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = np.asarray(jax.random.key_data(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def random_params(init_fn, *args, scale: float = 0.1, seed: int = 0, **kwargs):
    """Parameters of the shapes and dtypes ``init_fn(*args, **kwargs)`` returns, every leaf
    drawn on the host: ``1 + scale * N(0, 1)`` for leaves named ``scale`` (norm gains),
    ``scale * N(0, 1)`` otherwise, so zero-initialised output layers do not hide mistakes.

    ``init_fn`` is traced once by ``jax.eval_shape`` and never compiled: XLA:CPU takes
    seconds to compile the threefry draws of a model's initialisers (about 14 CPU-seconds
    for the 186 leaves of a small UNet), which tests that want any non-trivial parameters
    need not pay.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(path, shape):
        offset = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
        noise = offset + scale * rng.standard_normal(shape.shape)
        return jnp.asarray(noise, shape.dtype)

    shapes = jax.eval_shape(init_fn, *args, **kwargs)
    return jax.tree_util.tree_map_with_path(draw, shapes)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def jitted_step(method, tx, ema_decay: float):
    """``method.train_step`` compiled as the trainer compiles it: ``step(state, batch) ->
    (state, metrics)``. Tests call this rather than the step itself: run op by op, a
    family's step compiles each of its hundreds of operations on its own."""
    import functools

    import jax

    return jax.jit(functools.partial(method.train_step, tx=tx, ema_decay=ema_decay))


def jitted_init(method, tx, rng, batch):
    """``method.init_state(rng, batch, tx)``, compiled once rather than run op by op."""
    import jax

    return jax.jit(lambda r, b: method.init_state(r, b, tx))(rng, batch)


def gray_batch(seed: int, n: int = 8, size: int = 8) -> dict:
    """``n`` random uint8 images ``[n, size, size, 1]`` with label 0, as a data batch."""
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, size, size, 1)), jnp.uint8),
        "label": jnp.zeros(n, jnp.int32),
    }


def adam_losses(loss_fn, params, batch, steps: int, learning_rate: float = 3e-3):
    """Trains ``params`` on one fixed ``batch`` with Adam; returns ``(params, [loss per step])``.

    ``loss_fn(params, batch, rng) -> (loss, metrics)``; step ``i`` uses ``PRNGKey(i)``.
    """
    import jax
    import optax

    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, rng):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = tx.init(params), []
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    return params, losses


@pytest.fixture
def torch_one_thread():
    """One intra-op thread: OpenMP's spinning threads crawl on a shared, busy CPU."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    from jaxgen import runtime

    runtime.enable_compilation_cache()
    runtime.configure_logging()


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs without the plugin
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` on a small machine: one worker per core and one more. Part of the suite's
    time is spent waiting (on launched processes, signals, 8 simulated devices), which the
    extra worker fills: on the 2-core CPU with a cold cache three workers took 9 min 38 s
    where two took 10 min 37 s (the second tree also checked one bad sampler in-process
    instead of in a launch); other cold runs with three took 10 min 43 s and 11 min 12 s."""
    del config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores + 1 if cores <= 4 else cores


def pytest_collection_modifyitems(config, items):
    """Puts the tests of :data:`LONG_FILES` first, longest file first (stable otherwise)."""
    del config
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
