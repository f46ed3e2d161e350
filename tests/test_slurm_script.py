"""The SLURM script keeps every user value literal: shell-quoted where bash reads it,
sbatch-quoted in ``#SBATCH`` lines, and line breaks refused."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from experiments import slurm, sweep
from experiments.spec import Run, Sweep
from jaxgen.errors import UserError

SWEEP_FILE = """
from experiments.spec import Run, ref, sampling_variant

NASTY = {nasty!r}


def get_sweep(arg=None):
    src = Run("src", "configs/vae.py", args={{"beta": 2.0}}, overrides={{"init_from": NASTY}})
    ft = Run("ft", "configs/vae.py", overrides={{"init_from": ref("src")}})
    return [src, ft, sampling_variant(src, "src_n4", num=4)]
"""


def _nasty(canary) -> str:
    """Text that runs ``touch <canary>`` wherever a shell reads it unquoted or double-quoted."""
    return f"a b'c\"d $(touch {canary}) `touch {canary}`; touch {canary} & #e %A \\x"


@pytest.fixture
def setup(tmp_path):
    canary = tmp_path / "canary"
    path = tmp_path / "nasty sweep.py"
    path.write_text(SWEEP_FILE.format(nasty=_nasty(canary)))
    root = str(tmp_path / f"ro ot %j 'q' \"dq\" ;$(touch {canary}) #x")
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "python"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    return {
        "canary": canary,
        "sweep_spec": f"{path}:x y;$(touch {canary})'\"#",
        "root": root,
        "stub": str(stub),
        "script": str(tmp_path / "run.sbatch"),
    }


def _write(setup, *extra):
    argv = [setup["sweep_spec"], "--root", setup["root"], "--preset", "full"]
    argv += ["--slurm", setup["script"], *extra]
    assert sweep.main(argv) == 0
    return open(setup["script"]).read()


PREFIX = "env 'JAXGEN_X=a b;$(false)'"


def test_array_tasks_pass_every_value_literally(setup):
    _write(setup, f"--launcher-prefix={PREFIX}")
    assert subprocess.run(["bash", "-n", setup["script"]]).returncode == 0
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", PYTHON=setup["stub"])
    proc = subprocess.run(["bash", setup["script"]], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        "-m", "experiments.sweep", setup["sweep_spec"], "--root", setup["root"],
        "--preset", "full", "--only", "src,ft,src_n4", f"--launcher-prefix={PREFIX}",
    ]  # fmt: skip
    assert not setup["canary"].exists()


def test_commented_commands_run_as_the_launcher_argv(setup):
    """Each ``#   <command>`` line, pasted into bash, gives the launcher exactly its argv."""
    text = _write(setup, f"--launcher-prefix={PREFIX}")
    commands = [
        line.strip()[len("#   ") :] for line in text.splitlines() if "launch.py" in line
    ]  # fmt: skip
    loaded = sweep.load_sweep(setup["sweep_spec"])
    prefix = tuple(shlex.split(PREFIX))
    root = os.path.abspath(setup["root"])
    expected = [
        sweep.command(run, root, "full", stage, prefix)[len(prefix) + 1 :]
        for run in loaded.runs
        for stage in sweep.stages_of(run)
    ]
    assert len(commands) == len(expected) == 8
    env = dict(os.environ, PATH=os.path.dirname(setup["stub"]) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(
        ["bash", "-c", "\n".join(commands)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == expected
    assert f"--config.init_from={_nasty(setup['canary'])}" in expected[0]
    assert not setup["canary"].exists()


def _sbatch_argv(line: str, old: bool) -> list[str]:
    """How sbatch splits an ``#SBATCH`` line: Slurm's ``_get_argument`` (src/sbatch/opt.c);
    ``old`` versions know only double quotes and stop at any ``#`` not escaped."""
    rest, argv = line[len("#SBATCH") :], []
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i].isspace():
            i += 1
        if i == len(rest):
            break
        word, quote, escape = "", "", False
        while i < len(rest) and (quote or not rest[i].isspace()):
            c = rest[i]
            i += 1
            if escape:
                escape = False
            elif c == "\\":
                escape = True
                continue
            elif quote and c == quote:
                quote = ""
                continue
            elif not quote and c in ('"' if old else "\"'"):
                quote = c
                continue
            elif c == "#" and (old or not quote):
                return argv + ([word] if word else [])
            word += c
        assert not quote, f"unmatched quote in {line!r}"
        argv.append(word)
    return argv


@pytest.mark.parametrize("old", [False, True])
def test_sbatch_lines_parse_to_the_literal_values(setup, old):
    text = _write(
        setup,
        "--sbatch=--gres=gpu:1",
        "--sbatch=--comment='two words # \"not\" a comment'",
        "--sbatch=-p gpu",
    )
    argv = [
        a
        for line in text.splitlines()
        if line.startswith("#SBATCH")
        for a in _sbatch_argv(line, old)
    ]
    root = os.path.abspath(setup["root"])
    assert argv == [
        "--job-name=jaxgen-nasty sweep",
        "--array=0-0",
        f"--output={root.replace('%', '%%')}/_slurm/%A_%a.out",
        "--ntasks=1",
        "--gres=gpu:1",
        '--comment=two words # "not" a comment',
        "-p",
        "gpu",
    ]
    assert "#SBATCH --gres=gpu:1" in text.splitlines()  # plain values stay plain


def _one_run_sweep(**run) -> Sweep:
    fields = {"name": "r1", "config": "configs/vae.py", **run}
    return Sweep(name="s", path="s.py", arg="", runs=(Run(**fields),))


@pytest.mark.parametrize(
    "sweep_obj, kwargs, words",
    [
        (_one_run_sweep(overrides={"init_from": "x\ntouch pwned"}), {}, ["'r1'", "init_from"]),
        (_one_run_sweep(overrides={"sample.num": ("a", "b\r")}), {}, ["'r1'", "sample.num"]),
        (_one_run_sweep(args={"data": "mnist\0"}), {}, ["'r1'", "'data'"]),
        (_one_run_sweep(), {"root": "/tmp/a\nb"}, ["--root"]),
        (_one_run_sweep(), {"sweep_spec": "s.py:a\nb"}, ["sweep argument"]),
        (_one_run_sweep(), {"sbatch": ["--time=1", "--comment=a\nb"]}, ["--sbatch #2"]),
        (_one_run_sweep(), {"prefix": ("srun", "a\nb")}, ["--launcher-prefix"]),
        (_one_run_sweep(), {"root": "/tmp/a\\b"}, ["--root", "backslash"]),
        (_one_run_sweep(), {"sbatch": ["--comment='open"]}, ["--sbatch"]),
    ],
)
def test_unwritable_values_are_refused(sweep_obj, kwargs, words):
    args = {"sweep_spec": "s.py", "root": "/tmp/root", "preset": "full", **kwargs}
    with pytest.raises(UserError) as e:
        slurm.slurm_script(sweep_obj, **args)
    message = str(e.value)
    assert "\n" not in message and "\r" not in message
    for word in words:
        assert word in message


def test_newline_in_a_value_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(SWEEP_FILE.format(nasty="ok\necho pwned"))
    script = tmp_path / "bad.sbatch"
    argv = [str(path), "--root", str(tmp_path / "root"), "--slurm", str(script)]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "'src'" in err[0] and "init_from" in err[0]
    assert not script.exists()
