"""The adapter: an MLP from encoder width to LLM width, plus learned start/end-of-image embeddings.

Params tree (E = encoder width, D = LLM width, n = depth):
  fc1 {kernel [E, D], bias [D]}, fc2 .. fc{n} {kernel [D, D], bias [D]}, soi [D], eoi [D]
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Projector(nn.Module):
  """`depth` Dense layers with exact (erf) GELU between them, then soi/eoi wrap the tokens."""
  dim: int
  depth: int = 2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image_tokens: jax.Array) -> jax.Array:
    """image_tokens: float[B, N, E] -> float[B, N + 2, D]: [soi, projected tokens, eoi]."""
    if self.depth < 1:
      raise ValueError(f"Projector depth must be >= 1, got {self.depth}.")
    x = image_tokens.astype(self.dtype)
    for i in range(1, self.depth + 1):
      if i > 1:
        x = jax.nn.gelu(x, approximate=False)
      x = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc{i}")(x)
    init = nn.initializers.normal(self.dim ** -0.5)  # N(0, 1/d)
    soi, eoi = (self.param(name, init, (self.dim,), self.param_dtype).astype(self.dtype)
                for name in ("soi", "eoi"))
    b = x.shape[0]
    return jnp.concatenate([jnp.broadcast_to(soi, (b, 1, self.dim)), x,
                            jnp.broadcast_to(eoi, (b, 1, self.dim))], axis=1)
