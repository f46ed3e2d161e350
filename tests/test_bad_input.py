"""Bad input that used to slip past the launcher's checks: a damaged lock, stray words on the
command line, a file that is not a config, out-of-range seeds, unknown splits and kinds of
conditioning, a damaged ``data.json`` and a damaged data-iterator state.

Each refusal is one ``error:`` line with exit status 2 (``tests/conftest.assert_refused``)
and leaves the workdir as it was; the launches run in this process (``conftest.run_cli``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import ml_collections
import numpy as np
import pytest

from jaxgen.errors import UserError
from tests.conftest import REPO, assert_refused, load_config, run_cli, tree_digest

VAE = f"--config={REPO}/configs/vae.py:preset=smoke"


# --- 1. an empty, unreadable or malformed .jaxgen.lock --------------------------------------
DAMAGED_LOCKS = {
    "empty": b"",
    "not JSON": b"garbage",
    "a list": b"[1]",
    "pid not an int": json.dumps({"pid": "abc", "host": socket.gethostname()}).encode(),
    "pid a bool": json.dumps({"pid": True, "host": socket.gethostname()}).encode(),
    "no host": json.dumps({"pid": 1}).encode(),
}


def _lock_file(workdir, content: bytes, age: float = 0.0) -> str:
    from jaxgen.workdir_lock import LOCK_FILE

    path = os.path.join(workdir, LOCK_FILE)
    with open(path, "wb") as f:
        f.write(content)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("case", sorted(DAMAGED_LOCKS))
def test_damaged_lock_waits_a_short_grace_then_is_taken_over(case, tmp_path, caplog):
    from jaxgen.workdir_lock import UNREADABLE_GRACE_SECONDS, WorkdirLock

    path = _lock_file(tmp_path, DAMAGED_LOCKS[case])
    with pytest.raises(UserError) as refused:  # maybe being written right now: not stolen
        WorkdirLock(str(tmp_path), "train").acquire()
    text = str(refused.value)
    assert "empty or unreadable" in text and path in text, text
    assert "None" not in text, text
    with open(path, "rb") as f:
        assert f.read() == DAMAGED_LOCKS[case]
    _lock_file(tmp_path, DAMAGED_LOCKS[case], age=UNREADABLE_GRACE_SECONDS + 5)
    assert UNREADABLE_GRACE_SECONDS <= 30
    lock = WorkdirLock(str(tmp_path), "train")
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        lock.acquire()  # not the 600 s of a live holder's heartbeat
    try:
        with open(path) as f:
            assert json.load(f)["pid"] == os.getpid()
    finally:
        lock.release()
    assert "empty or unreadable" in caplog.text and "None" not in caplog.text


def test_damaged_lock_is_one_line_from_the_launcher(tmp_path, capfd):
    workdir = tmp_path / "run"
    workdir.mkdir()
    _lock_file(workdir, b"")
    before = tree_digest(str(workdir))
    result = run_cli(capfd, VAE, f"--workdir={workdir}")
    assert_refused(result, "empty or unreadable", ".jaxgen.lock")
    assert "None" not in result.lines[-1]
    assert tree_digest(str(workdir)) == before


# --- 2. words that are no flag ---------------------------------------------------------------
def test_stray_positional_word_is_refused(tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(capfd, VAE, f"--workdir={workdir}", "sample")
    assert_refused(result, "unexpected argument 'sample'", "--mode=sample")
    result = run_cli(capfd, "now", VAE, f"--workdir={workdir}", "--mode=train", "please")
    assert_refused(result, "unexpected arguments 'now' 'please'")
    assert not workdir.exists()


# --- 3. a --config that is not a Python config file ------------------------------------------
def test_config_that_is_not_python_is_one_line(tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(capfd, f"--config={REPO}/README.md", f"--workdir={workdir}")
    assert_refused(result, "README.md is not a Python config file", "get_config()")
    assert not workdir.exists()


# --- 4. seed -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "4294967296", "1" + "0" * 30])
def test_seed_out_of_range_is_refused_before_the_first_write(seed, tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(capfd, VAE, f"--workdir={workdir}", f"--config.seed={seed}")
    assert_refused(result, f"config key seed={seed}: expected an integer in [0, 2**32 - 1]")
    assert not workdir.exists()


def test_seed_bounds_are_accepted():
    from jaxgen.validate import check_config_values

    for seed in (0, 2**32 - 1):
        check_config_values(ml_collections.ConfigDict({"seed": seed}))


# --- 5. data.eval_split and data.cond ------------------------------------------------------------
def test_unknown_eval_split_is_refused_before_training(tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(capfd, VAE, f"--workdir={workdir}", "--config.data.eval_split=bogus")
    assert_refused(result, "config key data.eval_split='bogus'", "not 'bogus'")
    assert not workdir.exists()


def test_eval_split_is_checked_only_when_an_evaluator_reads_it():
    from jaxgen.validate import check_eval_split, eval_split_readers

    config = load_config("configs/vae.py:preset=smoke")
    config.data.eval_split = "bogus"
    assert eval_split_readers(config) == ["c2st", "diversity", "likelihood", "quality"]
    with pytest.raises(UserError, match="read by evals.c2st"):
        check_eval_split(config)
    for name in ("c2st", "diversity", "quality"):
        config.evals[name].split = "train"
    del config.evals["likelihood"]
    assert eval_split_readers(config) == []
    check_eval_split(config)  # classifier and params read no real images


def test_unknown_evaluator_split_option_is_refused_before_the_first_write(tmp_path, capfd):
    workdir = tmp_path / "new"
    gan = f"--config={REPO}/configs/gan.py:preset=smoke"
    result = run_cli(capfd, gan, f"--workdir={workdir}", "--config.evals.quality.split=test")
    assert_refused(result, "config key evals.quality:", "split='test'", "'eval' or 'train'")
    assert not workdir.exists()  # it used to be refused at the final evaluation


def test_classifier_eval_split_is_checked_for_the_export_script(tmp_path, capfd):
    """A classifier run reads its eval split only in scripts/export_classifier.py, after
    training; a split the data lack is refused before training all the same."""
    workdir = tmp_path / "new"
    classifier = f"--config={REPO}/configs/classifier.py:preset=smoke"
    result = run_cli(capfd, classifier, f"--workdir={workdir}", "--config.data.eval_split=bogus")
    assert_refused(result, "data.eval_split='bogus' (read by scripts/export_classifier.py)")
    assert not workdir.exists()


def test_bert_dir_without_the_bert_encoder_is_refused(tmp_path, capfd):
    workdir = tmp_path / "new"
    text_vae = f"--config={REPO}/configs/vae.py:preset=smoke,cond=text"
    result = run_cli(capfd, text_vae, f"--workdir={workdir}", f"--config.text.bert_dir={tmp_path}")
    assert_refused(result, "text.bert_dir=", "only used with text.encoder=bert, not 'transformer'")
    assert not workdir.exists()


def test_unknown_cond_is_refused_before_the_first_write(tmp_path, capfd):
    workdir = tmp_path / "new"
    result = run_cli(capfd, VAE, f"--workdir={workdir}", "--config.data.cond=bogus")
    assert_refused(result, "config key data.cond='bogus'", "'none', 'class', 'text'")
    assert not workdir.exists()


# --- 6. a damaged data.json --------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"garbage", b"[1]"])
def test_damaged_data_json_skips_the_changed_data_check_with_a_warning(content, tmp_path, caplog):
    from jaxgen.data.description import DATA_FILE, check_same_training_data

    path = tmp_path / DATA_FILE
    path.write_bytes(content)
    data = load_config("configs/vae.py:preset=smoke").data
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        check_same_training_data(str(tmp_path), data, {"train_examples": 3})
    assert str(path) in caplog.text and "check" in caplog.text and "skipped" in caplog.text
    assert path.read_bytes() == content


# --- 7. a damaged data-iterator state in a checkpoint -----------------------------------------
def _pipeline():
    from jaxgen.data.pipeline import Pipeline
    from jaxgen.data.sources import ArraySource

    images = np.arange(20 * 4 * 4, dtype=np.uint8).reshape(20, 4, 4, 1)
    return Pipeline(ArraySource(images, np.arange(20), ("a",)), 4, seed=0)


@pytest.mark.parametrize(
    "state",
    [{}, [1], {"next_index": "abc"}, {"next_index": -5}, {"next_index": 2.5},
     {"next_index": None}, {"next_index": 2**70}],
    ids=repr,
)  # fmt: skip
def test_malformed_iterator_state_names_the_checkpoint_file(state):
    from jaxgen.data.pipeline import check_iterator_state

    with pytest.raises(UserError) as e:
        check_iterator_state(state)  # what the trainer runs right after the restore
    text = str(e.value)
    assert "data/metadata" in text and "corrupt" in text and "\n" not in text, text


def test_valid_iterator_state_resumes_where_it_was():
    first = _pipeline()
    next(first)
    state = json.loads(json.dumps(first.get_state()))  # as the checkpoint reads it back
    expected = next(first)
    resumed = _pipeline()
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], expected["image"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A finished smoke VAE run (checkpoints 2 and 4)."""
    from jaxgen.cli import main

    workdir = str(tmp_path_factory.mktemp("bad_input") / "vae")
    assert main(["launch.py", VAE, f"--workdir={workdir}"]) == 0
    return workdir


