"""Rotary position embeddings, as HF computes them ("default" and "llama3" scaling)."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from graft_jax.models.config import LlamaConfig


def inverse_frequencies(config: LlamaConfig) -> np.ndarray:
  """float32[head_dim // 2], with Llama-3's frequency-dependent scaling applied if configured."""
  d = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d))
  s = config.rope_scaling
  if s is None:
    return inv_freq.astype(np.float32)
  if s.rope_type != "llama3":
    raise ValueError(f"Unsupported rope scaling {s.rope_type!r} (supported: default, llama3)")
  low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(config: LlamaConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """cos, sin: float32[B, T, head_dim] for int positions[B, T] (HF's concatenated-halves layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inverse_frequencies(config))
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
  """x: float[B, T, N, head_dim] rotated by cos/sin float32[B, T, head_dim]."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin
