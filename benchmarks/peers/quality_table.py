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
   of each metric and its standard deviation (``<metric>_std``).

Prints one JSON record per family and implementation (with the hardware, appended to ``--out``,
default ``<root>/quality_table.jsonl``), then a Markdown table and, per family, the metrics on
which jaxgen is ahead of its peer by more than twice the standard error of the difference
(:func:`comparison`), level with it, or behind. The logs of every launch are in
``<root>/logs``. Train on an otherwise idle machine: the minutes are wall clock.

  python benchmarks/peers/quality_table.py --table-from=benchmarks/results/quality_peers_cpu.jsonl

prints the same table from records already written (the newest of each family and
implementation), training and scoring nothing.

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

# family -> (jaxgen config, peer script in benchmarks/peers/quality)
FAMILIES = {
    "vae": ("configs/vae.py", "vae.py"),
    "gan": ("configs/gan.py", "dcgan.py"),
    "ddpm": ("configs/ddpm.py", "ddpm.py"),
    "pixelcnn": ("configs/pixelcnn.py", "pixelcnn.py"),
}
# Table columns: (label, metric key prefix); each cell shows domain / contrastive.
COLUMNS = (("FD", "fd"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
           ("density", "density"), ("coverage", "coverage"), ("C2ST acc.", "c2st_accuracy"),
           ("broken share", "broken_share"))  # fmt: skip


def _json_objects(path: str) -> list[dict]:
    """The JSON objects of the lines of ``path`` ([] when absent); a line that is not one
    (the torn last line of a killed writer) is skipped."""
    if not os.path.isfile(path):
        return []
    objects = []
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
    return objects


def _rows(path: str) -> list[dict]:
    return [row for row in _json_objects(path) if isinstance(row.get("step"), int)]


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


# Metric key prefixes where a lower value is better; higher is better for the others.
LOWER_IS_BETTER = frozenset({"fd", "kid", "c2st_accuracy", "broken_share"})
FEATURES = ("domain", "contrastive")
# A lead counts when the difference of the means exceeds this many standard errors of it.
CLEAR_LEAD_SE = 2.0


def metric_keys() -> list[str]:
    """``<metric>_<features>`` of every column of :data:`COLUMNS`, in table order."""
    return [f"{metric}_{features}" for _, metric in COLUMNS for features in FEATURES]


def summarize_draws(scores: list[dict[str, float]]) -> dict:
    """One record's metric fields from the scores of its draws (independent sample sets of
    equal size): ``<key>`` the mean over draws, ``<key>_std`` their sample standard deviation
    (``ddof=1``; only with two draws or more), ``draws`` the count and ``draw_scores`` the
    scores themselves."""
    out: dict = {"draws": len(scores), "draw_scores": scores}
    for key in scores[0]:
        values = np.asarray([s[key] for s in scores], np.float64)
        out[key] = float(values.mean())
        if len(values) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
    return out


def _standard_error(record: dict, key: str) -> float:
    """Standard error of ``record``'s mean of ``key`` (0 for a single draw)."""
    std = record.get(f"{key}_std")
    return 0.0 if std is None else std / np.sqrt(record.get("draws") or 1)


def comparison(jaxgen: dict, peer: dict) -> tuple[list[str], list[str], list[str]]:
    """``(ahead, level, behind)``: the ``<metric>_<features>`` keys of :data:`COLUMNS` both
    records have, split by whether jaxgen's mean is better than the peer's by more than
    :data:`CLEAR_LEAD_SE` standard errors of the difference, within that, or worse by more.
    Records of a single draw have no spread: there any difference decides and only an exact
    tie is level."""
    ahead, level, behind = [], [], []
    for key in metric_keys():
        if key not in jaxgen or key not in peer:
            continue
        gain = jaxgen[key] - peer[key]
        if key.rsplit("_", 1)[0] in LOWER_IS_BETTER:
            gain = -gain
        margin = CLEAR_LEAD_SE * float(np.hypot(_standard_error(jaxgen, key),
                                                _standard_error(peer, key)))  # fmt: skip
        if gain > margin:
            ahead.append(key)
        elif gain < -margin:
            behind.append(key)
        else:
            level.append(key)
    return ahead, level, behind


def newest_records(path: str, families: list[str]) -> list[dict]:
    """The last ``quality_table`` record of each (family, implementation) in the JSON lines
    file ``path``, ordered as ``families`` and then jaxgen before its peer."""
    latest = {}
    for record in _json_objects(path):
        if record.get("benchmark") == "quality_table":
            latest[record["family"], record["implementation"]] = record
    order = {"jaxgen": 0}
    keys = sorted((k for k in latest if k[0] in families),
                  key=lambda k: (families.index(k[0]), order.get(k[1], 1), k[1]))  # fmt: skip
    return [latest[k] for k in keys]


def summary_lines(records: list[dict]) -> list[str]:
    """One line per family with a jaxgen and a ``pytorch`` record: how many metrics jaxgen
    leads on clearly (:func:`comparison`), and the ones where it is level or behind."""
    by_key = {(r["family"], r["implementation"]): r for r in records}
    lines = []
    for family in dict.fromkeys(r["family"] for r in records):
        jaxgen, peer = by_key.get((family, "jaxgen")), by_key.get((family, "pytorch"))
        if jaxgen is None or peer is None:
            continue
        ahead, level, behind = comparison(jaxgen, peer)
        total = len(ahead) + len(level) + len(behind)
        line = f"{family}: jaxgen ahead on {len(ahead)} of {total}"
        if level:
            line += f"; level (within {CLEAR_LEAD_SE:g} standard errors) on {', '.join(level)}"
        lines.append(line + (f"; behind on {', '.join(behind)}" if behind else ""))
    return lines


def print_table(records: list[dict]) -> None:
    first = records[0]
    draws = max(int(r.get("draws") or 1) for r in records)
    spread = (f"; each cell the mean over {draws} independent draws ± their standard deviation"
              if draws > 1 else "")  # fmt: skip
    machines = list(dict.fromkeys(r.get("hardware", "unknown hardware") for r in records))
    where = machines[0] if len(machines) == 1 else (
        " and ".join(machines) + " (each record's hardware says which)")  # fmt: skip
    print(f"\n{where}; {first.get('num')} samples per draw "
          f"against the first {first.get('num_ref')} Fashion-MNIST test images; each metric: "
          f"domain / contrastive features{spread}\n")  # fmt: skip
    print(markdown_table(records))
    print("\n" + "\n".join(summary_lines(records)))


def _value(record: dict, key: str) -> str:
    value, std = record.get(key), record.get(f"{key}_std")
    if value is None:
        return "-"
    return f"{value:.3g}" if std is None else f"{value:.3g}±{std:.1g}"


def _cell(record: dict, key: str) -> str:
    return " / ".join(_value(record, f"{key}_{x}") for x in FEATURES)


def markdown_table(records: list[dict]) -> str:
    """One row per record: family, implementation, minutes, steps, params, and each metric of
    :data:`COLUMNS` as ``domain / contrastive`` (``mean±std`` over draws when it has several)."""
    head = ["family", "implementation", "minutes", "steps", "params"] + [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in records:
        params = "-" if r.get("params") is None else f"{r['params']:,}"
        cells = [r["family"], r["implementation"], f"{r['minutes']:.2f}", str(r["steps"]), params]
        lines.append("| " + " | ".join(cells + [_cell(r, key) for _, key in COLUMNS]) + " |")
    return "\n".join(lines)


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
    from benchmarks.peers.score_samples import Scorer, read_samples, reference_images

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
        print_table(records)
        return 0
    if args.peer_records and not os.path.isfile(args.peer_records):
        parser.error(f"--peer-records: no file {args.peer_records}")
    root, py = os.path.abspath(args.root), sys.executable
    torch_python = "" if args.peer_records else args.torch_python or find_torch_python()
    scorer = Scorer(reference_images(args.num_ref), args.extractors.split(","), args.seed)
    info, records, total = hardware(), [], args.num * args.draws

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
                      params=jaxgen_params(workdir, step), config=config_arg))  # fmt: skip
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
            images = read_samples(path, total)[0]
            scores = [scorer.score(images[d * args.num : (d + 1) * args.num])
                      for d in range(args.draws)]  # fmt: skip
            record = dict(benchmark="quality_table", family=family, implementation=implementation,
                          file=path, num=args.num, num_ref=args.num_ref, seed=args.seed,
                          **fields, **summarize_draws(scores), **info)  # fmt: skip
            write_record(record, args.out or os.path.join(root, "quality_table.jsonl"))
            records.append(record)
        if saved is not None:
            records.append(saved)
    print_table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
