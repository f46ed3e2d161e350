"""Sampling and evaluation split over 8 simulated CPU devices: each device computes a share,
and a seed's samples do not depend on the device count."""

import os
import re
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, xla_flags_with_devices

SCRIPT = r"""
import json, re, sys, jax, numpy as np
sys.path.insert(0, {repo!r})
from jaxgen.cli import main
from jaxgen.experiment import Experiment
from jaxgen.cli import load_config_file
from jaxgen.evaluate.likelihood import evaluate
from jaxgen.evaluate.context import EvalContext
out = {{"devices": len(jax.devices())}}
# The smoke UNet with one resolution and no attention: what is split is the batch.
SMALLER = ["--config.model.unet.ch_mult=(1,)", "--config.model.unet.attn_resolutions=()"]
if {launch!r}:
    args = ["launch.py", "--config=configs/ddpm.py:preset=smoke", "--workdir={workdir}",
            "--config.train.num_steps=2", "--config.train.sample_every=0", "--config.evals={{}}",
            *SMALLER]
    assert main(args) == 0
    assert main(args + ["--mode=sample", "--config.sample.num=64",
                        "--config.sample.timing_repeats=0"]) == 0
config = load_config_file("configs/ddpm.py:preset=smoke")
config.model.unet.ch_mult, config.model.unet.attn_resolutions = (1,), ()
# A stochastic sampler (the SDE form of DPM-Solver++): its fresh noise at every step must not
# depend on how the batch is split over devices either.
config.sample.sampler, config.sample.eta = "dpm_solver_pp", 1.0
exp = Experiment(config, "{workdir}")
state = exp.init_state()
params = exp.method.sampling_params(state)
hlo = exp._sample_fn.lower(params, exp.rng, 64, None).compile().as_text()
out["conv_batches"] = sorted({{int(b) for b in re.findall(
    r"= f32\[(\d+),\d+,\d+,\d+\]\{{[^}}]*\}} convolution", hlo)}})
np.save("{workdir}_samples_{{}}.npy".format(out["devices"]),
        exp.generate(state, 20, exp.sample_rng())["images"])
ctx = EvalContext(config=config, params=params, model_state=None,
                  spec=exp.spec, train_source=exp.train_source, eval_source=exp.eval_source,
                  rng=jax.random.PRNGKey(3), workdir="", generate_fn=None,
                  likelihood_fn=exp.method.likelihood,
                  batch_transform=exp.method.batch_transform())
out["likelihood"] = evaluate(ctx, {{"num_examples": 10, "batch_size": 4}})
print("@@" + json.dumps(out))
"""


def _run(workdir: str, devices: int, launch: bool) -> tuple[dict, str]:
    env = dict(os.environ, XLA_FLAGS=xla_flags_with_devices(devices))
    code = SCRIPT.format(repo=REPO, workdir=workdir, launch=launch)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("@@"))
    import json

    return json.loads(line[2:]), result.stderr


def test_eight_devices_each_sample_a_share_and_match_one_device(tmp_path):
    workdir = str(tmp_path / "d8")
    eight, log = _run(workdir, 8, launch=True)
    one, _ = _run(workdir, 1, launch=False)
    assert eight["devices"] == 8 and one["devices"] == 1

    # The launcher's --mode=sample split the 64 samples' rows over the 8 devices ...
    assert re.search(r"sampling on 8 devices \(8 rows each\): 64/64 images", log), log[-3000:]
    with np.load(os.path.join(workdir, "samples", "samples_2.npz")) as f:
        assert f["images"].shape == (64, 28, 28, 1)
    # ... and the compiled sampler's convolutions run on 64 / 8 rows per device: each device
    # computes its share rather than all 64 images.
    assert eight["conv_batches"] == [8], eight["conv_batches"]
    assert one["conv_batches"] == [64], one["conv_batches"]

    # Same seed, same samples (20 rows: padded to 24 on 8 devices).
    a = np.load(f"{workdir}_samples_8.npy").astype(int)
    b = np.load(f"{workdir}_samples_1.npy").astype(int)
    assert a.shape == b.shape == (20, 28, 28, 1)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3

    # The likelihood evaluator splits its batches too (10 examples in batches of 4, padded).
    for key, value in one["likelihood"].items():
        np.testing.assert_allclose(eight["likelihood"][key], value, rtol=1e-5, err_msg=key)
    assert one["likelihood"]["likelihood_num_examples"] == 10
