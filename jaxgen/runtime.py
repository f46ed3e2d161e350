"""Process-level setup: multi-process initialisation and the compilation cache.

JAX is imported inside the functions, so that the launcher can install its signal handling
before the (seconds-long) import.
"""

from __future__ import annotations

import logging as pylogging
import os

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "xla")
# XLA:CPU in jaxlib 0.10 lowers weight-gradient convolutions to YNNPACK at 40-100 GFLOP/s;
# Eigen's are 2-2.5x faster, which makes a UNet train step about 25% shorter on a 2-core
# CPU (benchmarks/README.md). The flag is experimental, so it is only set for the jaxlib
# minor versions it was measured on (an unknown XLA flag aborts the process).
CPU_XLA_FLAGS = {"0.10": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}


def multi_process_env() -> dict | None:
    """Arguments for ``jax.distributed.initialize`` when this is one of several processes.

    Explicit ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``
    win; under SLURM (``SLURM_NTASKS`` > 1) or on a multi-host TPU
    (``TPU_WORKER_HOSTNAMES`` listing several hosts) JAX detects the rest.
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and os.environ.get("JAX_NUM_PROCESSES"):
        return {
            "coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
            "process_id": int(os.environ.get("JAX_PROCESS_ID", "0")),
        }
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_ID"):
        return {}
    if len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
        return {}
    return None


def enable_compilation_cache() -> None:
    """Persistent XLA cache (``$JAXGEN_COMPILATION_CACHE``; empty string turns it off)."""
    import jax

    path = os.environ.get("JAXGEN_COMPILATION_CACHE", DEFAULT_CACHE)
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def add_cpu_xla_flags() -> None:
    """Appends :data:`CPU_XLA_FLAGS` of this jaxlib to ``XLA_FLAGS`` (before the backend starts).

    ``JAXGEN_CPU_XLA_FLAGS`` replaces them (empty: XLA's defaults). They only affect CPU work.
    """
    import jaxlib

    minor = ".".join(jaxlib.__version__.split(".")[:2])
    flags = os.environ.get("JAXGEN_CPU_XLA_FLAGS", CPU_XLA_FLAGS.get(minor, ""))
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags.split() if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()


def initialize() -> None:
    """Sets XLA flags, joins the other processes (if any), turns on the compilation cache."""
    import jax

    add_cpu_xla_flags()
    kwargs = multi_process_env()
    if kwargs is not None:
        # Only affects the CPU backend; must be set before the backend starts.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kwargs)
    enable_compilation_cache()
    configure_logging()


def configure_logging() -> None:
    """jaxgen's own progress lines at INFO; other libraries at WARNING; absl's (Orbax logs
    through it: read-only folders, missing optional metadata) at ERROR, so that a one-line
    error stays one line."""
    pylogging.basicConfig(
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s", datefmt="%H:%M:%S"
    )
    pylogging.getLogger().setLevel(pylogging.WARNING)
    pylogging.getLogger("absl").setLevel(pylogging.ERROR)
    pylogging.getLogger("jaxgen").setLevel(pylogging.INFO)
