"""The reference recipe's optimizer: global-norm clipping, AdamW, linear warmup then cosine to 0,
and a learning-rate multiplier per top-level subtree (the encoder, `img`, may train slower).

`optimizer.init` sees only the trainable tree, so optimizer state exists only for it.
"""
from __future__ import annotations

from typing import Mapping

import jax
import optax


def make_schedule(peak_lr: float, total_steps: int, warmup_ratio: float = 0.03) -> optax.Schedule:
  """lr(step): 0 -> peak_lr linearly over round(warmup_ratio * total_steps) steps, then a cosine
  from peak_lr to 0 at `total_steps` (0 afterwards)."""
  if total_steps < 1 or not 0.0 <= warmup_ratio < 1.0:
    raise ValueError(f"Need total_steps >= 1 and 0 <= warmup_ratio < 1, got {total_steps}, {warmup_ratio}")
  warmup = int(round(warmup_ratio * total_steps))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak_lr, warmup_steps=warmup, decay_steps=total_steps, end_value=0.0)


def scale_subtrees(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of each named top-level subtree (e.g. {"img": 0.1}); placed after
  AdamW, this multiplies that subtree's learning rate (its decoupled weight decay included)."""
  multipliers = dict(multipliers)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    scaled = {k: (jax.tree.map(lambda u, m=multipliers[k]: u * m, v) if k in multipliers else v)
              for k, v in updates.items()}
    return scaled, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(schedule: optax.Schedule | float, *, weight_decay: float = 0.0,
                   clip_norm: float = 1.0, encoder_lr_mult: float = 1.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """clip_by_global_norm(clip_norm) -> AdamW(schedule, b1, b2, eps, weight_decay on every leaf)
  -> the `img` subtree's updates times encoder_lr_mult."""
  parts = [optax.clip_by_global_norm(clip_norm),
           optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)]
  if encoder_lr_mult != 1.0:
    parts.append(scale_subtrees({"img": encoder_lr_mult}))
  return optax.chain(*parts)
