"""jaxgen's cpu presets against plain PyTorch peers trained for the same minutes, on one table.

  python benchmarks/peers/quality_table.py                        # vae,gan,ddpm,pixelcnn
  python benchmarks/peers/quality_table.py --families=vae,gan --root=runs/quality_peers

For each family of ``--families``:

1. jaxgen: ``launch.py --config=configs/<family>.py:preset=<--preset>`` trains into
   ``<root>/<family>`` (skipped when that run has finished: its last step and final evaluation
   are there; an unfinished one resumes). Its training minutes are the sum over the rows of
   ``metrics.jsonl`` of (steps since the previous row) / ``steps_per_sec``: the wall clock of
   the training loop, compilation, checkpoints and sample grids included, the final evaluation
   not. ``launch.py --mode=sample --config.sample.num=<N>`` then writes
   ``samples/samples_<step>.npz`` (skipped when it holds ``N`` images already), where
   ``N = --num * --draws``.
2. The PyTorch peer ``benchmarks/peers/quality/<peer>.py`` (vae, dcgan, ddpm, pixelcnn) trains
   for the same minutes (``--peer-minutes`` instead when given) under ``--torch-python``
   (default: the first ``python3``/``python`` on PATH that imports torch) and writes ``N``
   samples to ``<root>/peers/<family>.npz`` (skipped when it exists for these minutes and
   holds ``N``).
3. Each model's ``N`` samples are ``--draws`` independent draws of ``--num``: consecutive
   slices of the file. Every draw is scored by :class:`score_samples.Scorer` against the same
   first ``--num-ref`` test images with the same ``--seed``; a record holds the mean over draws
   of each metric and its standard deviation (``<metric>_std``); jaxgen's record names its
   ``config`` and the ``--launch-arg`` overrides it was trained and sampled with (``launch_args``).

Prints one JSON record per family and implementation (with the hardware, appended to ``--out``,
default ``<root>/quality_table.jsonl``), then a Markdown table and, per family, the metrics on
which jaxgen is ahead of its peer by more than twice the standard error of the difference
(:func:`comparison`), level with it, or behind. The logs of every launch are in
``<root>/logs``. Train on an otherwise idle machine: the minutes are wall clock.

  python benchmarks/peers/quality_table.py --table-from=benchmarks/results/quality_peers_cpu.jsonl

prints the same table from records already written (the newest of each family and
implementation), training and scoring nothing.

Under the models, the table has a row of real images: the ``--num * --draws`` test images after
the reference, scored in the same ``--draws`` slices (record ``benchmark="quality_table_real"``;
``--no-real-row``: none). It is what a model that draws the data itself would score at this
sample size, so a family's line also names the level metrics on which both models are as close
to the reference as those real images (not behind them by more than twice the standard error):
there no lead can show at this sample size.

  python benchmarks/peers/quality_table.py --families=ddpm \
      --peer-records=benchmarks/results/quality_peers_cpu.jsonl

trains and scores jaxgen's side only, and compares it with the newest PyTorch record of each
family in that file (scored with the same ``--num``, ``--draws``, ``--num-ref`` and ``--seed``;
anything else is an error). Its minutes are the peer's, not jaxgen's: the table says both, and
a peer given less than 99% of jaxgen's minutes is an error, since the comparison would then
favour jaxgen. A peer measured on other hardware gets a warning, and jaxgen's record its
``peer_hardware``. Only the jaxgen record is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.peers.records import (  # noqa: E402 (after the path it needs)
    REAL_BENCHMARK,
    json_objects,
    newest_real_record,
    newest_records,
    print_table,
    summarize_draws,
)

# family -> (jaxgen config, peer script in benchmarks/peers/quality)
FAMILIES = {
    "vae": ("configs/vae.py", "vae.py"),
    "gan": ("configs/gan.py", "dcgan.py"),
    "ddpm": ("configs/ddpm.py", "ddpm.py"),
    "pixelcnn": ("configs/pixelcnn.py", "pixelcnn.py"),
}


def _rows(path: str) -> list[dict]:
    return [row for row in json_objects(path) if isinstance(row.get("step"), int)]


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def training_minutes(workdir: str) -> tuple[float, int]:
    """``(minutes, last step)`` of the training loop, from ``metrics.jsonl``: every row with
    ``steps_per_sec`` covers the steps since the row before it at that rate."""
    rows = _rows(os.path.join(workdir, "metrics.jsonl"))
    timed = {r["step"]: r["steps_per_sec"] for r in rows if _positive(r.get("steps_per_sec"))}
    seconds, previous = 0.0, 0
    for step in sorted(timed):
        seconds += (step - previous) / timed[step]
        previous = step
    return seconds / 60.0, previous


def finished(workdir: str) -> bool:
    """Whether the run in ``workdir`` reached ``train.num_steps`` and wrote its final
    evaluation (as ``jaxgen.trainer.Trainer`` decides that nothing is left to do)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    num_steps = config["train"]["num_steps"]
    if training_minutes(workdir)[1] < num_steps:
        return False
    return not config.get("evals") or os.path.isfile(
        os.path.join(workdir, "eval", f"step_{num_steps}.json")
    )


