"""benchmarks/guidance.py: the run's evaluators at each guidance scale and seed asked for."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import jaxgen
from benchmarks import guidance

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "old_checkpoints")


def _ddpm_run_with_params_eval(tmp_path) -> str:
    """A copy of the two-step smoke DDPM fixture whose training config has a ``params`` eval."""
    workdir = str(tmp_path / "ddpm")
    shutil.copytree(os.path.join(FIXTURE, "ddpm"), workdir)
    path = os.path.join(workdir, "launches.jsonl")
    entries = [json.loads(line) for line in open(path)]
    for entry in entries:
        entry["config"]["evals"] = {"params": {"type": "params", "every": 0}}
    with open(path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return workdir


def test_each_guidance_and_seed_is_evaluated_with_its_own_config(tmp_path, monkeypatch, capsys):
    workdir = _ddpm_run_with_params_eval(tmp_path)
    seen, real_load = [], jaxgen.load

    def load_and_record(path, **kwargs):
        seen.append((kwargs["config"].sample.guidance, kwargs["config"].seed))
        return real_load(path, **kwargs)

    monkeypatch.setattr(jaxgen, "load", load_and_record)
    out = tmp_path / "records.jsonl"
    args = [f"--workdir={workdir}", "--guidance=2,4.5", "--seeds=0,3", "--evals=params"]
    assert guidance.main([*args, f"--out={out}"]) == 0
    assert seen == [(2.0, 0), (2.0, 3), (4.5, 0), (4.5, 3)]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["guidance"], r["seed"]) for r in records] == seen
    params = {r["params"] for r in records}
    assert len(params) == 1 and params.pop() > 0
    assert all(r["benchmark"] == "guidance" and r["hardware"] for r in records)
    # nothing was written into the run directory
    assert not os.path.exists(os.path.join(workdir, "eval"))


def test_an_evaluator_the_run_lacks_is_a_one_line_error(tmp_path, capsys):
    workdir = _ddpm_run_with_params_eval(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        guidance.main([f"--workdir={workdir}", "--guidance=2", "--evals=prompts"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "evals=['prompts']" in err[-1] and "Traceback" not in "\n".join(err)
