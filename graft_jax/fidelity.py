"""How faithful a surrogate is to its target: KL of next-token distributions on text."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import Decoder


@functools.partial(jax.jit, static_argnames=("config", "segments"))
def _kl(target_params, surrogate_params, tokens, mask, *, config, segments):
  target_logp = jax.nn.log_softmax(
      Decoder(config).apply({"params": target_params}, tokens, attention_mask=mask)[0].astype(jnp.float32))
  surrogate_logp = jax.nn.log_softmax(Decoder(config, segments).apply(
      {"params": surrogate_params}, tokens, attention_mask=mask)[0].astype(jnp.float32))
  kl = jnp.sum(jnp.exp(target_logp) * (target_logp - surrogate_logp), -1)  # [B, T]
  return jnp.sum(jnp.where(mask, kl, 0.0), -1) / jnp.maximum(mask.sum(-1), 1)


def next_token_kl(target_params: dict, surrogate_params: dict, config: LlamaConfig, segments: Segments,
                  tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mean over real positions of KL(target || surrogate) per sample: float[B] (nats).

  tokens int[B, T] right-padded, mask bool[B, T] real tokens."""
  return np.asarray(_kl(target_params, surrogate_params, jnp.asarray(tokens), jnp.asarray(mask),
                        config=config, segments=segments))
