"""How many train-step shapes (each one compilation) an epoch of real data produces, with the
pipeline's length buckets and without them (every batch padded to its own longest row).

  shapes = step_shapes(sources, tokenizer, template="chatml", mode="markers", max_len=512,
                       batch_size=16, image_size=64, image_len=67, buckets=None)   # Counter

A step is compiled once per (T, C): T the batch's token length, C the number of logit positions
per row (train/step.py `supervised_cap`).
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

from graft_jax.data.pipeline import make_dataset
from graft_jax.train.step import supervised_cap


def exact_buckets(max_len: int) -> tuple[int, ...]:
  """'No buckets': every length is its own bucket."""
  return tuple(range(1, max_len + 1))


def step_shapes(sources: Any, tokenizer, *, template: str, mode: str, max_len: int, batch_size: int,
                image_size: int, image_len: int, buckets: Sequence[int] | None,
                seed: int = 0) -> collections.Counter:
  """Counter of (T, C) over one shuffled epoch of `sources` (the pipeline's own batches);
  buckets None: the pipeline's default buckets."""
  dataset, _ = make_dataset(sources, tokenizer, template=template, mode=mode, max_len=max_len,
                            batch_size=batch_size, image_size=image_size, image_len=image_len, seed=seed,
                            num_epochs=1, buckets=buckets, shard_index=0, shard_count=1)
  return collections.Counter((int(b["tokens"].shape[1]), supervised_cap(b)) for b in dataset)
