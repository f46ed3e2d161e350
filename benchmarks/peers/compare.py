"""jaxgen's DDPM UNet train step against the same UNet and step in PyTorch, on one machine.

  python benchmarks/peers/compare.py                          # 3.9M-param UNet, batch 64, 28x28
  python benchmarks/peers/compare.py --rounds 5 --out benchmarks/results/peers.jsonl
  python benchmarks/peers/compare.py --config-args preset=cpu --set model.unet.ch=16 --batch 32
  python benchmarks/peers/compare.py --torch-device cuda      # PyTorch on a GPU (jax: its default)

Two worker processes, one per framework, each builds its model once, then the parent runs
``--rounds`` rounds, alternating which framework goes first (ABBA order, so slow drifts in the
machine's load hit both alike); in a round a worker times ``--steps`` steps after a warm-up
step. Only one worker runs at a time. Prints images/s of each and the jaxgen/PyTorch ratio
(medians over rounds) and writes a JSON record with the hardware.

* jaxgen: the trainer's own jitted, sharded, donated ``train_step`` (``jaxgen.trainer.Trainer``)
  on the config from ``configs/ddpm.py:<config-args>`` plus ``--set`` overrides, fed two real
  batches of its data pipeline. ``--jax-xla-flags`` is added to ``XLA_FLAGS`` of this worker,
  and malloc keeps freed memory as in the launcher (``jaxgen.runtime.keep_host_memory``;
  ``JAXGEN_KEEP_HOST_MEMORY=0`` turns that off).
* PyTorch: :class:`benchmarks.peers.torch_unet.TorchUNet` (same parameter count, asserted) and
  the same step: epsilon-prediction MSE at uniform timesteps of the linear schedule, gradients
  clipped to the config's global norm, Adam (fused), EMA of the parameters; on the same uint8
  batches. Eager mode, ``--threads`` intra-op threads (default: all cores), on
  ``--torch-device`` (``cpu``, or ``cuda`` with ``cudnn.benchmark`` and, when the config's
  precision is bfloat16, CUDA bf16 autocast). The jax worker runs on JAX's default backend; when
  PyTorch shares a GPU with it, JAX preallocates 45% of the GPU's memory (not 75%).

PyTorch is optional: without it the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PREFIX = "@@ "  # marks protocol lines on a worker's stdout
# The probe model: preset=cpu widened to 3.9M parameters.
DEFAULT_CONFIG_ARGS = "preset=cpu"
DEFAULT_SETS = ("model.unet.ch=32", "model.unet.num_res_blocks=2")
# XLA:CPU (jaxlib 0.10) runs convolutions through YNNPACK by default; its weight-gradient
# convolution (a 28x28 "window" over the batch) runs at 40-100 GFLOP/s against 110-150 for
# Eigen's, which outweighs Eigen's slightly slower forward/input-gradient convolutions.
DEFAULT_JAX_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _send(payload: dict) -> None:
    print(PREFIX + json.dumps(payload), flush=True)


def _serve(run_round) -> None:
    """Worker loop: ``run <steps>`` -> one timing line; ``quit`` -> exit."""
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "quit":
            return
        _send(run_round(int(rest[0])))


def _pin(threads: int) -> None:
    """Restricts this process to its first ``threads`` allowed cores (0: leave as is)."""
    if threads:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cores[:threads]))


def _timed_round(step, steps: int) -> dict:
    """Median wall-clock seconds per step, and the process CPU seconds per step."""
    step(0)  # warm-up: caches, allocator, thread pools after the other framework ran
    times = []
    cpu_start = time.process_time()
    for i in range(steps):
        start = time.perf_counter()
        step(i + 1)
        times.append(time.perf_counter() - start)
    return {
        "step_seconds": statistics.median(times),
        "cpu_seconds_per_step": (time.process_time() - cpu_start) / steps,
    }


# --- the jaxgen worker -------------------------------------------------------------------------
def jax_worker(spec: dict) -> None:
    _pin(spec["threads"])  # before XLA sizes its thread pool from the affinity mask
    from jaxgen import runtime

    kept = runtime.keep_host_memory()  # as the launcher: before XLA's threads start
    import jax
    import numpy as np

    from benchmarks.common import hardware
    from benchmarks.train_step import apply_overrides, flops_of
    from jaxgen import parallel
    from jaxgen.cli import load_config_file
    from jaxgen.experiment import Experiment
    from jaxgen.trainer import Trainer

    jax.config.update("jax_enable_compilation_cache", False)
    config = load_config_file(os.path.join(ROOT, "configs", "ddpm.py") + ":" + spec["config_args"])
    apply_overrides(config, spec["sets"])
    config.train.batch_size = spec["batch"]
    config.data.image_size = spec["size"]
    diff = config.model.diffusion
    if diff.process != "vp" or diff.prediction != "eps" or diff.schedule != "linear":
        sys.exit("compare.py: only the linear-schedule epsilon-prediction VP DDPM has a peer")
    if config.data.cond != "none" or config.model.autoencoder:
        sys.exit("compare.py: only unconditional pixel-space DDPM has a peer")

    with tempfile.TemporaryDirectory() as workdir:
        exp = Experiment(config, workdir)
        trainer = Trainer(exp)
        state = exp.init_state()
        pipeline = exp.pipeline()
        host_batches = [next(pipeline) for _ in range(2)]
        batches = [parallel.global_batch(b, exp.mesh) for b in host_batches]
        start = time.perf_counter()
        compiled = trainer.step_fn.lower(state, batches[0]).compile()
        compile_seconds = time.perf_counter() - start
        images_path = os.path.join(spec["tmp"], "images.npy")
        np.save(images_path, np.stack([np.asarray(b["image"]) for b in host_batches]))
        unet = exp.method.unet_config
        _send(
            {
                "params": int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
                "compile_seconds": compile_seconds,
                "flops_per_step": flops_of(compiled),
                "images": images_path,
                "unet": {f: getattr(unet, f) for f in unet.__dataclass_fields__},
                "image_shape": list(exp.method.x_shape),
                "step": {
                    "timesteps": diff.timesteps,
                    "beta_start": diff.beta_start,
                    "beta_end": diff.beta_end,
                    "learning_rate": config.optimizer.learning_rate,
                    "grad_clip_norm": config.optimizer.grad_clip_norm,
                    "ema_decay": config.train.ema_decay,
                    "random_flip": bool(config.model.random_flip),
                    "precision": config.precision,
                },
                "optimizer": config.optimizer.name,
                "hardware": hardware(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "keep_host_memory": kept,
            }
        )
        holder = {"state": state}

        def step(i):
            holder["state"], metrics = compiled(holder["state"], batches[i % 2])
            jax.block_until_ready(metrics)

        _serve(lambda steps: _timed_round(step, steps))


# --- the PyTorch worker ------------------------------------------------------------------------
def torch_worker(spec: dict) -> None:
    _pin(spec["threads"])
    import numpy as np
    import torch

    from benchmarks.peers.torch_unet import TorchUNet, TrainStep, count_params

    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    jax_info = spec["jax"]
    device = torch.device(spec["torch_device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # PyTorch's fastest stock convolution choice
    h, _, c = jax_info["image_shape"]
    model = TorchUNet(in_channels=c, image_size=h, **jax_info["unet"]).to(device)
    options = dict(jax_info["step"])
    random_flip = options.pop("random_flip")
    bf16 = options.pop("precision") == "bfloat16"
    trainer = TrainStep(model, channels_last=spec["torch_channels_last"], **options)
    images = torch.from_numpy(np.load(jax_info["images"]))

    def step(i):
        batch = images[i % 2]
        if random_flip:
            flip = torch.rand(batch.shape[0]) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(2), batch)
        # step() returns the loss as a Python float: on a GPU that waits for the step to end.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            trainer.step(batch)

    _send(
        {
            "params": count_params(model),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "channels_last": spec["torch_channels_last"],
            "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        }
    )
    _serve(lambda steps: _timed_round(step, steps))


# --- the parent --------------------------------------------------------------------------------
class Worker:
    """A worker subprocess speaking the ``@@ <json>`` line protocol."""

    def __init__(self, kind: str, spec: dict, env: dict):
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--worker={kind}", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])
        raise RuntimeError(f"the {self.kind} worker exited with status {self.proc.wait()}")

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def compare(args) -> dict:
    sets = list(DEFAULT_SETS) if args.set is None else args.set
    base_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    jax_env = dict(base_env)
    if args.jax_xla_flags:
        jax_env["XLA_FLAGS"] = (jax_env.get("XLA_FLAGS", "") + " " + args.jax_xla_flags).strip()
    if args.torch_device.startswith("cuda") and not any(
        k in jax_env for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")
    ):
        # JAX preallocates 75% of a GPU's memory; leave PyTorch room on a shared GPU.
        jax_env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.45"
    with tempfile.TemporaryDirectory() as tmp:
        spec = dict(
            config_args=args.config_args,
            sets=sets,
            batch=args.batch,
            size=args.size,
            tmp=tmp,
            threads=args.threads,
        )
        print(f"compiling the jaxgen step (configs/ddpm.py:{args.config_args} {sets}) ...")
        jax_w = Worker("jax", spec, jax_env)
        jax_info = jax_w.read()
        torch_spec = dict(
            jax=jax_info,
            threads=args.threads,
            torch_channels_last=args.torch_channels_last,
            torch_device=args.torch_device,
        )
        torch_w = Worker("torch", torch_spec, base_env)
        try:
            torch_info = torch_w.read()
            if torch_info["params"] != jax_info["params"]:
                raise AssertionError(
                    f"parameter counts differ: jaxgen {jax_info['params']}, "
                    f"PyTorch {torch_info['params']}"
                )
            print(
                f"{jax_info['params']:,} parameters in both; jaxgen compile "
                f"{jax_info['compile_seconds']:.1f} s; timing {args.rounds} rounds of "
                f"{args.steps} steps at batch {args.batch}, {args.size}x{args.size}"
            )
            rounds = []
            for r in range(args.rounds):
                order = (jax_w, torch_w) if r % 2 == 0 else (torch_w, jax_w)
                result = {w.kind: w.run(args.steps) for w in order}
                rounds.append(result)
                jax_ips = args.batch / result["jax"]["step_seconds"]
                torch_ips = args.batch / result["torch"]["step_seconds"]
                print(
                    f"round {r + 1}: jaxgen {jax_ips:7.1f} img/s   PyTorch {torch_ips:7.1f} img/s"
                    f"   ratio {jax_ips / torch_ips:.3f}   CPU s/step "
                    f"{result['jax']['cpu_seconds_per_step']:.2f} vs "
                    f"{result['torch']['cpu_seconds_per_step']:.2f}",
                    flush=True,
                )
        finally:
            torch_w.close()
            jax_w.close()

    def median(kind, key):
        return statistics.median(r[kind][key] for r in rounds)

    jax_med = args.batch / median("jax", "step_seconds")
    torch_med = args.batch / median("torch", "step_seconds")
    jax_cpu, torch_cpu = (
        median("jax", "cpu_seconds_per_step"),
        median("torch", "cpu_seconds_per_step"),
    )
    record = {
        "benchmark": "peer_compare",
        "family": "ddpm",
        "config_args": args.config_args,
        "overrides": sets,
        "batch_size": args.batch,
        "image_size": args.size,
        "params": jax_info["params"],
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "jaxgen_images_per_sec": jax_med,
        "torch_images_per_sec": torch_med,
        "ratio": jax_med / torch_med,
        "round_ratios": [r["torch"]["step_seconds"] / r["jax"]["step_seconds"] for r in rounds],
        "jaxgen_cpu_seconds_per_step": jax_cpu,
        "torch_cpu_seconds_per_step": torch_cpu,
        "cpu_time_ratio": torch_cpu / jax_cpu,
        "threads": args.threads or os.cpu_count(),
        "jaxgen_compile_seconds": jax_info["compile_seconds"],
        "jaxgen_flops_per_step": jax_info["flops_per_step"],
        "jaxgen_xla_flags": jax_info["xla_flags"],
        "jaxgen_keep_host_memory": jax_info["keep_host_memory"],
        "torch_version": torch_info["torch_version"],
        "torch_threads": torch_info["threads"],
        "torch_channels_last": torch_info["channels_last"],
        "torch_device": torch_info["device"],
        "torch_device_name": torch_info["device_name"],
        **jax_info["hardware"],
    }
    ratios = record["round_ratios"]
    if max(ratios) > 2 * min(ratios):
        print(
            "warning: the rounds disagree by more than 2x, the machine is busy (PyTorch's "
            "OpenMP threads stall when a core is taken away); compare with --threads 1"
        )
    print(
        f"median: jaxgen {jax_med:.1f} img/s, PyTorch {torch_med:.1f} img/s, "
        f"jaxgen/PyTorch = {jax_med / torch_med:.3f} (CPU-time ratio {torch_cpu / jax_cpu:.3f})"
    )
    return record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("--worker="):
        kind = argv[0].split("=", 1)[1]
        (jax_worker if kind == "jax" else torch_worker)(json.loads(argv[1]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-args", default=DEFAULT_CONFIG_ARGS, help="configs/ddpm.py args")
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        help=f"config override key=value (repeatable; default: {' '.join(DEFAULT_SETS)})",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28, help="image height and width")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument(
        "--jax-xla-flags",
        default=DEFAULT_JAX_XLA_FLAGS,
        help=f"added to XLA_FLAGS of the jax worker (default: {DEFAULT_JAX_XLA_FLAGS}; "
        "'' for XLA's defaults)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="cores (and threads) for each framework; 0: all"
    )
    parser.add_argument("--torch-channels-last", action="store_true")
    parser.add_argument(
        "--torch-device",
        default="cpu",
        help="device of the PyTorch worker: cpu (default) or cuda[:N] (bf16 autocast on CUDA "
        "when the config's precision is bfloat16); the jax worker uses JAX's default backend",
    )
    parser.add_argument("--out", default=None, help="append the JSON record to this file")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        print(
            "compare.py: PyTorch is not installed; the peer comparison needs it "
            "(pip install torch, the CPU build is enough)",
            file=sys.stderr,
        )
        sys.exit(2)
    from benchmarks.common import write_record

    write_record(compare(args), args.out)


if __name__ == "__main__":
    main()
