"""Dry runs of the published configs on simulated devices, before a cluster sees them.

  python scripts/dry_run.py                           # every config, 8 simulated CPU devices
  python scripts/dry_run.py --configs ddpm,gan --devices 4 --keep /tmp/dry

For each published config (``configs/<name>.py`` without a preset) the launcher runs, in
fresh processes with ``XLA_FLAGS=--xla_force_host_platform_device_count=<devices>`` and
``precision=bfloat16``, the path a long cluster run takes:

1. train, and SIGTERM once step 3 is logged: the process must save and exit 0;
2. relaunch: it must resume from the saved step, finish ``num_steps`` and run the config's
   own final evaluators (Fréchet distance, C2ST, likelihood, ...);
3. ``--mode=sample`` with 16 samples: the rows of every sampler call must be split over all
   devices (the launcher's progress line reports the split of the result arrays);
4. the metrics log must hold every step once.

What differs from a cluster run, and nothing else: the width of each network is shrunk
(``SHRINK``; the architecture, data layout, losses, samplers and evaluators are the
config's), the step, sample and evaluation counts are cut (the DDPM samples with 50 steps and
bounds the likelihood with 8 sampled timesteps, not all 1000), TFDS data sets (CIFAR-10)
are replaced by ``tfds.testing.mock_data`` (random images of the real shapes), and the FID
Inception is the converter's output for random weights (``scripts/convert_inception.py``).
The domain classifier the GAN's ``classifier`` evaluator needs on CIFAR-10 is trained and
exported first, as a user would (``configs/classifier.py``, ``scripts/export_classifier.py``).
Caches (reference features) go to a temporary folder, so mock features never reach
``~/.cache/jaxgen``. Prints one line per stage and exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

NUM_STEPS = 6
STOP_AFTER = 3  # SIGTERM once this step is logged
SAMPLES = 16  # --mode=sample: 2 rows on each of 8 devices
EVAL_SAMPLES = 16  # num_samples / num_examples of every evaluator
MOCK_EXAMPLES = 1024  # per split of a mocked TFDS data set (the GAN's batch is 320)

# Width overrides per config: the same modules and code path, narrower.
SHRINK = {
    "ddpm": ["--config.model.unet.ch=16", "--config.model.unet.num_groups=8",
             "--config.sample.steps=50", "--config.model.vlb_terms=8"],
    "gan": ["--config.model.g_width=32", "--config.model.d_width=32"],
    "pixelcnn": ["--config.model.features=16"],
    "vae": ["--config.model.channels=(8,16)", "--config.model.hidden_dim=32",
            "--config.model.iwae_k=8"],
    "classifier": ["--config.model.channels=(8,16,32)", "--config.model.feature_dim=16"],
    "clip": ["--config.model.image_channels=(8,16,32)", "--config.model.embed_dim=16"],
    "flow": ["--config.model.unet.ch=16", "--config.model.unet.num_groups=8",
             "--config.sample.steps=8"],
}  # fmt: skip
CONFIGS = tuple(SHRINK)
# Evaluator options that size the work: set to EVAL_SAMPLES where the evaluator has them.
EVAL_SIZE_KEYS = ("num_samples", "num_examples", "num_real", "kid_subset_size")


def _worker(argv: list[str]) -> int:
    """One launcher call with TFDS data sets mocked (run in a child process)."""
    import tensorflow_datasets as tfds

    from jaxgen.cli import exit_process, main

    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        exit_process(main(["launch.py", *argv]))
    return 0


class Child:
    """A worker process whose standard error is read line by line."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: str):
        self.log = open(log_path, "a")  # noqa: SIM115 - closed in finish()
        self.log.write(f"$ launch.py {' '.join(args)}\n")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", *args],
            cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, pattern: str) -> bool:
        for line in self.process.stderr:
            self._keep(line)
            if re.search(pattern, line):
                return True
        return False

    def _keep(self, line: str) -> None:
        self.lines.append(line)
        self.log.write(line)

    def finish(self, timeout: float) -> int:
        _, rest = self.process.communicate(timeout=timeout)
        for line in rest.splitlines(keepends=True):
            self._keep(line)
        self.log.close()
        return self.process.returncode

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _published(config_name: str):
    """``configs/<config_name>.py`` without a preset."""
    from jaxgen.cli import load_config_file

    return load_config_file(os.path.join(REPO, "configs", f"{config_name}.py"))