def jaxgen_params(workdir: str, step: int) -> int | None:
    """The ``params`` evaluator's count (parameters used to generate) at ``step``, if any."""
    try:
        with open(os.path.join(workdir, "eval", f"step_{step}.json")) as f:
            value = json.load(f).get("params")
    except (OSError, ValueError):
        return None
    return None if value is None else int(value)


def num_images(path: str) -> int:
    """Images in a samples ``.npz`` (0 when absent or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return len(f["images"])
    except (OSError, ValueError, KeyError):
        return 0


def find_torch_python() -> str:
    for name in ("python3", "python"):
        exe = shutil.which(name)
        if exe and subprocess.run([exe, "-c", "import torch"], capture_output=True).returncode == 0:
            return exe
    raise SystemExit("no python3/python on PATH imports torch; pass --torch-python")


def _run(cmd: list[str], log_path: str) -> None:
    """Runs ``cmd`` from the repository root, output to ``log_path``; exits on failure."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print("$ " + " ".join(cmd), f"> {log_path}", flush=True)
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        with open(log_path) as log:
            sys.stderr.write("".join(log.readlines()[-20:]))
        raise SystemExit(f"exit status {code}: {' '.join(cmd)} (log: {log_path})")


def peer_run(
    family: str, minutes: float, args: argparse.Namespace, root: str, torch_python: str
) -> tuple[str, str, dict]:
    """``("pytorch", samples file, record fields)`` of ``family``'s peer, trained for
    ``--peer-minutes`` (default ``minutes``) unless its file already holds that run."""
    from benchmarks.peers.score_samples import read_samples

    total, script = args.num * args.draws, FAMILIES[family][1]
    peer_minutes = round(args.peer_minutes or minutes, 3)
    peer_out = os.path.join(root, "peers", f"{family}.npz")
    done = num_images(peer_out) >= total and read_samples(peer_out)[1].get(
        "target_minutes") == peer_minutes  # fmt: skip
    if not done:
        _run([torch_python, os.path.join("benchmarks", "peers", "quality", script),
              f"--minutes={peer_minutes}", f"--num={total}", f"--out={peer_out}",
              f"--seed={args.seed}", f"--threads={args.threads}"],
             os.path.join(root, "logs", f"{family}_peer.log"))  # fmt: skip
    peer = read_samples(peer_out, total)[1]
    return ("pytorch", peer_out, dict(minutes=peer["train_minutes"], steps=peer["steps"],
                                      params=peer["params"], script=script,
                                      torch_version=peer.get("torch_version"),
                                      threads=peer.get("threads")))  # fmt: skip


def saved_peer_record(path: str, family: str, args: argparse.Namespace, minutes: float) -> dict:
    """The newest PyTorch record of ``family`` in ``path``, checked to have been scored as this
    run scores jaxgen (``num``, ``draws``, ``num_ref``, ``seed``) and trained for at least 99%
    of jaxgen's ``minutes``. Raises ValueError with a one-line reason otherwise."""
    peers = [r for r in newest_records(path, [family]) if r["implementation"] == "pytorch"]
    if not peers:
        raise ValueError(f"--peer-records={path}: no pytorch record of {family}")
    peer = peers[0]
    wanted = dict(num=args.num, draws=args.draws, num_ref=args.num_ref, seed=args.seed)
    found = {k: peer.get(k) for k in wanted}
    if found != wanted:
        raise ValueError(f"--peer-records={path}: the {family} peer was scored with {found}, "
                         f"this run scores {wanted}")  # fmt: skip
    if peer["minutes"] < 0.99 * minutes:
        raise ValueError(
            f"--peer-records={path}: the {family} peer trained {peer['minutes']:.2f} minutes, "
            f"jaxgen {minutes:.2f}; retrain the peer for equal minutes"
        )
    return peer


