"""A readable description of the devices a measurement ran on, for benchmark and timing records."""

from __future__ import annotations

import datetime
import os
import platform

import jax


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware() -> dict:
    """``hardware`` (e.g. ``"8 x NVIDIA H100 80GB HBM3"``), platform, device kind and count,
    the jax version and the UTC time of the call."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        text = f"{cpu_model()}, {os.cpu_count()} cores (CPU)"
    else:
        text = f"{jax.device_count()} x {device.device_kind}"
    return {
        "hardware": text,
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
