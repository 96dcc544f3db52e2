"""Padding token sequences into fixed-shape batches (left for generation, right for scoring)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
             ) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> (int32[B, P] left-padded ids, bool[B, P] mask of real tokens), with P rounded
  up to a multiple of `multiple` so that jit compiles a few prompt shapes, not one per batch."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("Every prompt needs at least one token")
  width = -(-max(len(p) for p in prompts) // multiple) * multiple
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for row, p in enumerate(prompts):
    ids[row, width - len(p):] = p
    mask[row, width - len(p):] = True
  return ids, mask


def right_pad(samples: list[np.ndarray], pad_id: int, multiple: int = 64
              ) -> tuple[np.ndarray, np.ndarray]:
  """Token arrays -> (int32[B, T] right-padded ids, bool[B, T] mask of real tokens); T is rounded
  up to a multiple of `multiple` so that jit compiles a few shapes, not one per batch."""
  width = -(-max(len(s) for s in samples) // multiple) * multiple
  ids = np.full((len(samples), width), pad_id, np.int32)
  mask = np.zeros((len(samples), width), bool)
  for row, s in enumerate(samples):
    ids[row, :len(s)], mask[row, :len(s)] = s, True
  return ids, mask
