"""Training observability: metrics.jsonl, TensorBoard event files and a tqdm progress bar.

Asynchronous fetching: `MetricsWriter.write(step, metrics)` takes the step's metrics as jax arrays
straight from the (asynchronously dispatched) train step, starts their device->host copies
(`copy_to_host_async`) and keeps them pending; it converts and writes the *previous* step's
metrics instead. Called right after dispatching step N, the only wait is for step N-1, which the
device has finished or nearly so while step N is already queued behind it, so logging never drains
the pipeline. Metrics appear one call late; `flush()`/`close()` write the last pending step.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Keys the progress bar shows, when the loop provides them.
LOSS, TOKENS_PER_S, STEP_TIME = "loss", "tokens_per_s", "step_time_s"


def to_host(value: Any) -> Any:
  """A JSON-able Python value: arrays/scalars (jax or numpy) -> numbers or lists; dicts recursively."""
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    a = np.asarray(jax.device_get(value))
    return a.item() if a.ndim == 0 else a.tolist()
  if isinstance(value, Mapping):
    return {str(k): to_host(v) for k, v in value.items()}
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  if isinstance(value, (list, tuple)):
    return [to_host(v) for v in value]
  raise TypeError(f"Cannot log a metric of type {type(value).__name__}: {value!r}")


def _start_copies(metrics: Mapping) -> None:
  for leaf in jax.tree.leaves(metrics):
    if isinstance(leaf, jax.Array):
      leaf.copy_to_host_async()


def _scalars(record: Mapping, prefix: str = ""):
  """(tag, float) for every numeric scalar in a (nested) record; nested keys joined with '/'."""
  for k, v in record.items():
    if isinstance(v, Mapping):
      yield from _scalars(v, f"{prefix}{k}/")
    elif isinstance(v, (bool, int, float)) and not (prefix == "" and k in ("step", "time")):
      yield f"{prefix}{k}", float(v)


class MetricsWriter:
  """Appends one JSON line per step to `run_dir/metrics.jsonl` and scalars to TensorBoard files
  under `run_dir/tensorboard` (tensorboardX: no TensorFlow needed). Lines are flushed as written,
  so a crashed run keeps its metrics; a resumed run appends (see `read_metrics`)."""

  def __init__(self, run_dir: str, tensorboard: bool = True):
    os.makedirs(run_dir, exist_ok=True)
    self.run_dir = run_dir
    self._file = open(os.path.join(run_dir, METRICS_FILE), "a", buffering=1)
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(logdir=os.path.join(run_dir, TENSORBOARD_DIR))
    self._pending: tuple[int, Mapping, float] | None = None

  def write(self, step: int, metrics: Mapping) -> dict | None:
    """Queues `metrics` of `step` (jax arrays welcome) and writes the previously queued step.
    Returns that previous step's record (plain Python values), or None on the first call."""
    _start_copies(metrics)
    previous, self._pending = self._pending, (int(step), metrics, time.time())
    return self._emit(previous) if previous is not None else None

  def flush(self) -> dict | None:
    """Writes the pending step now (blocking on it); returns its record or None."""
    previous, self._pending = self._pending, None
    record = self._emit(previous) if previous is not None else None
    if self._tb is not None:
      self._tb.flush()
    return record

  def close(self) -> dict | None:
    record = self.flush()
    self._file.close()
    if self._tb is not None:
      self._tb.close()
    return record

  def _emit(self, pending: tuple[int, Mapping, float]) -> dict:
    step, metrics, wall_time = pending
    record = {"step": step, "time": wall_time, **to_host(metrics)}
    self._file.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for tag, value in _scalars(record):
        self._tb.add_scalar(tag, value, global_step=step, walltime=wall_time)
    return record

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(run_dir: str, dedupe: bool = True) -> list[dict]:
  """The records of `run_dir/metrics.jsonl` in step order. After a resume the steps re-run since
  the last checkpoint appear twice in the file; with `dedupe` the later record of a step wins."""
  with open(os.path.join(run_dir, METRICS_FILE)) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not dedupe:
    return records
  by_step = {r["step"]: r for r in records}
  return [by_step[s] for s in sorted(by_step)]


class ProgressBar:
  """tqdm bar over steps showing loss, tokens/s and step time of each written record."""

  def __init__(self, total: int, initial: int = 0, disable: bool | None = None, desc: str = "train"):
    self._bar = tqdm(total=total, initial=initial, disable=disable, desc=desc, unit="step",
                     dynamic_ncols=True)

  def update(self, record: Mapping | None) -> None:
    """Advances to `record["step"]` and shows its metrics; None (nothing written yet) is a no-op."""
    if record is None:
      return
    self._bar.update(max(0, record["step"] - self._bar.n))
    postfix = {}
    if LOSS in record:
      postfix["loss"] = f"{record[LOSS]:.4f}"
    if TOKENS_PER_S in record:
      postfix["tok/s"] = f"{record[TOKENS_PER_S]:,.0f}"
    if STEP_TIME in record:
      postfix["step"] = f"{record[STEP_TIME]:.3f}s"
    self._bar.set_postfix(postfix, refresh=False)

  @property
  def postfix(self) -> str:
    return self._bar.postfix or ""

  def close(self) -> None:
    self._bar.close()
