"""Preemption: turn SIGTERM into a flag the train loop polls, so it can checkpoint and exit cleanly.

    with preemption_guard() as preempt:
      for step in ...:
        state = train_step(state, batch)
        if preempt.requested:
          ckpt.save(step, state, it.get_state(), meta, force=True); ckpt.wait()
          logging.warning(preempt.message(step))
          sys.exit(PREEMPTED_EXIT_CODE)
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
from typing import Iterator, Sequence

# EX_TEMPFAIL: "try again later". Distinct from 0 (done), 1 (error) and 143 (killed by SIGTERM
# before saving), so a scheduler or wrapper can tell "saved, resume me" from the rest.
PREEMPTED_EXIT_CODE = 75


@dataclasses.dataclass
class Preemption:
  """Set by the signal handler; `requested` is polled by the loop between steps."""
  requested: bool = False
  signal_name: str | None = None
  exit_code: int = PREEMPTED_EXIT_CODE

  def message(self, step: int) -> str:
    return (f"Preempted by {self.signal_name} at step {step}: checkpoint saved, exiting with code "
            f"{self.exit_code}; rerun the same command to resume.")


@contextlib.contextmanager
def preemption_guard(signals: Sequence[int] = (signal.SIGTERM,)) -> Iterator[Preemption]:
  """Installs handlers for `signals` that only set the returned flag (the process keeps running);
  the previous handlers are restored on exit. Must be entered in the main thread (a Python rule
  for signal handlers)."""
  flag = Preemption()

  def handler(signum, frame):
    del frame
    if not flag.requested:
      logging.warning("Received %s: will save a checkpoint after the current step and exit",
                      signal.Signals(signum).name)
    flag.requested = True
    flag.signal_name = signal.Signals(signum).name

  previous = {s: signal.signal(s, handler) for s in signals}
  try:
    yield flag
  finally:
    for s, h in previous.items():
      # getsignal returns None for handlers installed from C; SIG_DFL is the closest restorable one.
      signal.signal(s, signal.SIG_DFL if h is None else h)