def _eval_overrides(config_name: str, inception: str, classifier: str) -> list[str]:
    """Shrinks every evaluator of the published config and points it at the stand-in files."""
    config = _published(config_name)
    out = []
    for name, cfg in config.evals.items():
        for key in EVAL_SIZE_KEYS:
            if key in cfg:
                out.append(f"--config.evals.{name}.{key}={EVAL_SAMPLES}")
        if "num_examples" not in cfg and cfg.get("type") == "likelihood":
            out.append(f"--config.evals.{name}.num_examples={EVAL_SAMPLES}")
        if "batch_size" in cfg:
            out.append(f"--config.evals.{name}.batch_size=8")
        if cfg.get("features") == "inception" or "inception_weights" in cfg:
            out.append(f"--config.evals.{name}.inception_weights={inception}")
        if cfg.get("features") == "domain" and config.data.name.startswith("tfds:"):
            out.append(f"--config.evals.{name}.classifier_weights={classifier}")
        if cfg.get("type") == "c2st" and "steps" in cfg:
            out.append(f"--config.evals.{name}.steps=20")
    return out


def write_random_inception(path: str, scratch: str) -> None:
    """The FID Inception's names and shapes with random weights, through the converter."""
    import numpy as np

    from jaxgen.evaluate import inception_weights

    rng = np.random.default_rng(0)
    flat = {}
    for name, shape in inception_weights.expected_shapes().items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "kernel":  # He scaling keeps activations of order one through the net
            flat[name] = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        elif leaf in ("var", "scale"):
            flat[name] = rng.uniform(0.5, 1.5, shape)
        else:
            flat[name] = rng.standard_normal(shape) * 0.1
    raw = os.path.join(scratch, "inception_random_flax.npz")
    np.savez(raw, **{k: v.astype(np.float32) for k, v in flat.items()})
    converted = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "convert_inception.py"), raw, path],
        capture_output=True, text=True,
    )  # fmt: skip
    if converted.returncode != 0:
        raise SystemExit(f"converter failed: {converted.stderr.strip()}")


def metric_steps(workdir: str) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def dry_run(name: str, args, scratch: str, env: dict, inception: str, classifier: str) -> dict:
    """The four stages for ``configs/<name>.py``; returns what each printed."""
    workdir = os.path.join(scratch, f"run_{name}")
    log_path = os.path.join(scratch, f"{name}.log")
    base = [
        f"--config=configs/{name}.py",
        f"--workdir={workdir}",
        "--config.precision=bfloat16",
        f"--config.train.num_steps={NUM_STEPS}",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=2",
        f"--config.sample.num={EVAL_SAMPLES}",  # the final sample grid
        "--config.sample.timing_repeats=0",
        *SHRINK[name],
        *_eval_overrides(name, inception, classifier),
    ]
    report = {"config": name}
    start = time.time()

    run = Child(base, env, log_path)
    if not run.wait_for(rf"step {STOP_AFTER}/{NUM_STEPS}"):
        raise RuntimeError(f"{name}: never reached step {STOP_AFTER}:\n{run.text[-3000:]}")
    run.process.send_signal(signal.SIGTERM)
    code = run.finish(args.timeout)
    stopped = re.search(r"stopped by signal 15: checkpoint of step (\d+) saved", run.text)
    if code != 0 or not stopped:
        raise RuntimeError(f"{name}: SIGTERM did not save and exit 0 ({code}):\n{run.text[-3000:]}")
    report["stopped_at"] = int(stopped.group(1))

    resumed = Child(base, env, log_path)
    code = resumed.finish(args.timeout)
    found = re.search(r"resumed from checkpoint at step (\d+)", resumed.text)
    if code != 0 or not found or int(found.group(1)) != report["stopped_at"]:
        raise RuntimeError(f"{name}: resume failed ({code}):\n{resumed.text[-3000:]}")
    eval_path = os.path.join(workdir, "eval", f"step_{NUM_STEPS}.json")
    if _published(name).evals:
        if not os.path.exists(eval_path):
            raise RuntimeError(f"{name}: no final evaluation:\n{resumed.text[-3000:]}")
        with open(eval_path) as f:
            report["eval"] = json.load(f)

    from jaxgen.methods import get_method_class

    if get_method_class(_published(name).family).is_generator:  # encoders draw nothing
        sampled = Child([*base, "--mode=sample", f"--config.sample.num={SAMPLES}"], env, log_path)
        code = sampled.finish(args.timeout)
        split = re.search(r"sampling on (\d+) devices \((\d+) rows each\)", sampled.text)
        if code != 0 or not split:
            raise RuntimeError(f"{name}: sampling failed ({code}):\n{sampled.text[-3000:]}")
        devices, rows = int(split.group(1)), int(split.group(2))
        if devices != args.devices or rows * devices < SAMPLES:
            raise RuntimeError(f"{name}: sampling split {devices} x {rows}, not over all devices")
        report["sample_split"] = f"{devices} devices x {rows} rows"

    steps = metric_steps(workdir)
    if steps != list(range(1, NUM_STEPS + 1)):
        raise RuntimeError(f"{name}: metrics.jsonl steps {steps}")
    report["seconds"] = round(time.time() - start, 1)
    return report


