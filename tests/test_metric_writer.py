"""MetricWriter after a crash: torn lines, rows past the restored step, TensorBoard purging."""

import json
import logging
import os
import struct

import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.metric_writer import MetricWriter, read_metrics


def _write_run(workdir, steps, resume_step=None, offset=0.0):
    writer = MetricWriter(str(workdir), resume_step=resume_step)
    for step in steps:
        writer.write_scalars(step, {"loss": step + offset})
    writer.close()


def _kill_mid_row(workdir):
    """What a SIGKILL inside ``write`` leaves: part of a row, no newline."""
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')


def test_torn_last_line_is_dropped_and_said(tmp_path, caplog):
    _write_run(tmp_path, range(1, 4))
    _kill_mid_row(tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        MetricWriter(str(tmp_path), resume_step=3).close()
    assert "torn" in caplog.text and "metrics.jsonl" in caplog.text
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.endswith("}\n") and "lo" not in text.splitlines()[-1][-4:]
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]


def test_unparseable_last_line_with_newline_counts_as_torn(tmp_path, caplog):
    _write_run(tmp_path, range(1, 3))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo\n')
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        MetricWriter(str(tmp_path), resume_step=5).close()
    assert "torn" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_rows_past_resume_step_are_dropped_and_counted(tmp_path, caplog):
    _write_run(tmp_path, range(1, 11))
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        MetricWriter(str(tmp_path), resume_step=6).close()
    assert "dropped 4 rows past step 6" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 7))


def test_fresh_start_drops_every_row(tmp_path):
    _write_run(tmp_path, range(1, 5))
    MetricWriter(str(tmp_path), resume_step=0).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_nothing_to_drop_leaves_the_file_alone(tmp_path, caplog):
    _write_run(tmp_path, range(1, 4))
    before = os.stat(tmp_path / "metrics.jsonl").st_ino
    with caplog.at_level(logging.WARNING, logger="jaxgen"):
        MetricWriter(str(tmp_path), resume_step=3).close()
    assert caplog.text == ""
    assert os.stat(tmp_path / "metrics.jsonl").st_ino == before


def test_each_step_once_after_a_simulated_resume(tmp_path):
    _write_run(tmp_path, range(1, 11))
    _kill_mid_row(tmp_path)
    _write_run(tmp_path, range(7, 11), resume_step=6, offset=0.5)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["loss"] for r in rows] == [1, 2, 3, 4, 5, 6, 7.5, 8.5, 9.5, 10.5]
    assert not os.path.exists(tmp_path / "metrics.jsonl.tmp")


def _records(path):
    """The payloads of a TFRecord file: [len u64][crc u32][data][crc u32] each."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        yield data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4


def _scalars_as_tensorboard_shows(tb_dir, tag):
    """(step, value) of ``tag`` by TensorBoard's rule for restarts: a SessionLog START at step
    ``S`` hides every event of step ``>= S`` read before it (event files in name order)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    points = []
    for name in sorted(os.listdir(tb_dir)):
        for record in _records(os.path.join(tb_dir, name)):
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                points = [p for p in points if p[0] < event.step]
            points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return points


def test_tensorboard_each_step_once_after_resume(tmp_path):
    _write_run(tmp_path, range(1, 11))
    _write_run(tmp_path, range(7, 11), resume_step=6, offset=0.5)
    expected = [(s, float(s)) for s in range(1, 7)] + [(s, s + 0.5) for s in range(7, 11)]
    assert _scalars_as_tensorboard_shows(tmp_path / "tb", "loss") == expected


def test_tensorboard_reader_sees_each_step_once(tmp_path):
    """The same through TensorBoard's own reader, where it is installed."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    _write_run(tmp_path, range(1, 11))
    _write_run(tmp_path, range(7, 11), resume_step=6, offset=0.5)
    acc = event_accumulator.EventAccumulator(
        str(tmp_path / "tb"), size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    seen = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert seen == [(s, float(s)) for s in range(1, 7)] + [(s, s + 0.5) for s in range(7, 11)]


def test_non_main_writer_writes_nothing(tmp_path):
    writer = MetricWriter(str(tmp_path / "run"), is_main=False, resume_step=3)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_image(1, "samples", np.zeros((4, 4, 1), "uint8"))
    writer.flush()
    writer.close()
    assert not os.path.exists(tmp_path / "run")


def test_non_main_writer_leaves_existing_files_alone(tmp_path):
    _write_run(tmp_path, range(1, 6))
    _kill_mid_row(tmp_path)
    before = (tmp_path / "metrics.jsonl").read_bytes()
    MetricWriter(str(tmp_path), is_main=False, resume_step=2).close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


def test_without_resume_step_nothing_is_rewritten_or_opened(tmp_path):
    _write_run(tmp_path, range(1, 6))
    _kill_mid_row(tmp_path)
    before = (tmp_path / "metrics.jsonl").read_bytes()
    writer = MetricWriter(str(tmp_path))
    writer.write_scalars(5, {"eval/fid": 3.0}, jsonl=False)
    writer.close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == before

    fresh = tmp_path / "eval_only"
    writer = MetricWriter(str(fresh))
    writer.write_scalars(1, {"eval/fid": 3.0}, jsonl=False)
    writer.close()
    assert not os.path.exists(fresh / "metrics.jsonl")
    writer = MetricWriter(str(fresh))
    writer.write_scalars(2, {"loss": 1.0})
    writer.close()
    assert read_metrics(fresh / "metrics.jsonl") == [{"step": 2, "loss": 1.0}]


def test_read_metrics_refuses_a_bad_line_in_the_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl, line 2"):
        read_metrics(path)
