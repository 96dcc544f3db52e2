"""Synthetic pipeline-style batches of a fixed shape, for timing the training step.

Every row has the same shape as a default synthetic-shapes sample: `text_len` text tokens with
one image slot at `image_pos` (the step expands it to `image_len` embeddings), the last
`supervised` text tokens supervised (the answer), no padding, so each step does exactly the work
the FLOPs count assumes. The text-only variant (translator stage) has `text_len + image_len` text
tokens per row, so every stage runs the decoder over the same number of positions.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchShape:
  """batch rows; text_len text tokens per row (before the image slot is expanded); supervised:
  targets per row (the last text tokens); image_pos: where the image slot goes."""
  batch: int = 16
  text_len: int = 30
  supervised: int = 10
  image_pos: int = 6

  def __post_init__(self):
    if self.batch < 1 or self.text_len < 2:
      raise ValueError(f"Need batch >= 1 and text_len >= 2, got {self.batch}, {self.text_len}")
    if not 1 <= self.supervised < self.text_len:
      raise ValueError(f"supervised must be in [1, text_len), got {self.supervised}")
    if not 1 <= self.image_pos <= self.text_len - self.supervised:
      raise ValueError(f"image_pos {self.image_pos} must lie in [1, text_len - supervised]")

  def seq_len(self, image_len: int) -> int:
    """Decoder positions per row once the image slot is expanded."""
    return self.text_len + image_len


def synthetic_batch(shape: BatchShape, vocab_size: int, image_size: int, image_len: int, *,
                    text_only: bool = False, seed: int = 0) -> dict:
  """A numpy batch as graft_jax/data/pipeline.py yields it: tokens int32[B, L], loss_mask and
  valid bool[B, L], image_pos int32[B], images float32[B, S, S, 3], has_image bool[B],
  record_index int32[B]; L = text_len (images) or text_len + image_len (text_only)."""
  rng = np.random.default_rng(seed)
  b = shape.batch
  length = shape.text_len + (image_len if text_only else 0)
  loss_mask = np.zeros((b, length), bool)
  loss_mask[:, length - shape.supervised:] = True
  return {
      "tokens": rng.integers(3, vocab_size, size=(b, length)).astype(np.int32),
      "loss_mask": loss_mask,
      "valid": np.ones((b, length), bool),
      "image_pos": np.full((b,), -1 if text_only else shape.image_pos, np.int32),
      "images": rng.normal(size=(b, image_size, image_size, 3)).astype(np.float32),
      "has_image": np.full((b,), not text_only),
      "record_index": np.arange(b, dtype=np.int32),
  }


def expanded_layout(batch: dict, image_len: int) -> dict:
  """Host-side slot expansion of `synthetic_batch` rows (for the PyTorch reference): tokens
  int64[B, T'] with pad id 0 in the slot, targets int64[B, T'-1], supervised bool[B, T'-1]
  (targets[:, i] = tokens[:, i + 1]), image_pos int[B]; text-only rows are returned unchanged."""
  tokens, mask, pos = batch["tokens"], batch["loss_mask"] & batch["valid"], batch["image_pos"]
  if (pos >= 0).any():
    if not (pos >= 0).all() or len(set(pos.tolist())) != 1:
      raise ValueError("expanded_layout needs every row to carry an image at the same position")
    p = int(pos[0])
    slot = np.zeros((tokens.shape[0], image_len), tokens.dtype)
    tokens = np.concatenate([tokens[:, :p], slot, tokens[:, p:]], axis=1)
    mask = np.concatenate([mask[:, :p], slot.astype(bool), mask[:, p:]], axis=1)
  return {"tokens": tokens.astype(np.int64), "targets": tokens[:, 1:].astype(np.int64),
          "supervised": mask[:, 1:], "image_pos": pos}