def export_stand_in_classifier(args, scratch: str, env: dict, path: str) -> None:
    """Trains and exports the CIFAR-10 domain classifier the GAN config evaluates with."""
    workdir = os.path.join(scratch, "classifier_cifar10")
    run = Child(
        [
            "--config=configs/classifier.py:data=tfds:cifar10", f"--workdir={workdir}",
            "--config.train.num_steps=2", "--config.evals={}", *SHRINK["classifier"],
        ],
        env, os.path.join(scratch, "classifier_cifar10.log"),
    )  # fmt: skip
    if run.finish(args.timeout) != 0:
        raise SystemExit(f"classifier for the GAN's evaluator failed:\n{run.text[-3000:]}")
    code = (
        "import sys, runpy, tensorflow_datasets as tfds\n"
        "sys.argv = sys.argv[1:]\n"
        f"with tfds.testing.mock_data(num_examples={MOCK_EXAMPLES}):\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    exported = subprocess.run(
        [sys.executable, "-c", code, os.path.join(REPO, "scripts", "export_classifier.py"),
         f"--workdir={workdir}", f"--out={path}"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if exported.returncode != 0:
        raise SystemExit(f"export of the stand-in classifier failed: {exported.stderr[-2000:]}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return _worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per launch")
    parser.add_argument("--keep", default="", help="folder for the runs and logs (kept)")
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in SHRINK]
    if unknown:
        parser.error(f"unknown configs {unknown}; expected some of {list(CONFIGS)}")

    scratch = args.keep or tempfile.mkdtemp(prefix="jaxgen_dry_run_")
    os.makedirs(scratch, exist_ok=True)
    env = dict(
        os.environ,
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={args.devices}".strip(),
        JAXGEN_CACHE_DIR=os.path.join(scratch, "cache"),
        PYTHONUNBUFFERED="1",
    )
    inception = os.path.join(scratch, "inception_random.npz")
    classifier = os.path.join(scratch, "cifar10_classifier.npz")
    write_random_inception(inception, scratch)
    if "gan" in names:
        export_stand_in_classifier(args, scratch, env, classifier)
    failed = False
    for name in names:
        try:
            report = dry_run(name, args, scratch, env, inception, classifier)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"FAIL {name}: {e}", flush=True)
            failed = True
            break
        print(json.dumps(report, sort_keys=True), flush=True)
    print(f"logs and runs in {scratch}" if args.keep or failed else "", flush=True)
    if not args.keep and not failed:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
