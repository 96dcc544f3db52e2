"""MetricsWriter (JSONL + TensorBoard, one-step-late conversion), ProgressBar, SIGTERM guard."""
from __future__ import annotations

import glob
import os
import signal
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from graft_jax.train import metrics as m
from graft_jax.train.signals import PREEMPTED_EXIT_CODE, preemption_guard


def _read_events(path: str) -> list:
  """Events of a TFRecord event file (length, crc, payload, crc), without TensorFlow."""
  events, data = [], open(path, "rb").read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
    pos += 12 + length + 4
  return events


def _step_metrics(step: int) -> dict:
  return {"loss": jnp.float32(1.0 / step), "lr": np.float32(1e-3), "tokens_per_s": 1000.0 * step,
          "step_time_s": 0.5, "tokens": {"supervised": jnp.int32(10 * step), "image": np.int64(64)},
          "stage": "stage1"}


def test_jsonl_is_written_one_step_late_and_reads_back(tmp_path):
  run = str(tmp_path)
  with m.MetricsWriter(run) as writer:
    assert writer.write(1, _step_metrics(1)) is None
    assert not m.read_metrics(run)  # step 1 stays pending (on device) until step 2 is queued
    rec = writer.write(2, _step_metrics(2))
    assert rec["step"] == 1 and rec["loss"] == 1.0 and len(m.read_metrics(run)) == 1
    writer.write(3, _step_metrics(3))
  records = m.read_metrics(run)
  assert [r["step"] for r in records] == [1, 2, 3]
  r = records[1]
  assert r["loss"] == pytest.approx(0.5) and r["lr"] == pytest.approx(1e-3)
  assert r["tokens"] == {"supervised": 20, "image": 64} and r["tokens_per_s"] == 2000.0
  assert r["stage"] == "stage1" and r["step_time_s"] == 0.5 and r["time"] > 0
  assert type(r["tokens"]["supervised"]) is int


def test_resumed_run_appends_and_later_record_wins(tmp_path):
  run = str(tmp_path)
  with m.MetricsWriter(run, tensorboard=False) as writer:
    for s in (1, 2, 3):
      writer.write(s, {"loss": float(s)})
  with m.MetricsWriter(run, tensorboard=False) as writer:  # resumed from a checkpoint at step 2
    writer.write(3, {"loss": 30.0})
    writer.write(4, {"loss": 40.0})
  assert [r["step"] for r in m.read_metrics(run, dedupe=False)] == [1, 2, 3, 3, 4]
  assert [r["loss"] for r in m.read_metrics(run)] == [1.0, 2.0, 30.0, 40.0]
  assert not os.path.exists(os.path.join(run, m.TENSORBOARD_DIR))


def test_tensorboard_events_read_back(tmp_path):
  run = str(tmp_path)
  with m.MetricsWriter(run) as writer:
    for s in (1, 2, 3):
      writer.write(s, _step_metrics(s))
  files = glob.glob(os.path.join(run, m.TENSORBOARD_DIR, "events.out.tfevents.*"))
  assert len(files) == 1 and os.path.getsize(files[0]) > 0
  scalars = {}
  for event in _read_events(files[0]):
    for v in event.summary.value:
      scalars.setdefault(v.tag, {})[event.step] = v.simple_value
  assert scalars["loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
  assert scalars["tokens/supervised"] == {1: 10, 2: 20, 3: 30}
  assert set(scalars) == {"loss", "lr", "tokens_per_s", "step_time_s", "tokens/supervised", "tokens/image"}


def test_to_host_rejects_unloggable_values():
  assert m.to_host(jnp.arange(3)) == [0, 1, 2]
  with pytest.raises(TypeError, match="object"):
    m.to_host({"x": object()})


def test_progress_bar_shows_loss_tokens_and_step_time():
  bar = m.ProgressBar(total=10, initial=2, disable=False)
  bar.update(None)
  bar.update({"step": 5, "loss": 0.123456, "tokens_per_s": 12345.6, "step_time_s": 0.25})
  assert bar._bar.n == 5
  assert bar.postfix == "loss=0.1235, tok/s=12,346, step=0.250s"
  bar.close()


def test_sigterm_sets_flag_and_restores_previous_handler():
  seen = []
  previous = lambda signum, frame: seen.append(signum)
  old = signal.signal(signal.SIGTERM, previous)
  try:
    with preemption_guard() as preempt:
      assert not preempt.requested
      os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode boundary; we survive
      assert preempt.requested and preempt.signal_name == "SIGTERM"
      assert preempt.exit_code == PREEMPTED_EXIT_CODE != 0
      assert "SIGTERM at step 12" in preempt.message(12)
    assert signal.getsignal(signal.SIGTERM) is previous and not seen
    os.kill(os.getpid(), signal.SIGTERM)
    assert seen == [signal.SIGTERM]
  finally:
    signal.signal(signal.SIGTERM, old)
