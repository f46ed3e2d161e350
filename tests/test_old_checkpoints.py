"""Checkpoints written by earlier code restore into today's families, leaf for leaf.

``tests/data/old_checkpoints/<family>/`` are smoke-preset workdirs trained for two steps by
the code of commit d58b94c (before the families, data and evaluation layers were
reorganised); the families added since (``image_tokenizer``, ``token_prior``, ``flow``) by
the code of the commit that added them. A ``token_prior`` run names its tokenizer's workdir:
the copy is pointed at the copied ``image_tokenizer`` fixture. ``expected.json`` holds, per
family, the step and a SHA-256 over every leaf of the restored train state (path, dtype,
shape and bytes) as that code restored it. A renamed module, parameter or optimizer field
changes the digest or fails the restore.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import pytest

from tests.conftest import state_digest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "old_checkpoints")
with open(os.path.join(FIXTURES, "expected.json")) as f:
    EXPECTED = json.load(f)


def test_every_family_has_an_old_checkpoint():
    from jaxgen.methods import _FAMILIES

    assert sorted(EXPECTED) == sorted(_FAMILIES)


def _point_at_tokenizer(workdir: str, tokenizer: str) -> None:
    """Rewrites ``model.tokenizer`` wherever the copied workdir records its config: in
    ``config.json`` and in every launch of ``launches.jsonl`` (the trained config is read
    from the newest training launch)."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    config["model"]["tokenizer"] = tokenizer
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    history = os.path.join(workdir, "launches.jsonl")
    with open(history) as f:
        launches = [json.loads(line) for line in f if line.strip()]
    for launch in launches:
        launch["config"]["model"]["tokenizer"] = tokenizer
    with open(history, "w") as f:
        f.writelines(json.dumps(launch) + "\n" for launch in launches)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_old_checkpoint_restores_exactly(family, tmp_path):
    import jaxgen

    workdir = str(tmp_path / family)
    shutil.copytree(os.path.join(FIXTURES, family), workdir)
    if family == "token_prior":
        tokenizer = str(tmp_path / "image_tokenizer")
        shutil.copytree(os.path.join(FIXTURES, "image_tokenizer"), tokenizer)
        _point_at_tokenizer(workdir, tokenizer)
    run = jaxgen.load(workdir, params="raw")
    assert run.family == family and run.step == EXPECTED[family]["step"]
    assert len(jax.tree.leaves(run.state)) == EXPECTED[family]["leaves"]
    assert state_digest(run.state) == EXPECTED[family]["digest"]
