"""The PyTorch reference step in its own process, driven step by step from the benchmark.

  reference = ReferenceProcess(torch_llama, vit, plan, batch, image_len, lr=1e-4, seed=0)
  reference()                      # one step in the child; blocks until it is done
  reference.result(first_s, times) # the child's record (its own peak RSS, losses, ...)
  reference.release()

Why a process: in one process two thread pools and two allocators share the address space, and
on this project's 2-core CPU graft_jax's stage-2 step took 3.62-3.97 s alone but 4.11 s when
timed round-robin beside the reference in the same process (README "CPU"). Each framework in its
own process is how either would train, and the parent still alternates their turns so a drifting
load hits both alike.
"""
from __future__ import annotations

import multiprocessing
import traceback

from graft_jax.models.vit import VitConfig
from graft_jax.surrogate import SurrogatePlan


def _serve(conn, reference_llm, vit: VitConfig, plan: SurrogatePlan | None, batch: dict, image_len: int,
           lr: float, seed: int, torch_threads: int | None) -> None:
  """The child: builds the TorchRunner, then answers "step", "result" and "stop" messages."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from graft_jax.bench.measure import PeakMemory  # pylint: disable=g-import-not-at-top
    from graft_jax.bench.train_bench import TorchRunner  # pylint: disable=g-import-not-at-top
    if torch_threads:
      torch.set_num_threads(torch_threads)
    runner = TorchRunner(reference_llm, vit, plan, batch, image_len, lr=lr, seed=seed)
    del reference_llm
    conn.send(("ok", (runner.name, runner.encoder)))
    memory = None
    while True:
      message = conn.recv()
      if message[0] == "step":
        if memory is None:  # the peak RSS of the first step, as the in-process runner records it
          with PeakMemory() as memory:
            runner()
        else:
          runner()
        conn.send(("ok", runner.losses[-1]))
      elif message[0] == "result":
        _, first_call_s, times = message
        conn.send(("ok", {**runner.result(first_call_s, times, memory), "process": "own"}))
      else:
        runner.release()
        conn.send(("ok", None))
        return
  except Exception:  # pylint: disable=broad-except  # the parent re-raises it with the child's traceback
    conn.send(("error", traceback.format_exc()))


class ReferenceProcess:
  """TorchRunner's interface (call = one step; `result`, `release`, `name`, `encoder`, `losses`)
  with the runner living in a spawned child process."""

  def __init__(self, reference_llm, vit: VitConfig, plan: SurrogatePlan | None, batch: dict, image_len: int, *,
               lr: float, seed: int, torch_threads: int | None = None):
    context = multiprocessing.get_context("spawn")  # no fork of a process holding JAX's threads
    self._conn, child = context.Pipe()
    self._process = context.Process(target=_serve, daemon=True,
                                    args=(child, reference_llm, vit, plan, batch, image_len, lr, seed, torch_threads))
    self._process.start()
    child.close()
    self.name, self.encoder = self._receive()
    self.losses: list[float] = []

  def _receive(self):
    try:
      status, payload = self._conn.recv()
    except EOFError as e:
      raise RuntimeError(f"The PyTorch reference process died (exit code {self._process.exitcode})") from e
    if status == "error":
      raise RuntimeError(f"The PyTorch reference process failed:\n{payload}")
    return payload

  def __call__(self) -> None:
    self._conn.send(("step",))
    self.losses.append(self._receive())

  def result(self, first_call_s: float, times: list[float], memory=None) -> dict:
    """The child's record; `memory` (the parent's sample) is ignored: the child measured its own."""
    del memory
    self._conn.send(("result", first_call_s, list(times)))
    return self._receive()

  def release(self) -> None:
    if self._process.is_alive():
      self._conn.send(("stop",))
      self._receive()
      self._process.join(timeout=30)
    if self._process.is_alive():
      self._process.terminate()
    self._conn.close()
