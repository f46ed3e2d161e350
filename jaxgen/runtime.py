"""Process-level setup: multi-process initialisation and the compilation cache.

JAX is imported inside the functions, so that the launcher can install its signal handling
before the (seconds-long) import.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging as pylogging
import os
import platform

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "xla")
# XLA:CPU in jaxlib 0.10 lowers weight-gradient convolutions to YNNPACK at 40-100 GFLOP/s;
# Eigen's are 2-2.5x faster, which makes a UNet train step about 25% shorter on a 2-core
# CPU (benchmarks/README.md). The flag is experimental, so it is only set for the jaxlib
# minor versions it was measured on (an unknown XLA flag aborts the process).
CPU_XLA_FLAGS = {"0.10": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}

# XLA options for programs that run once, such as a model's initialisation: what XLA's
# optimisation passes would save at run time is less than they cost to compile. A DDPM
# UNet's initialisation (about 200 parameters, each a threefry draw) took 55 CPU-s to
# compile fully optimised and 5 CPU-s with these on the 2-core CPU; its values agree to one
# float32 rounding (the truncated normal's float arithmetic compiles differently).
RUN_ONCE_COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Accelerator plugins: a process that can see one may not run on the CPU backend.
_ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "libtpu")


def _cpu_backend_expected() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(m) for m in _ACCELERATOR_MODULES)


def keep_host_memory() -> bool:
    """Makes glibc's malloc keep freed memory instead of returning it to the kernel.

    XLA:CPU allocates the buffers of a step (about 800 MiB for the DDPM UNet at batch 64)
    with malloc and frees them at its end; its threads allocate in glibc's per-thread arenas,
    which hand the freed pages back to the kernel, so each step faults 200k fresh zeroed pages
    back in: 13-15% of a train step's CPU time on one core (benchmarks/README.md, "Peer
    comparison"). One arena, no mmap'd chunks and no trimming keep the pages mapped (the
    process keeps its peak heap). On two cores the step was no faster (the one arena's lock
    is shared), so it applies only to a process confined to one core, on glibc, that runs
    on the CPU backend (no accelerator plugin installed, or ``JAX_PLATFORMS`` starting with
    ``cpu``); ``JAXGEN_KEEP_HOST_MEMORY=0`` turns it off. Call it before XLA's threads start
    (the backend's first use). Returns whether it applied.
    """
    if os.environ.get("JAXGEN_KEEP_HOST_MEMORY", "1") == "0" or not _cpu_backend_expected():
        return False
    if len(os.sched_getaffinity(0)) != 1:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )


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
        jax.config.update("jax_persistent_cache_min_compile_time_secs", _cache_min_secs())


def _cache_min_secs() -> float:
    """``$JAXGEN_CACHE_MIN_COMPILE_SECS`` (default 0.5): programs that compile faster are not
    stored in the persistent cache."""
    from jaxgen.errors import UserError

    text = os.environ.get("JAXGEN_CACHE_MIN_COMPILE_SECS", "0.5")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UserError(f"JAXGEN_CACHE_MIN_COMPILE_SECS={text!r}: expected seconds >= 0")
    return seconds


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
    """Sets XLA flags and malloc's (CPU), joins the other processes (if any), turns on the
    compilation cache."""
    import jax

    keep_host_memory()
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