@pytest.mark.parametrize("content", ["{}", '{"next_index": "abc"}', '{"next_index": -5}'])
def test_resume_from_a_malformed_iterator_state_is_one_line(content, trained, tmp_path, capfd):
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    newest = max(int(step) for step in os.listdir(os.path.join(workdir, "checkpoints")))
    metadata = os.path.join(workdir, "checkpoints", str(newest), "data", "metadata")
    assert os.path.isfile(metadata)
    with open(metadata, "w") as f:
        f.write(content)
    before = tree_digest(workdir)
    result = run_cli(capfd, VAE, f"--workdir={workdir}", "--config.train.num_steps=6")
    assert_refused(result, f"checkpoints/{newest}/data/metadata", "corrupt")
    assert tree_digest(workdir) == before  # refused before launches.jsonl or data.json


def test_launch_history_lines_that_are_no_launch_are_skipped(trained, tmp_path, capfd):
    """A line of ``launches.jsonl`` that is JSON but not an object, or not even UTF-8 (a
    damaged file), is skipped like a torn one, in every mode."""
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    with open(os.path.join(workdir, "launches.jsonl"), "ab") as f:
        f.write(b"123\n[1]\n\xc5\xff{garbage\n")  # was: a UnicodeDecodeError traceback
    sampled = run_cli(capfd, "--mode=sample", "--config.sample.num=2", f"--workdir={workdir}")
    assert sampled.code == 0, sampled.stderr[-3000:]
    resumed = run_cli(capfd, VAE, "--config.train.num_steps=6", f"--workdir={workdir}")
    assert resumed.code == 0, resumed.stderr[-3000:]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None])
