"""A penalty on the image embeddings' statistics against the LLM's token embeddings (issue 9's
lever "keep image embeddings in the target's input distribution"). It uses the three statistics
that `fidelity_measures.image_embedding_stats` reports:

  P = log(rms(e) / rms(t))^2 + (1 - cos(mean e, mean t)) + (1 - mean_i max_v cos(e_i, t_v))

e: the projected image tokens (start/end of image left out) of the rows that have an image; t: the
token embedding table, without gradient. rms(.) is the mean over vectors of each one's RMS norm.
Each term is 0 when its statistic matches the tokens'; the last is 0 when every image embedding
points along some token embedding. The train step adds `embed_penalty` x the mean of P over its
micro-batches to the loss (train/step.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_TINY = 1e-12


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _TINY)


def embedding_stat_terms(image_emb: jax.Array, has_image: jax.Array, token_emb: jax.Array) -> dict[str, jax.Array]:
  """image_emb float[B, M, D] (projected image tokens only), has_image bool[B], token_emb float[V, D]
  -> float32 scalars "norm", "direction", "nearest" (the terms of P) and "penalty" (their sum).
  All are 0 when no row has an image."""
  e = image_emb.astype(jnp.float32)
  t = jax.lax.stop_gradient(token_emb).astype(jnp.float32)
  rows = has_image.astype(jnp.float32)[:, None]                       # [B, 1]
  count = jnp.sum(rows) * e.shape[1]
  any_image = count > 0
  count = jnp.maximum(count, 1.0)
  rms = jnp.sqrt(jnp.mean(e * e, axis=-1) + _TINY)                    # [B, M]
  image_rms = jnp.sum(rms * rows) / count
  token_rms = jnp.mean(jnp.sqrt(jnp.mean(t * t, axis=-1)))
  norm = jnp.log(image_rms / token_rms) ** 2
  mean_image = jnp.sum(e * rows[..., None], axis=(0, 1)) / count
  direction = 1.0 - jnp.dot(_unit(mean_image), _unit(jnp.mean(t, axis=0)))
  nearest_cos = jnp.max(jnp.einsum("bmd,vd->bmv", _unit(e), _unit(t)), axis=-1)  # [B, M]
  nearest = 1.0 - jnp.sum(nearest_cos * rows) / count
  terms = {"norm": norm, "direction": direction, "nearest": nearest}
  terms = {k: jnp.where(any_image, v, 0.0) for k, v in terms.items()}
  terms["penalty"] = terms["norm"] + terms["direction"] + terms["nearest"]
  return terms
