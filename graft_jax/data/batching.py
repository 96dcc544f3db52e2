"""Length buckets and the collate function: examples -> one fixed-shape, padded batch.

A batch of B consecutive examples is padded to the smallest bucket that holds its longest text,
so jit sees at most len(buckets) token shapes. (Grouping examples of similar length would pad
less, but needs per-bucket buffers inside the iterator state; consecutive batching keeps the
checkpointed state to grain's own.)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

BATCH_KEYS = ("tokens", "loss_mask", "valid", "image_pos", "images", "has_image", "record_index")


def default_buckets(max_len: int, smallest: int = 64) -> tuple[int, ...]:
  """Powers of two from `smallest` below max_len, then max_len: 512 -> (64, 128, 256, 512)."""
  buckets, b = [], smallest
  while b < max_len:
    buckets.append(b)
    b *= 2
  return tuple(buckets) + (max_len,)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length; ValueError if none is."""
  for b in sorted(buckets):
    if length <= b:
      return b
  raise ValueError(f"length {length} exceeds the largest bucket {max(buckets)}")


def collate(examples: Sequence[dict[str, Any]], batch_size: int, buckets: Sequence[int],
            image_size: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Pads examples (from pipeline.prepare) into one batch of B = batch_size rows.

  Returns tokens int32[B, T], loss_mask bool[B, T], valid bool[B, T] (True on real tokens),
  image_pos int32[B] (-1: no image), images float32[B, S, S, 3] (zeros without an image),
  has_image bool[B], record_index int32[B] (the source index; -1 for a padding row), where
  T = bucket_length(longest text) and S = image_size. Missing rows (a last, short batch) are
  padding rows: valid and loss_mask all False.
  """
  if not 0 < len(examples) <= batch_size:
    raise ValueError(f"cannot collate {len(examples)} examples into a batch of {batch_size}")
  t = bucket_length(max(len(e["tokens"]) for e in examples), buckets)
  batch = {
      "tokens": np.full((batch_size, t), pad_id, np.int32),
      "loss_mask": np.zeros((batch_size, t), bool),
      "valid": np.zeros((batch_size, t), bool),
      "image_pos": np.full(batch_size, -1, np.int32),
      "images": np.zeros((batch_size, image_size, image_size, 3), np.float32),
      "has_image": np.zeros(batch_size, bool),
      "record_index": np.full(batch_size, -1, np.int32),
  }
  for row, e in enumerate(examples):
    n = len(e["tokens"])
    batch["tokens"][row, :n] = e["tokens"]
    batch["loss_mask"][row, :n] = e["loss_mask"]
    batch["valid"][row, :n] = True
    batch["image_pos"][row] = e["image_pos"]
    batch["record_index"][row] = e["record_index"]
    if e["image"] is not None:
      batch["images"][row] = e["image"]
      batch["has_image"][row] = True
  return batch
