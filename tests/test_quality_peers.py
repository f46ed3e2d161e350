"""The PyTorch quality peers write jaxgen's sample layout; the scorer and the table's parts.

The peer tests need torch and skip without it; the others need only jax.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from benchmarks.peers import quality_table, score_samples
from benchmarks.peers import records as peer_records

PEERS = ("vae", "dcgan", "ddpm", "pixelcnn")


@pytest.mark.parametrize("name", PEERS)
def test_peer_trains_and_writes_samples_in_jaxgen_layout(name, tmp_path, torch_one_thread, capsys):
    module = importlib.import_module(f"benchmarks.peers.quality.{name}")
    out = tmp_path / f"{name}.npz"
    argv = ["--minutes=0.002", "--num=3", f"--out={out}", "--threads=1", "--seed=1"]
    assert module.main(argv) == 0
    with np.load(out) as f:
        images, fields = f["images"], {k: f[k].item() for k in f.files if k != "images"}
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28, 1)
    assert images.std() > 0  # drawn, not a constant fill
    assert fields["steps"] >= 1 and fields["params"] > 10_000
    assert fields["train_minutes"] >= fields["target_minutes"] == pytest.approx(0.002)
    assert fields["threads"] == 1 and fields["torch_version"] == torch_one_thread.__version__
    assert f"{fields['steps']} steps" in capsys.readouterr().out
    assert score_samples.read_samples(str(out))[0].shape == (3, 28, 28, 1)


def test_pixelcnn_sampler_is_causal_and_reproduces_the_forward_pass(torch_one_thread):
    """Fed the pixels of an image, the row-by-row sampler computes the full network's logits;
    the logits of a pixel do not depend on it or on any later pixel."""
    torch = torch_one_thread
    from benchmarks.peers.quality.pixelcnn import GatedPixelCNN

    torch.manual_seed(0)
    model = GatedPixelCNN(features=8, layers=2, head=8).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randint(0, 256, (2, 1, 8, 8)).float() / 255.0
    images, logits = model.generate(2, size=8, given=x)
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(images, x)
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        changed = x.clone()
        changed[:, :, 3, 4] = 1.0 - changed[:, :, 3, 4]
        diff = (model(changed) - full).abs().amax(dim=(0, 1)).flatten()  # [64], raster order
    position = 3 * 8 + 4
    assert diff[: position + 1].max() == 0  # earlier pixels and the pixel itself
    assert diff[position + 1] > 0 and diff[position + 8] > 0  # its right and lower neighbours


def test_score_samples_ranks_held_out_images_ahead_of_noise(tmp_path, capsys):
    from jaxgen.data.sources import fashion_mnist

    held_out = np.asarray(fashion_mnist("test").images)[200:300]  # after the 200 reference ones
    noise = np.random.default_rng(0).integers(0, 256, held_out.shape, dtype=np.uint8)
    np.savez(tmp_path / "real.npz", images=held_out, steps=7, train_minutes=1.5)
    np.savez(tmp_path / "noise.npz", images=noise)
    files = [str(tmp_path / "real.npz"), str(tmp_path / "noise.npz")]
    assert score_samples.main([*files, "--num-ref=200", "--num=80"]) == 0
    real, rand = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (real["num"], real["num_ref"], real["steps"], real["train_minutes"]) == (80, 200, 7, 1.5)
    assert "steps" not in rand and "hardware" in rand
    for x in ("domain", "contrastive"):
        assert real[f"fd_{x}"] < rand[f"fd_{x}"] / 10
        assert real[f"broken_share_{x}"] < 0.2 < 0.8 < rand[f"broken_share_{x}"]
        assert real[f"c2st_accuracy_{x}"] < 0.7 < 0.95 < rand[f"c2st_accuracy_{x}"]
        assert real[f"precision_{x}"] > rand[f"precision_{x}"]
        assert real[f"density_{x}"] > 0.7 > 0.5 > rand[f"density_{x}"]


def test_score_samples_rejects_another_layout(tmp_path, capsys):
    np.savez(tmp_path / "float.npz", images=np.zeros((4, 28, 28, 1), np.float32))
    with pytest.raises(SystemExit) as exit_info:
        score_samples.main([str(tmp_path / "float.npz")])
    assert exit_info.value.code == 2
    assert "expected uint8 [N, 28, 28, 1]" in capsys.readouterr().err


def test_training_minutes_add_up_the_logged_windows(tmp_path):
    rows = [
        {"step": 100, "loss": 1.0, "steps_per_sec": 2.0},  # 50 s
        {"step": 300, "loss": 0.5, "steps_per_sec": 4.0},  # 50 s
        {"step": 300, "fd": 12.0},  # an evaluation row: no rate
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 400, "steps_per'  # torn
    (tmp_path / "metrics.jsonl").write_text(text)
    assert quality_table.training_minutes(str(tmp_path)) == (pytest.approx(100 / 60), 300)
    assert not quality_table.finished(str(tmp_path))  # no config.json
    config = {"train": {"num_steps": 300}, "evals": {"params": {"type": "params"}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not quality_table.finished(str(tmp_path))  # the final evaluation is missing
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step_300.json").write_text(json.dumps({"params": 1234}))
    assert quality_table.finished(str(tmp_path))
    assert quality_table.jaxgen_params(str(tmp_path), 300) == 1234
    config["train"]["num_steps"] = 400
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not quality_table.finished(str(tmp_path))


def test_markdown_table_shows_both_feature_spaces():
    scores = {f"{m}_{x}": v for m, v in (("fd", 12.345), ("kid", 0.5), ("precision", 0.75),
              ("recall", 0.25), ("density", 1.0625), ("coverage", 0.5), ("c2st_accuracy", 0.875),
              ("broken_share", 0.125)) for x in ("domain", "contrastive")}  # fmt: skip
    scores["fd_contrastive"] = 0.0123
    record = dict(family="vae", implementation="pytorch", minutes=9.98, steps=1234,
                  params=1688289, **scores)  # fmt: skip
    lines = peer_records.markdown_table([record]).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|") == 14
    assert lines[2] == (
        "| vae | pytorch | 9.98 | 1234 | 1,688,289 | 12.3 / 0.0123 | 0.5 / 0.5 | 0.75 / 0.75 | "
        "0.25 / 0.25 | 1.06 / 1.06 | 0.5 / 0.5 | 0.875 / 0.875 | 0.125 / 0.125 |"
    )


def _record(family, implementation, **scores):
    names = ("fd", "kid", "precision", "recall", "density", "coverage", "c2st_accuracy",
             "broken_share")  # fmt: skip
    metrics = {f"{m}_{x}": 0.5 for m in names for x in ("domain", "contrastive")}
    metrics.update(scores)
    fields = dict(minutes=1.0, steps=10, params=100, num=16, num_ref=32, hardware="cpu")
    return dict(benchmark="quality_table", family=family, implementation=implementation,
                **fields, **metrics)  # fmt: skip


def test_comparison_knows_which_direction_is_better():
    peer = _record("gan", "pytorch")
    jaxgen = _record("gan", "jaxgen", fd_domain=0.4, recall_domain=0.6, precision_contrastive=0.4,
                     density_domain=0.6, coverage_contrastive=0.4,
                     broken_share_domain=0.7)  # fmt: skip
    ahead, level, behind = peer_records.comparison(jaxgen, peer)
    assert ahead == ["fd_domain", "recall_domain", "density_domain"]
    assert behind == ["precision_contrastive", "coverage_contrastive", "broken_share_domain"]
    # single draws have no spread: only an exact tie is level
    assert level[:2] == ["fd_contrastive", "kid_domain"] and len(level) == 10
    # records from before a metric existed are compared on the metrics both have
    del jaxgen["density_domain"], peer["density_domain"]
    assert len(sum(peer_records.comparison(jaxgen, peer), [])) == 15


def test_summarize_draws_gives_mean_and_sample_std():
    scores = [{"fd_domain": v, "recall_domain": 1.0 - v / 10} for v in (1.0, 2.0, 6.0)]
    record = peer_records.summarize_draws(scores)
    assert record["draws"] == 3 and record["draw_scores"] == scores
    assert record["fd_domain"] == pytest.approx(3.0)
    assert record["fd_domain_std"] == pytest.approx(np.sqrt(((2**2) + 1 + 9) / 2))
    assert record["recall_domain_std"] == pytest.approx(record["fd_domain_std"] / 10)
    single = peer_records.summarize_draws(scores[:1])
    assert single["fd_domain"] == 1.0 and "fd_domain_std" not in single


def test_comparison_counts_only_leads_beyond_the_draws_noise():
    """A lead of 0.01 is clear against a spread of 0.004 over 4 draws (standard error of the
    difference 0.0028), level against a spread of 0.01 (0.0071); a deficit likewise."""
    offsets = np.array([-1.5, -0.5, 0.5, 1.5])
    offsets /= offsets.std(ddof=1)

    def summarized(recall, std):
        return peer_records.summarize_draws([{"recall_domain": recall + std * d} for d in offsets])

    clear = summarized(0.81, 0.004), summarized(0.80, 0.004)
    assert peer_records.comparison(*clear) == (["recall_domain"], [], [])
    assert peer_records.comparison(*clear[::-1]) == ([], [], ["recall_domain"])
    noisy = summarized(0.81, 0.01), summarized(0.80, 0.01)
    assert peer_records.comparison(*noisy) == ([], ["recall_domain"], [])
    assert peer_records.comparison(*noisy[::-1]) == ([], ["recall_domain"], [])
    row = dict(family="ddpm", implementation="jaxgen", minutes=1.0, steps=3, params=None)
    assert "| 0.81±0.004 / - |" in peer_records.markdown_table([{**row, **clear[0]}])


def test_table_from_records_takes_the_newest_of_each_and_counts_the_leads(tmp_path, capsys):
    old = _record("gan", "jaxgen", fd_domain=0.9)
    new = _record("gan", "jaxgen", **{k: 0.4 for k in ("fd_domain", "fd_contrastive")})
    peer = _record("gan", "pytorch")
    other = _record("vae", "jaxgen", fd_domain=0.1)
    path = tmp_path / "records.jsonl"
    lines = [json.dumps(r) for r in (old, peer, other, new)] + ['{"torn']
    path.write_text("\n".join(lines) + "\n")
    records = peer_records.newest_records(str(path), ["vae", "gan"])
    assert [(r["family"], r["implementation"]) for r in records] == [
        ("vae", "jaxgen"), ("gan", "jaxgen"), ("gan", "pytorch")]  # fmt: skip
    assert records[1]["fd_domain"] == 0.4
    assert quality_table.main([f"--table-from={path}", "--families=gan"]) == 0
    out = capsys.readouterr().out
    assert "| gan | jaxgen |" in out and "| vae |" not in out
    names = ("kid", "precision", "recall", "density", "coverage", "c2st_accuracy",
             "broken_share")  # fmt: skip
    assert out.strip().splitlines()[-1] == (
        "gan: jaxgen ahead on 2 of 16; level (within 2 standard errors) on "
        + ", ".join(f"{m}_{x}" for m in names for x in ("domain", "contrastive"))
    )


def _finished_vae_run(root) -> np.ndarray:
    """A finished run in ``root/vae`` (300 steps in one minute, 1234 parameters) whose samples
    file holds two draws of 40: held-out test images, then uniform noise; returns them."""
    from jaxgen.data.sources import fashion_mnist

    held_out = np.asarray(fashion_mnist("test").images)[200:240]
    noise = np.random.default_rng(0).integers(0, 256, held_out.shape, dtype=np.uint8)
    draws = np.concatenate([held_out, noise])
    run = root / "vae"
    (run / "eval").mkdir(parents=True)
    (run / "samples").mkdir()
    config = {"train": {"num_steps": 300}, "evals": {"params": {"type": "params"}}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 300, "steps_per_sec": 5.0}) + "\n")
    (run / "eval" / "step_300.json").write_text(json.dumps({"params": 1234}))
    np.savez(run / "samples" / "samples_300.npz", images=draws)
    return draws


def test_table_scores_each_draw_of_finished_runs_without_launching(tmp_path, capsys):
    """A finished jaxgen run and a peer file for its minutes are scored as they are: each
    holds two draws of 40 (held-out test images, then uniform noise), and the record keeps
    both draws' scores, their mean and their spread."""
    draws = _finished_vae_run(tmp_path)
    (tmp_path / "peers").mkdir()
    np.savez(tmp_path / "peers" / "vae.npz", images=draws[::-1], train_minutes=1.0,
             target_minutes=1.0, steps=7, params=99)  # fmt: skip
    out = tmp_path / "records.jsonl"
    argv = ["--families=vae", f"--root={tmp_path}", "--num=40", "--draws=2", "--num-ref=200",
            "--torch-python=/nonexistent/python", f"--out={out}"]  # fmt: skip
    assert quality_table.main(argv) == 0
    jaxgen, peer, real_row = [json.loads(line) for line in out.read_text().splitlines()]
    assert (jaxgen["implementation"], jaxgen["draws"], jaxgen["num"]) == ("jaxgen", 2, 40)
    assert (jaxgen["minutes"], jaxgen["steps"], jaxgen["params"]) == (1.0, 300, 1234)
    real, rand = jaxgen["draw_scores"]
    assert real["fd_domain"] < rand["fd_domain"] / 10
    assert jaxgen["fd_domain"] == pytest.approx((real["fd_domain"] + rand["fd_domain"]) / 2)
    assert jaxgen["fd_domain_std"] == pytest.approx(
        abs(real["fd_domain"] - rand["fd_domain"]) / 2**0.5
    )
    # the peer's file holds the same draws in the other order
    assert peer["draw_scores"][0]["fd_domain"] > peer["draw_scores"][1]["fd_domain"]
    assert peer["steps"] == 7 and peer["fd_domain"] == pytest.approx(jaxgen["fd_domain"], rel=0.05)
    # the real row: test images 200-279, whose first draw is jaxgen's first
    assert (real_row["benchmark"], real_row["implementation"], real_row["draws"]) == (
        "quality_table_real", "test images 200-279", 2)  # fmt: skip
    assert real_row["draw_scores"][0] == jaxgen["draw_scores"][0]
    assert real_row["fd_domain"] < jaxgen["fd_domain"] / 5
    out_text = capsys.readouterr().out
    assert "mean over 2 independent draws" in out_text
    assert "| real | test images 200-279 | - | - | - |" in out_text


