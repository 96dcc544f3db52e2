"""The adapter: an MLP from encoder width to LLM width, plus learned start/end-of-image embeddings.

Params tree (E = encoder width, D = LLM width, n = depth):
  fc1 {kernel [E, D], bias [D]}, fc2 .. fc{n} {kernel [D, D], bias [D]}, soi [D], eoi [D]

`output_norm` (issue 9's lever, default "none"): "rms_token_scale" RMS-normalises every output
embedding (soi, the projected tokens, eoi) and multiplies it by `token_rms`, the mean RMS norm of
the LLM's token embeddings (`token_embedding_rms`), so image embeddings enter the decoder at the
scale of its own token embeddings. The scale is fixed, not learned: the norm has no parameters,
so the params tree (and an encoder package) is the same with the option on or off.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

OUTPUT_NORMS = ("none", "rms_token_scale")


def token_embedding_rms(embedding: jax.Array) -> jax.Array:
  """float[V, D] token embeddings -> float32[]: mean over the vocabulary of each row's RMS norm,
  sqrt(mean_d e[v, d]^2). No gradient flows into the embeddings through it."""
  e = jax.lax.stop_gradient(embedding).astype(jnp.float32)
  return jnp.mean(jnp.sqrt(jnp.mean(e * e, axis=-1)))


def rms_to_scale(x: jax.Array, scale: jax.Array | float, eps: float) -> jax.Array:
  """float[..., D] -> float[..., D]: each vector RMS-normalised (in float32), times `scale`."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * jnp.asarray(scale, jnp.float32)).astype(x.dtype)


class Projector(nn.Module):
  """`depth` Dense layers with exact (erf) GELU between them, then soi/eoi wrap the tokens."""
  dim: int
  depth: int = 2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  output_norm: str = "none"
  norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, image_tokens: jax.Array, token_rms: jax.Array | float | None = None) -> jax.Array:
    """image_tokens: float[B, N, E] -> float[B, N + 2, D]: [soi, projected tokens, eoi].

    token_rms: float[] target RMS of every output embedding; needed iff output_norm is
    "rms_token_scale" (the VLM passes `token_embedding_rms` of its decoder's embeddings)."""
    if self.depth < 1:
      raise ValueError(f"Projector depth must be >= 1, got {self.depth}.")
    if self.output_norm not in OUTPUT_NORMS:
      raise ValueError(f"Projector output_norm must be one of {OUTPUT_NORMS}, got {self.output_norm!r}.")
    x = image_tokens.astype(self.dtype)
    for i in range(1, self.depth + 1):
      if i > 1:
        x = jax.nn.gelu(x, approximate=False)
      x = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc{i}")(x)
    init = nn.initializers.normal(self.dim ** -0.5)  # N(0, 1/d)
    soi, eoi = (self.param(name, init, (self.dim,), self.param_dtype).astype(self.dtype)
                for name in ("soi", "eoi"))
    b = x.shape[0]
    out = jnp.concatenate([jnp.broadcast_to(soi, (b, 1, self.dim)), x,
                           jnp.broadcast_to(eoi, (b, 1, self.dim))], axis=1)
    if self.output_norm == "none":
      return out
    if token_rms is None:
      raise ValueError(f"Projector output_norm={self.output_norm!r} needs token_rms (the mean RMS norm "
                       "of the LLM's token embeddings)")
    return rms_to_scale(out, token_rms, self.norm_eps)
