"""Llama-family decoder: embed -> segments of scanned blocks -> final norm -> LM head.

A pure function of its params tree (the `llm` subtree of a VLM):

  {"embed": {"embedding": [V, D]},
   "segments": {name: {block params, each with a leading layer axis}},   # in segment order
   "final_norm": {"scale": [D]},
   "head": {"kernel": [D, V]}}                                           # absent when tied

The full target has one segment ("blocks_0"); a surrogate has several (see graft_jax/surrogate.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from graft_jax.models.block import Block, RMSNorm
from graft_jax.models.config import LlamaConfig, Segments, full_segments, validate_segments
from graft_jax.models.rope import rope_tables

Cache = dict[str, dict[str, jnp.ndarray]]  # {segment: {"k", "v": float[L_seg, B, S, K, head_dim]}}

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _block_class(config: LlamaConfig):
  if config.remat_policy == "none":
    return Block
  if config.remat_policy not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat_policy {config.remat_policy!r}; "
                     f"choose from {['none', *REMAT_POLICIES]}")
  return nn.remat(Block, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=False)


class SegmentStack(nn.Module):
  """Runs the named segments in order; each is one `nn.scan` over its stacked blocks."""
  config: LlamaConfig
  segments: Segments
  collect_hidden: bool = False

  @nn.compact
  def __call__(self, x, cache: Cache | None, cos, sin, mask, cache_index):
    new_cache, hidden = {}, []
    block = _block_class(self.config)
    for name, num_layers in self.segments:
      scanned = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
          length=num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      seg_cache = None if cache is None else cache[name]
      x, (seg_cache, seg_hidden) = scanned(self.config, self.collect_hidden, name=name)(
          x, seg_cache, cos, sin, mask, cache_index)
      if cache is not None:
        new_cache[name] = seg_cache
      if self.collect_hidden:
        hidden.append(seg_hidden)
    hidden = jnp.concatenate(hidden, axis=0) if self.collect_hidden else None
    return x, (new_cache if cache is not None else None), hidden


class Decoder(nn.Module):
  """Llama decoder over a segment layout. Methods: `embed_tokens`, `__call__`, `logits`."""
  config: LlamaConfig
  segments: Segments | None = None
  collect_hidden: bool = False

  def setup(self):
    c = self.config
    segments = validate_segments(self.segments or full_segments(c))
    self.embed = nn.Embed(
        c.vocab_size, c.hidden_size, dtype=c.jnp_dtype, param_dtype=c.jnp_param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
    self.stack = SegmentStack(c, segments, self.collect_hidden, name="segments")
    self.final_norm = RMSNorm(c.rms_norm_eps, c.jnp_dtype, c.jnp_param_dtype)
    if not c.tie_word_embeddings:
      self.head = nn.Dense(
          c.vocab_size, use_bias=False, dtype=c.jnp_dtype, param_dtype=c.jnp_param_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")))

  def embed_tokens(self, tokens: jnp.ndarray) -> jnp.ndarray:
    """int[B, T] -> float[B, T, D]."""
    return self.embed(tokens)

  def logits(self, hidden: jnp.ndarray) -> jnp.ndarray:
    """float[..., D] (already final-normed) -> float[..., V]."""
    if self.config.tie_word_embeddings:
      return self.embed.attend(hidden)
    return self.head(hidden)

  def __call__(self, tokens=None, embeddings=None, positions=None, attention_mask=None,
               cache: Cache | None = None, cache_index=0, return_logits: bool = True):
    """Runs the decoder.

    Args:
      tokens: int[B, T], or None when `embeddings` float[B, T, D] are given (the VLM path).
      positions: int[B, T] RoPE positions; default `cache_index + arange(T)`.
      attention_mask: bool[B, S] which key positions are real (S = T, or the cache length);
        default all. Causality is always applied (query at cache_index + t sees keys <= it).
      cache: per-segment KV cache from `init_cache`; with it, keys/values are written at
        `cache_index` and attention runs over the whole cache.
      return_logits: if False, return the final-normed hidden states instead of logits.

    Returns:
      (float[B, T, V] logits or float[B, T, D] hidden, updated cache or None,
       float[L, B, T, D] every layer's output before the final norm, or None unless collect_hidden).
    """
    if (tokens is None) == (embeddings is None):
      raise ValueError("Give exactly one of tokens or embeddings.")
    x = self.embed_tokens(tokens) if embeddings is None else embeddings.astype(self.config.jnp_dtype)
    b, t, _ = x.shape
    if positions is None:
      positions = jnp.broadcast_to(cache_index + jnp.arange(t)[None, :], (b, t))
    kv_len = t if cache is None else next(iter(cache.values()))["k"].shape[2]
    explicit_mask = attention_mask
    if attention_mask is None:
      attention_mask = jnp.ones((b, kv_len), dtype=bool)
    query_index = cache_index + jnp.arange(t)
    causal = jnp.arange(kv_len)[None, :] <= query_index[:, None]  # [T, S]
    mask = (causal[None] & attention_mask[:, None, :].astype(bool))[:, None]  # [B, 1, T, S]
    if self.config.attention_impl != "xla" and cache is None and explicit_mask is None:
      mask = None  # causal only: the fused kernel masks by itself, no dense [B, 1, T, S] mask
    cos, sin = rope_tables(self.config, positions)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x, cache, hidden = self.stack(x, cache, cos, sin, mask, cache_index)
    x = self.final_norm(x)
    return (self.logits(x) if return_logits else x), cache, hidden


def init_cache(config: LlamaConfig, segments: Segments | None, batch: int, max_len: int,
               dtype=None) -> Cache:
  """Zeroed KV cache: {segment: {"k", "v": float[L_seg, B, max_len, K, head_dim]}}."""
  dtype = dtype or config.jnp_dtype
  shape = lambda n: (n, batch, max_len, config.num_kv_heads, config.head_dim)
  return {name: {"k": jnp.zeros(shape(n), dtype), "v": jnp.zeros(shape(n), dtype)}
          for name, n in (segments or full_segments(config))}


def init_params(config: LlamaConfig, rng: jax.Array, segments: Segments | None = None) -> dict:
  """Random params tree (plain arrays, logical-axis boxes removed)."""
  model = Decoder(config, segments)
  variables = model.init(rng, jnp.zeros((1, 2), jnp.int32))
  return nn.meta.unbox(variables["params"])


def abstract_params(config: LlamaConfig, segments: Segments | None = None) -> dict:
  """Shapes and dtypes of the params tree, without allocating (jax.eval_shape)."""
  return jax.eval_shape(lambda r: init_params(config, r, segments), jax.random.key(0))
