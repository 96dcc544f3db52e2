"""Data errors and the skip counter that readers return.

Policy: a problem with the whole file (missing, not parseable as one JSON document, wrong top
level) raises `DataFormatError`. A problem with one sample raises a `SampleError` carrying a short
machine-readable `reason`; readers in "skip" mode catch it, count it per reason, log the first few
with their file/line or entry, and carry on, so a bad sample never crashes an epoch.
"""
from __future__ import annotations

import collections
import logging

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
  """A whole data file is unusable (named in the message)."""


class SampleError(ValueError):
  """One sample is unusable; `reason` is a short key such as "missing_image"."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


class SequenceTooLongError(SampleError):
  """A sample's full length (text tokens + image embeddings) exceeds the limit.

  Samples are never truncated: cutting an answer short would teach the model to stop mid-answer
  (and cutting the question would supervise an answer to a question it never saw).
  """

  def __init__(self, length: int, limit: int, detail: str = ""):
    super().__init__(
        "too_long",
        f"sequence of {length} tokens{detail} exceeds max_len={limit}; samples are never "
        "truncated: drop the sample or raise max_len")
    self.length = length
    self.limit = limit


class Skips:
  """Counts skipped samples per reason and logs the first `log_first` of each reason."""

  def __init__(self, source: str, log_first: int = 3):
    self.source = source
    self.log_first = log_first
    self.counts: collections.Counter[str] = collections.Counter()
    self.examples: dict[str, list[str]] = collections.defaultdict(list)

  def add(self, error: SampleError) -> None:
    self.counts[error.reason] += 1
    if len(self.examples[error.reason]) < self.log_first:
      self.examples[error.reason].append(str(error))
      log.warning("%s: skipped a sample (%s): %s", self.source, error.reason, error)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def summary(self) -> str:
    if not self.counts:
      return f"{self.source}: no samples skipped"
    parts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.counts.items()))
    return f"{self.source}: skipped {self.total} samples ({parts})"

  def log_summary(self) -> None:
    (log.warning if self.counts else log.info)("%s", self.summary())
