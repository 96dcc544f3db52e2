"""The train state: step counter, the trainable params (fp32 master copies) and their optimizer
state. Frozen params live outside it and are passed to the step separately (never donated,
never checkpointed with the run)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  step: jax.Array   # int32[]: optimizer updates applied so far
  trainable: dict   # the `trainable` half of partition.split
  opt_state: Any    # optimizer.init(trainable)

  @classmethod
  def create(cls, trainable: dict, optimizer: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), trainable=trainable, opt_state=optimizer.init(trainable))
