"""Hardware description and JSON records shared by the benchmarks.

Every record carries ``hardware`` (a readable string), ``platform``,
``device_kind``, ``num_devices``, ``jax_version`` and the time it was taken, so
``experiments/tables.py`` can build the inference-time-per-hardware table.
"""

from __future__ import annotations

import json
import os

import jax

from jaxgen.hardware import cpu_model, hardware  # noqa: F401  (re-exported for the scripts)

# Dense peak TFLOP/s per device for model-FLOPs utilisation (vendor figures, no sparsity).
PEAK_TFLOPS = {
    ("NVIDIA H100 80GB HBM3", "bfloat16"): 989.0,
    ("NVIDIA H100 80GB HBM3", "float32"): 67.0,
    ("NVIDIA H200", "bfloat16"): 989.0,
    ("NVIDIA H200", "float32"): 67.0,
}


def peak_tflops(precision: str) -> float | None:
    device = jax.devices()[0]
    for (kind, dtype), value in PEAK_TFLOPS.items():
        if device.device_kind.startswith(kind) and dtype == precision:
            return value
    return None


def peak_memory_bytes() -> tuple[int | None, str]:
    """Peak device memory (accelerators) or the process's peak resident memory (CPU)."""
    stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_peak_bytes"
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host_peak_rss_bytes"


def write_record(record: dict, out: str | None) -> None:
    """Prints the record and appends it to ``out`` (a JSON-lines file) when given."""
    line = json.dumps(record, sort_keys=True)
    print(line)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "a") as f:
            f.write(line + "\n")