def test_a_damaged_config_item_is_named_and_the_older_one_used(content, trained, tmp_path, caplog):
    """A checkpoint's config item that cannot be read, or is gone while an older checkpoint
    has one, is skipped for the previous checkpoint's, whose values may differ: the launch
    says so, once."""
    import shutil

    from jaxgen.workdir import start_warnings_afresh, trained_config

    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    item = os.path.join(workdir, "checkpoints", "4", "config", "metadata")
    assert os.path.isfile(item)
    if content is None:  # the item's folder removed: lost, since checkpoint 2 has one
        shutil.rmtree(os.path.dirname(item))
    else:
        with open(item, "w") as f:
            f.write(content)
    start_warnings_afresh()
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        for _ in range(2):  # a launch reads the config more than once
            assert trained_config(workdir)["family"] == "vae"
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert item in warnings[0] and "the one saved with checkpoint 2" in warnings[0]


def test_a_damaged_config_json_is_refused_with_the_way_out(trained, tmp_path, capfd):
    """``config.json`` that cannot be read is refused, naming it and what to do: moved away,
    the config saved with each checkpoint stands in."""
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    config_json = os.path.join(workdir, "config.json")
    with open(config_json, "wb") as f:
        f.write(b"\xf0\x9f{damaged")
    before = tree_digest(workdir)
    result = run_cli(capfd, "--mode=sample", "--config.sample.num=2", f"--workdir={workdir}")
    assert_refused(result, config_json, "move it away to use the config saved with the checkpoints")
    assert tree_digest(workdir) == before
    os.replace(config_json, tmp_path / "config.json.damaged")
    sampled = run_cli(capfd, "--mode=sample", "--config.sample.num=2", f"--workdir={workdir}")
    assert sampled.code == 0, sampled.stderr[-3000:]


