"""From the pipeline's batch to what the model and the loss see: the image slot expanded, and
micro-batches for gradient accumulation. Both run inside the jitted step (jnp, static shapes).

Pipeline batch (graft_jax/data/pipeline.py): tokens int32[B, T], loss_mask bool[B, T] (tokens[b, t]
is a target predicted from position t-1), valid bool[B, T], image_pos int32[B] (-1: text-only),
images float32[B, S, S, 3], has_image bool[B].
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp


def expand_batch(batch: Mapping[str, jax.Array], image_len: int, pad_id: int = 0) -> dict:
  """Inserts `image_len` slot positions into every row, so all rows have length T + image_len.

  An image row (image_pos >= 0) gets them at image_pos, exactly as
  `graft_jax.data.templates.expand_image_slot` does for one sample: pad_id tokens, loss_mask
  False, valid True (the model overwrites their embeddings with [soi, image, eoi]). A text-only
  row keeps its tokens where they are and gets them appended at the end as padding (valid False),
  so VLM.__call__ leaves it untouched.

  Returns the batch with tokens int32[B, T'], loss_mask bool[B, T'], valid bool[B, T'] replaced
  (T' = T + image_len) and image_mask bool[B, T'] (True on an image row's slot) added.
  """
  tokens = batch["tokens"]
  b, t = tokens.shape
  has_image = batch["image_pos"] >= 0
  start = jnp.where(has_image, batch["image_pos"], t)[:, None]
  j = jnp.arange(t + image_len)[None, :]
  in_slot = (j >= start) & (j < start + image_len)
  source = jnp.clip(jnp.where(j < start, j, j - image_len), 0, t - 1)
  take = lambda x: jnp.take_along_axis(x, source, axis=1)
  return {
      **batch,
      "tokens": jnp.where(in_slot, jnp.asarray(pad_id, tokens.dtype), take(tokens)),
      "loss_mask": ~in_slot & take(batch["loss_mask"]),
      "valid": jnp.where(in_slot, has_image[:, None], take(batch["valid"])),
      "image_mask": in_slot & has_image[:, None],
  }


def split_microbatches(batch: Mapping[str, jax.Array], k: int, batch_axes=None) -> dict:
  """Every leaf [B, ...] -> [k, B // k, ...]; micro-batch i holds rows i, i + k, i + 2k, ...

  Striding (rather than contiguous blocks) keeps each device's rows on that device when the
  batch axis is sharded. `batch_axes`: mesh axes of the batch dimension, re-asserted on axis 1.
  """
  def one(x):
    if x.shape[0] % k:
      raise ValueError(f"Batch size {x.shape[0]} is not a multiple of num_microbatches={k}")
    y = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    if batch_axes is not None:
      y = jax.lax.with_sharding_constraint(y, jax.sharding.PartitionSpec(None, batch_axes))
    return y
  return jax.tree.map(one, dict(batch))
