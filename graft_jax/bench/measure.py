"""Timing, memory and peak-FLOP/s measurements for the benchmarks.

  with PeakMemory() as mem: ...          # host RSS peak (sampled) and device peak bytes, if any
  timing = time_steps(run_step, warmup=2, steps=5)   # first call, then the median of `steps`
  times = round_robin({"a": run_a, "b": run_b}, warmup=1, steps=5)  # interleaved, same load
  peak = matmul_peak_flops()             # FLOP/s of a jitted square matmul on this backend
"""
from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp


def host_rss_bytes() -> int:
  """Current resident set size of this process (psutil if present, else /proc, else the peak)."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top
    return int(psutil.Process().memory_info().rss)
  except ImportError:
    pass
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory_stats(device=None) -> dict:
  """The device allocator's stats (GPU/TPU: bytes_in_use, peak_bytes_in_use, ...); {} on CPU."""
  device = device or jax.devices()[0]
  try:
    return dict(device.memory_stats() or {})
  except Exception:  # pylint: disable=broad-except  # CPU backends may raise or return None
    return {}


class PeakMemory:
  """Context manager: samples host RSS every `interval_s` in a thread; on exit `host_peak_bytes`,
  `host_start_bytes` and, where the device reports it, `device_peak_bytes` (the allocator's
  peak since process start: run one stage per process for a per-stage number)."""

  def __init__(self, interval_s: float = 0.02):
    self.interval_s = interval_s
    self.host_start_bytes = self.host_peak_bytes = 0
    self.device_peak_bytes: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _sample(self):
    while not self._stop.wait(self.interval_s):
      self.host_peak_bytes = max(self.host_peak_bytes, host_rss_bytes())

  def __enter__(self) -> "PeakMemory":
    self.host_start_bytes = self.host_peak_bytes = host_rss_bytes()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.host_peak_bytes = max(self.host_peak_bytes, host_rss_bytes())
    stats = device_memory_stats()
    if "peak_bytes_in_use" in stats:
      self.device_peak_bytes = int(stats["peak_bytes_in_use"])
    return False

  def as_dict(self) -> dict:
    return {"host_rss_start_bytes": self.host_start_bytes, "host_rss_peak_bytes": self.host_peak_bytes,
            "device_peak_bytes": self.device_peak_bytes}


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileTimer:
  """Context manager: `seconds` = JAX's own tracing + lowering + XLA compilation time reported
  (jax.monitoring) while inside, for every jit compiled meanwhile; None if JAX reported none."""

  def __init__(self):
    self.seconds: float | None = None

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in COMPILE_EVENTS:
      self.seconds = (self.seconds or 0.0) + duration

  def __enter__(self) -> "CompileTimer":
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc):
    unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
    if unregister is not None:
      unregister(self._listen)
    else:  # older JAX: leave it registered but deaf
      self._listen = lambda *a, **k: None  # pylint: disable=attribute-defined-outside-init
    return False


@dataclasses.dataclass(frozen=True)
class Timing:
  """first_call_s: the first call (compilation + one run); step_s: median of the timed calls;
  compile_s: JAX's reported tracing + lowering + compilation time during the first call where
  measured, else first_call_s - step_s (which drifting load on shared cores can make 0)."""
  first_call_s: float
  step_s: float
  compile_s: float
  times_s: tuple[float, ...]


def timed_call(run: Callable[[], None]) -> float:
  """Seconds one call of `run` (which must block until its work is done) takes."""
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def round_robin(runs: dict[str, Callable[[], None]], warmup: int = 1, steps: int = 5, *,
                turn_steps: int = 1, turn_warmup: int = 0) -> dict[str, list[float]]:
  """`warmup` untimed rounds, then `steps` timed rounds; each round gives every run a turn, in
  order, so runs compared with each other see the same machine load (shared CPUs drift). A turn
  is `turn_warmup` untimed then `turn_steps` timed calls: on a 2-core CPU a step right after
  another program's step runs slower than the next ones (graft_jax's stage 2: 3.97 s alone, 4.11-4.21 s
  when every step follows one of the PyTorch reference's; README "CPU"), which a training job,
  running its steps back to back, never sees. Returns {name: steps x turn_steps times}."""
  if steps < 1 or warmup < 0 or turn_steps < 1 or turn_warmup < 0:
    raise ValueError(f"Need steps, turn_steps >= 1 and warmup, turn_warmup >= 0, got {steps}, {turn_steps}, "
                     f"{warmup}, {turn_warmup}")
  for _ in range(warmup):
    for run in runs.values():
      run()
  times = {name: [] for name in runs}
  for _ in range(steps):
    for name, run in runs.items():
      for _ in range(turn_warmup):
        run()
      times[name].extend(timed_call(run) for _ in range(turn_steps))
  return times


def timing(first_call_s: float, times: list[float], compile_s: float | None = None) -> Timing:
  median = statistics.median(times)
  compile_s = max(first_call_s - median, 0.0) if compile_s is None else compile_s
  return Timing(first_call_s=first_call_s, step_s=median, compile_s=compile_s, times_s=tuple(times))


def first_call(run: Callable[[], None]) -> tuple[float, float | None]:
  """(seconds of the first call of `run`, JAX's compilation seconds during it or None)."""
  with CompileTimer() as compiled:
    seconds = timed_call(run)
  return seconds, compiled.seconds


def time_steps(run: Callable[[], None], warmup: int = 1, steps: int = 5) -> Timing:
  """Times `run` (which must block until its work is done): one first call, `warmup` untimed
  calls, then `steps` timed calls whose median is the step time."""
  first, compile_s = first_call(run)
  return timing(first, round_robin({"run": run}, warmup, steps)["run"], compile_s)


def matmul_peak_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 5, device=None) -> float:
  """Measured peak FLOP/s of this backend: the best of `repeats` runs of a jitted [n, n] @ [n, n]
  matmul in `dtype` (2 n^3 FLOPs), after a warm-up; a practical ceiling for MFU on a CPU."""
  device = device or jax.devices()[0]
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(key_a, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(key_b, (n, n), dtype), device)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best