def main(argv=None) -> int:
    from benchmarks.common import hardware, write_record
    from benchmarks.peers.score_samples import (
        Scorer,
        held_out_images,
        read_samples,
        reference_images,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--root", default="runs/quality_peers")
    parser.add_argument("--preset", default="cpu", help="jaxgen's preset (smoke: a quick check)")
    parser.add_argument(
        "--launch-arg", action="append", default=[],
        help="an extra argument of jaxgen's launches (repeatable): --launch-arg=--config.seed=1",
    )  # fmt: skip
    parser.add_argument("--num", type=int, default=2000, help="samples per draw")
    parser.add_argument("--draws", type=int, default=3, help="independent draws per model")
    parser.add_argument("--num-ref", type=int, default=2000, help="test images of reference")
    parser.add_argument("--seed", type=int, default=0, help="peers' seed and the C2ST's")
    parser.add_argument("--extractors", default="domain,contrastive")
    parser.add_argument("--torch-python", default="", help="python with torch for the peers")
    parser.add_argument("--threads", type=int, default=0, help="peers' threads (0: all cores)")
    parser.add_argument("--peer-minutes", type=float, default=0.0, help="0: jaxgen's minutes")
    parser.add_argument(
        "--peer-records", default="",
        help="compare with the newest peer record of each family in this JSON lines file "
             "instead of training and scoring the peer",
    )  # fmt: skip
    parser.add_argument("--real-row", action=argparse.BooleanOptionalAction, default=True,
                        help="score held-out test images as a row of the table")  # fmt: skip
    parser.add_argument("--out", default="", help="JSON lines (default <root>/quality_table.jsonl)")
    parser.add_argument(
        "--table-from", default="",
        help="print the table of the newest records in this JSON lines file; run nothing",
    )  # fmt: skip
    args = parser.parse_args(argv)
    families = args.families.split(",")
    if args.draws < 1 or args.num < 1:
        parser.error(f"--num={args.num} and --draws={args.draws}: expected both >= 1")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"--families: unknown {unknown}; expected some of {list(FAMILIES)}")
    if args.table_from:
        if not os.path.isfile(args.table_from):
            parser.error(f"--table-from: no file {args.table_from}")
        records = newest_records(args.table_from, families)
        if not records:
            parser.error(
                f"--table-from: no quality_table record of {families} in {args.table_from}"
            )
        real = newest_real_record(args.table_from, records[0]) if args.real_row else None
        print_table(records, real)
        return 0
    if args.peer_records and not os.path.isfile(args.peer_records):
        parser.error(f"--peer-records: no file {args.peer_records}")
    root, py = os.path.abspath(args.root), sys.executable
    torch_python = "" if args.peer_records else args.torch_python or find_torch_python()
    info, records, total = hardware(), [], args.num * args.draws
    try:  # real images past the test set fail here, before anything trains
        held_out = held_out_images(args.num_ref, total) if args.real_row else None
    except ValueError as e:
        parser.error(f"--real-row: {e}")
    scorer = Scorer(reference_images(args.num_ref), args.extractors.split(","), args.seed)

    def scored(images: np.ndarray) -> dict:
        return summarize_draws([scorer.score(images[d * args.num : (d + 1) * args.num])
                                for d in range(args.draws)])  # fmt: skip

    def peer_record(family: str, minutes: float) -> dict:
        try:
            return saved_peer_record(args.peer_records, family, args, minutes)
        except ValueError as e:
            parser.error(str(e))  # one line, exit 2

    for family in families if args.peer_records else ():  # bad peer records fail before training
        peer_record(family, minutes=0.0)
    for family in families:
        config, script = FAMILIES[family]
        workdir, logs = os.path.join(root, family), os.path.join(root, "logs")
        config_arg = f"--config={config}:preset={args.preset}"
        if not finished(workdir):
            _run([py, "launch.py", config_arg, f"--workdir={workdir}", *args.launch_arg],
                 os.path.join(logs, f"{family}_train.log"))  # fmt: skip
        minutes, step = training_minutes(workdir)
        samples = os.path.join(workdir, "samples", f"samples_{step}.npz")
        if num_images(samples) < total:
            _run([py, "launch.py", config_arg, f"--workdir={workdir}", *args.launch_arg,
                  "--mode=sample", f"--config.sample.num={total}"],
                 os.path.join(logs, f"{family}_sample.log"))  # fmt: skip
        jaxgen_run = ("jaxgen", samples, dict(minutes=minutes, steps=step,
                      params=jaxgen_params(workdir, step), config=config_arg,
                      launch_args=list(args.launch_arg)))  # fmt: skip
        if args.peer_records:
            saved = peer_record(family, minutes)
            if saved.get("hardware") != info["hardware"]:
                # Minutes on another machine are not the same budget: say so, in the record too.
                jaxgen_run[2]["peer_hardware"] = saved.get("hardware")
                print(f"warning: the saved {family} peer was measured on {saved.get('hardware')}, "
                      f"jaxgen on {info['hardware']}: equal minutes are not an equal budget",
                      file=sys.stderr)  # fmt: skip
            runs = [jaxgen_run]
        else:
            runs, saved = [jaxgen_run, peer_run(family, minutes, args, root, torch_python)], None
        for implementation, path, fields in runs:
            record = dict(benchmark="quality_table", family=family, implementation=implementation,
                          file=path, num=args.num, num_ref=args.num_ref, seed=args.seed,
                          **fields, **scored(read_samples(path, total)[0]), **info)  # fmt: skip
            write_record(record, args.out or os.path.join(root, "quality_table.jsonl"))
            records.append(record)
        if saved is not None:
            records.append(saved)
    real = None
    if held_out is not None:
        real = dict(benchmark=REAL_BENCHMARK, family="real", num=args.num, num_ref=args.num_ref,
                    implementation=f"test images {args.num_ref}-{args.num_ref + total - 1}",
                    seed=args.seed, **scored(held_out), **info)  # fmt: skip
        write_record(real, args.out or os.path.join(root, "quality_table.jsonl"))
    print_table(records, real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