def test_peer_records_score_jaxgen_only_and_check_the_peer_was_scored_alike(tmp_path, capsys):
    """With --peer-records the peer is the newest saved record of the family: nothing trains
    or scores it (no torch), only jaxgen's record is written, and a peer scored with other
    settings, or given fewer minutes than jaxgen, is refused."""
    _finished_vae_run(tmp_path)
    saved = tmp_path / "saved.jsonl"
    peer = dict(_record("vae", "pytorch"), num=40, draws=2, num_ref=200, seed=0, minutes=1.0)
    older = dict(peer, fd_domain=99.0)
    saved.write_text("\n".join(json.dumps(r) for r in (older, peer)) + "\n")
    out = tmp_path / "records.jsonl"
    argv = ["--families=vae", f"--root={tmp_path}", "--num=40", "--draws=2", "--num-ref=200",
            "--torch-python=/nonexistent/python", f"--out={out}",
            f"--peer-records={saved}", "--no-real-row", "--launch-arg=--config.seed=3"]  # fmt: skip
    assert quality_table.main(argv) == 0
    (jaxgen,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert jaxgen["implementation"] == "jaxgen" and jaxgen["draws"] == 2
    assert jaxgen["launch_args"] == ["--config.seed=3"]  # the record says what was overridden
    assert jaxgen["peer_hardware"] == "cpu"  # the saved peer's, not this machine's
    captured = capsys.readouterr()
    assert "measured on cpu" in captured.err and "not an equal budget" in captured.err
    table = captured.out
    assert "| vae | pytorch | 1.00 | 10 | 100 | 0.5 / 0.5 |" in table  # the newest saved peer
    assert table.strip().splitlines()[-1].startswith("vae: jaxgen ")
    with pytest.raises(SystemExit) as refused:
        quality_table.main([*argv[:2], "--num=40", "--draws=3", *argv[4:]])
    assert refused.value.code == 2 and "scored with" in capsys.readouterr().err
    saved.write_text(json.dumps(dict(peer, minutes=0.9)) + "\n")
    with pytest.raises(SystemExit) as refused:
        quality_table.main(argv)
    assert refused.value.code == 2 and "retrain the peer" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 1  # refused runs wrote nothing


def test_real_row_says_which_level_metrics_no_model_could_lead_on(tmp_path, capsys):
    """Level metrics on which neither model is behind held-out real images are named as such
    (no lead can show there); a level metric where both are behind the real images is not."""
    spread = dict(draws=3, seed=0, **{f"{k}_std": 0.01 for k in peer_records.metric_keys()})
    jaxgen = dict(_record("gan", "jaxgen", fd_domain=0.3, kid_contrastive=0.505), **spread)
    peer = dict(_record("gan", "pytorch", kid_contrastive=0.5, fd_contrastive=0.505), **spread)
    real = dict(_record("real", "test images 32-79", kid_contrastive=0.5, fd_contrastive=0.1),
                **spread, benchmark="quality_table_real")  # fmt: skip
    del real["minutes"], real["steps"], real["params"]
    (line,) = peer_records.summary_lines([jaxgen, peer], real)
    # kid_contrastive: level, and both within the real images' noise; fd_contrastive: level,
    # and both behind the real images; the other level ones: all three equal
    level = [k for k in peer_records.metric_keys() if k != "fd_domain"]
    floor = [k for k in level if k != "fd_contrastive"]
    assert line == (
        f"gan: jaxgen ahead on 1 of 16; level (within 2 standard errors) on {', '.join(level)} "
        f"({', '.join(floor)}: both as good as held-out real images)"
    )
    path = tmp_path / "records.jsonl"
    other = dict(real, num=999, fd_contrastive=0.9)  # scored with another --num: not this table's
    path.write_text("\n".join(json.dumps(r) for r in (jaxgen, peer, real, other)) + "\n")
    assert peer_records.newest_real_record(str(path), jaxgen) == real
    assert quality_table.main([f"--table-from={path}", "--families=gan"]) == 0
    table = capsys.readouterr().out
    assert "| real | test images 32-79 | - | - | - |" in table
    assert quality_table.main([f"--table-from={path}", "--families=gan", "--no-real-row"]) == 0
    assert "| real |" not in capsys.readouterr().out


def test_real_row_past_the_test_set_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        quality_table.main([f"--root={tmp_path}", "--num=4000", "--draws=3",
                            "--torch-python=/nonexistent/python"])  # fmt: skip
    assert refused.value.code == 2
    assert "--real-row: num_ref + num = 14000" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
