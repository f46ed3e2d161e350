"""What code and which devices a launch ran with, for ``launches.jsonl``.

:func:`software` names the jaxgen commit (when the package runs from a git checkout) and the
versions of the libraries that decide a run's numbers; :func:`devices` the devices and
processes. :func:`software_changes` compares two launches' records, so that a run resumed
under other code says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

import jax

# Distributions whose versions can change a run's numbers or files.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIT_TIMEOUT_SECONDS = 5


def _git(*args: str) -> str | None:
    """The stripped output of ``git -C <jaxgen's folder> <args>``; None without git, outside
    a checkout, or on any failure."""
    try:
        out = subprocess.run(
            ["git", "-C", REPO, *args],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_commit() -> dict | None:
    """``{"commit": <sha>, "modified": bool}`` of the git checkout jaxgen runs from
    (``modified``: tracked files differ from the commit); None when it is not one (an
    installed wheel, no git)."""
    top = _git("rev-parse", "--show-toplevel")
    if not top or os.path.realpath(top) != os.path.realpath(REPO):
        return None  # not a checkout, or jaxgen installed inside another project's checkout
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "modified": bool(status) if status is not None else None}


def software() -> dict:
    """The jaxgen version and commit, Python's version and each of :data:`PACKAGES`'
    (None: not installed)."""
    from jaxgen import __version__

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "jaxgen": __version__,
        "code": code_commit(),
        "python": platform.python_version(),
        "packages": versions,
    }


def devices() -> dict:
    """Platform, device kind, number of devices and of processes of this launch."""
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
    }


def software_changes(old: dict | None, new: dict) -> list[str]:
    """``"name: old -> new"`` for each package version and for the commit that differ
    between two :func:`software` records (none when ``old`` is missing, as in launches
    recorded before it was)."""
    if not isinstance(old, dict):
        return []
    changes = []
    old_commit = (old.get("code") or {}).get("commit")
    new_commit = (new.get("code") or {}).get("commit")
    if old_commit != new_commit:
        changes.append(f"jaxgen commit: {str(old_commit)[:12]} -> {str(new_commit)[:12]}")
    old_packages, new_packages = old.get("packages") or {}, new.get("packages") or {}
    for name in sorted(set(old_packages) | set(new_packages)):
        if old_packages.get(name) != new_packages.get(name):
            changes.append(f"{name}: {old_packages.get(name)} -> {new_packages.get(name)}")
    return changes
