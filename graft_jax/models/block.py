"""One Llama decoder block (pre-norm attention with GQA + RoPE, pre-norm SwiGLU MLP)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from graft_jax.models.config import LlamaConfig
from graft_jax.models.rope import apply_rope

LayerCache = dict[str, jnp.ndarray]  # {"k", "v": float[B, S, K, head_dim]}


def _dense(features: int, config: LlamaConfig, axes: tuple[str, str], name: str) -> nn.Dense:
  init = nn.with_logical_partitioning(nn.initializers.normal(0.02), axes)
  return nn.Dense(features, use_bias=False, dtype=config.jnp_dtype, param_dtype=config.jnp_param_dtype,
                  kernel_init=init, name=name)


class RMSNorm(nn.Module):
  """HF LlamaRMSNorm: normalise in float32, cast back, then scale."""
  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return scale.astype(self.dtype) * x32.astype(self.dtype)


def attend(q, k, v, mask, impl: str = "xla"):
  """q float[B, T, H, hd], k/v float[B, S, K, hd], mask bool[B, 1, T, S] -> float[B, T, H, hd].

  mask None means causal only (T == S), left to the kernel (`is_causal`); impl "xla" or "cudnn".
  """
  implementation = None if impl == "xla" else impl
  if mask is None:
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


class Attention(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, cache: LayerCache | None, cache_index):
    """x: float[B, T, D]; mask: bool[B, 1, T, S] or None (causal); returns (float[B, T, D], updated cache or None)."""
    c = self.config
    b, t, _ = x.shape
    q = _dense(c.num_heads * c.head_dim, c, ("embed", "heads"), "q_proj")(x)
    k = _dense(c.num_kv_heads * c.head_dim, c, ("embed", "kv_heads"), "k_proj")(x)
    v = _dense(c.num_kv_heads * c.head_dim, c, ("embed", "kv_heads"), "v_proj")(x)
    q = apply_rope(q.reshape(b, t, c.num_heads, c.head_dim), cos, sin)
    k = apply_rope(k.reshape(b, t, c.num_kv_heads, c.head_dim), cos, sin)
    v = v.reshape(b, t, c.num_kv_heads, c.head_dim)
    if cache is not None:
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
      cache = {"k": k, "v": v}
      k, v = k.astype(q.dtype), v.astype(q.dtype)
    out = attend(q, k, v, mask, c.attention_impl)
    out = out.reshape(b, t, c.num_heads * c.head_dim)
    return _dense(c.hidden_size, c, ("heads", "embed"), "o_proj")(out), cache


class Mlp(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    gate = _dense(c.intermediate_size, c, ("embed", "mlp"), "gate_proj")(x)
    up = _dense(c.intermediate_size, c, ("embed", "mlp"), "up_proj")(x)
    h = nn.with_logical_constraint(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return _dense(c.hidden_size, c, ("mlp", "embed"), "down_proj")(h)


class Block(nn.Module):
  """Scanned over the layer axis: carry is the hidden state, per-layer input is the KV cache."""
  config: LlamaConfig
  collect_hidden: bool = False

  @nn.compact
  def __call__(self, x, cache: LayerCache | None, cos, sin, mask, cache_index):
    c = self.config
    norm = lambda name: RMSNorm(c.rms_norm_eps, c.jnp_dtype, c.jnp_param_dtype, name=name)
    h, cache = Attention(c, name="attn")(norm("attn_norm")(x), cos, sin, mask, cache, cache_index)
    x = x + h
    x = x + Mlp(c, name="mlp")(norm("mlp_norm")(x))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return x, (cache, x if self.collect_hidden else None)