def test_a_checkpoint_folder_holding_another_step_is_refused(trained, tmp_path, capfd):
    """``checkpoints/6`` copied by hand from ``checkpoints/2`` would resume at step 2 under
    the name 6 (and rotation would then delete the real step 4)."""
    import shutil

    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    shutil.copytree(os.path.join(checkpoints, "2"), os.path.join(checkpoints, "6"))
    before = tree_digest(workdir)
    result = run_cli(capfd, VAE, f"--workdir={workdir}", "--config.train.num_steps=8")
    assert_refused(result, "checkpoints/6 holds the state of step 2, not 6")
    assert tree_digest(workdir) == before


def test_a_damaged_evaluators_record_is_rewritten(tmp_path):
    """``eval/evaluators.json`` holding JSON that is no object (a damaged file) is replaced
    by the new entries instead of failing the final evaluation after training."""
    import types

    from jaxgen.evaluate.feature_cache import record

    path = tmp_path / "eval" / "evaluators.json"
    path.parent.mkdir()
    path.write_text("[1]")
    record(types.SimpleNamespace(workdir=str(tmp_path)), {"fd": {"num_samples": 16}})
    assert json.loads(path.read_text()) == {"fd": {"num_samples": 16}}


@pytest.mark.parametrize(
    "override", ["--config.optimizer.learning_rate=inf", "--config.model.beta=nan"]
)
def test_non_finite_numbers_are_refused_before_the_first_write(override, tmp_path, capfd):
    workdir = tmp_path / "run"
    assert_refused(run_cli(capfd, VAE, override, f"--workdir={workdir}"), "finite")
    assert not workdir.exists()


@pytest.mark.parametrize(
    "override",
    [
        "--config.model.channels=abc",
        "--config.model.channels=(0,16)",
        "--config.model.channels=()",
        "--config.model.latent_dim=0",
        "--config.model.latent_channels=-1",
    ],
)
def test_bad_model_sizes_are_refused_before_the_network_is_built(override, tmp_path, capfd):
    """They used to fail inside the network's construction, as a traceback."""
    workdir = tmp_path / "run"
    key = override.split("=")[0].removeprefix("--config.")
    assert_refused(run_cli(capfd, VAE, override, f"--workdir={workdir}"), key, "integers >=")
    assert not workdir.exists()


# Found by setting every number of the smoke configs to -1: a traceback, a crash after the
# first write, or a nonsense value trained without a word.
OUT_OF_RANGE = [
    ("vae", "model.iwae_k=-1", "integers >= 1"),  # was: math domain error
    ("gan", "gan.g_batch_size=-1", ">= 0"),  # was: a reshape error
    ("gan", "gan.gp_weight=-1", ">= 0"),  # was: trained
    ("gan", "gan.r1_every=0", ">= 1"),
    ("gan", "evals.quality.kid_subset_size=-1", ">= 1"),  # was: negative dimensions
    ("pixelcnn", "model.num_levels=-1", "integers >= 1"),  # was: KeyError 'cache'
    ("pixelcnn", "model.num_mixtures=-1", "integers >= 1"),
    ("pixelcnn", "model.dropout=-1", "[0, 1)"),  # was: trained
    ("ddpm", "model.diffusion.sigma_min=-1", "> 0"),  # was: trained
    ("ddpm", "model.diffusion.sigma_min=100", "< model.diffusion.sigma_max=80"),
    ("clip", "text.num_heads=-1", "integers >= 1"),  # was: a reshape error
    ("clip", "model.init_temperature=-1", "> 0"),  # was: a non-finite loss at step 1
    ("style_transfer", "optimizer.b1=-1", "[0, 1)"),  # style transfer checked no shared key
    ("style_transfer", "seed=-1", "[0, 2**32 - 1]"),
]


@pytest.mark.parametrize("family, override, expected", OUT_OF_RANGE)
def test_out_of_range_numbers_are_refused_before_the_first_write(
    family, override, expected, tmp_path, capfd
):
    workdir = tmp_path / "run"
    config = f"--config={REPO}/configs/{family}.py:preset=smoke"
    result = run_cli(capfd, config, f"--config.{override}", f"--workdir={workdir}")
    assert_refused(result, f"config key {override.split('=')[0]}=", expected)
    assert not workdir.exists()


@pytest.mark.parametrize("override", ["data.name=fashion_mnist", "data.cond=class"])
def test_style_transfer_refuses_a_dataset_it_would_not_read(override, tmp_path, capfd):
    """Its images are style.content and style.style; a dataset asked for is refused, not
    ignored."""
    workdir = tmp_path / "run"
    config = f"--config={REPO}/configs/style_transfer.py:preset=smoke"
    result = run_cli(capfd, config, f"--config.{override}", f"--workdir={workdir}")
    assert_refused(result, f"config key {override.split('=')[0]}=", "reads no dataset")
    assert not workdir.exists()


def test_every_published_and_preset_config_passes_the_value_checks():
    """The sizes and ranges that are refused are outside every config the repository ships."""
    from jaxgen.validate import check_config_values

    checked = 0
    families = ("vae", "gan", "ddpm", "pixelcnn", "flow", "tokens", "classifier", "clip",
                "style_transfer")  # fmt: skip
    args = ("", "preset=smoke", "preset=cpu", "preset=cpu,backbone=dit", "preset=cpu,cond=class",
            "preset=cpu,cond=text", "preset=cpu,edm=true")  # fmt: skip
    for family in families:
        for arg in args:
            try:
                config = load_config(f"configs/{family}.py" + (f":{arg}" if arg else ""))
            except UserError:
                continue  # an argument this family does not take
            check_config_values(config)
            checked += 1
    assert checked >= 35, checked


def test_overriding_the_family_is_refused(tmp_path, capfd):
    """``--config.family=gan`` on a VAE config kept the VAE's sections and failed in the
    GAN's construction, as a traceback."""
    workdir = tmp_path / "run"
    result = run_cli(capfd, VAE, "--config.family=gan", f"--workdir={workdir}")
    assert_refused(result, "family='gan'", "configs/<family>.py")
    assert not workdir.exists()


def test_a_key_added_since_the_run_was_trained_says_how_to_set_it(trained, capfd, monkeypatch):
    """Sampling a run with --workdir alone and an override its saved config predates: the
    refusal says the key is new and how to give it, and writes nothing. A key that today's
    config file lacks too stays a plain unknown key."""
    from jaxgen import saved_config

    def trained_before_the_key(workdir):  # as if the run predated sample.sampler
        config = trained_config(workdir)
        del config["sample"]["sampler"]
        return config

    trained_config = saved_config.trained_config
    monkeypatch.setattr(saved_config, "trained_config", trained_before_the_key)
    before = tree_digest(trained)
    result = run_cli(capfd, f"--workdir={trained}", "--mode=sample", "--config.sample.sampler=gmm")
    assert_refused(
        result,
        "unknown config key 'sample.sampler' (--config.sample.sampler) in the config this run",
        "configs/vae.py added it since; to set it, pass --config=configs/vae.py[:args]",
    )
    result = run_cli(capfd, f"--workdir={trained}", "--mode=sample", "--config.sample.bogus=1")
    assert_refused(result, "unknown config key 'sample.bogus' (--config.sample.bogus)")
    assert "added it since" not in result.stderr
    assert tree_digest(trained) == before
