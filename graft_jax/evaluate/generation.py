"""Batched generation with the KV cache: greedy or temperature / top-p sampling.

Prompts are left-padded so every row's next token goes to the same cache slot; RoPE positions
come from the prompt mask, so padding changes nothing for the real tokens.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.data.padding import left_pad
from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import Decoder, init_cache


def sample_token(logits: jnp.ndarray, rng: jax.Array, temperature: float, top_p: float) -> jnp.ndarray:
  """float[B, V] -> int32[B]; temperature 0 is greedy."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "segments", "max_new_tokens", "eos_ids",
                                             "pad_id", "temperature", "top_p"))
def generate_from_embeddings(params: dict, embeddings: jnp.ndarray, prompt_mask: jnp.ndarray,
                             rng: jax.Array, *, config: LlamaConfig, segments: Segments | None,
                             max_new_tokens: int, eos_ids: tuple[int, ...], pad_id: int,
                             temperature: float = 0.0, top_p: float = 1.0) -> jnp.ndarray:
  """Continues left-padded prompts given as embeddings.

  Args:
    params: the decoder's params tree (target or surrogate, matching `segments`).
    embeddings: float[B, P, D] prompt embeddings (text, or text with image embeddings spliced in).
    prompt_mask: bool[B, P], False on the left padding.
  Returns:
    int32[B, max_new_tokens] generated ids; after a row's end token, `pad_id`.
  """
  model = Decoder(config, segments)
  b, p, _ = embeddings.shape
  total = p + max_new_tokens
  cache = init_cache(config, segments, b, total)
  attention_mask = jnp.concatenate([prompt_mask, jnp.ones((b, max_new_tokens), bool)], axis=1)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
  logits, cache, _ = model.apply({"params": params}, embeddings=embeddings, positions=positions,
                                 attention_mask=attention_mask, cache=cache, cache_index=0)
  lengths = prompt_mask.sum(axis=1).astype(jnp.int32)
  eos = jnp.asarray(eos_ids, jnp.int32)
  state = (jnp.int32(0), cache, logits[:, -1], jnp.zeros((b,), bool),
           jnp.full((b, max_new_tokens), pad_id, jnp.int32), rng)

  def cond(s):
    i, _, _, done, _, _ = s
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(s):
    i, cache, last_logits, done, out, rng = s
    rng, step_rng = jax.random.split(rng)
    token = jnp.where(done, pad_id, sample_token(last_logits, step_rng, temperature, top_p))
    out = out.at[:, i].set(token)
    done = done | jnp.isin(token, eos)
    logits, cache, _ = model.apply(
        {"params": params}, tokens=token[:, None], positions=(lengths + i)[:, None],
        attention_mask=attention_mask, cache=cache, cache_index=p + i)
    return i + 1, cache, logits[:, -1], done, out, rng

  return jax.lax.while_loop(cond, body, state)[4]


def generate(params: dict, config: LlamaConfig, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, eos_ids: Sequence[int], pad_id: int | None = None,
             segments: Segments | None = None, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, pad_multiple: int = 32) -> list[list[int]]:
  """Token-id prompts -> generated ids per prompt (end token included, padding removed)."""
  pad_id = pad_id if pad_id is not None else (config.pad_token_id or 0)
  ids, mask = left_pad(prompts, pad_id, pad_multiple)
  embed = lambda p, t: Decoder(config, segments).apply({"params": p}, t, method=Decoder.embed_tokens)
  embeddings = jax.jit(embed)(params, jnp.asarray(ids))
  out = generate_from_embeddings(
      params, embeddings, jnp.asarray(mask), jax.random.key(seed), config=config, segments=segments,
      max_new_tokens=max_new_tokens, eos_ids=tuple(int(e) for e in eos_ids), pad_id=pad_id,
      temperature=float(temperature), top_p=float(top_p))
  return [trim_at_end(row, eos_ids) for row in np.asarray(out).tolist()]


def trim_at_end(row: list[int], eos_ids: Sequence[int]) -> list[int]:
  """The row up to and including its first end token."""
  for j, t in enumerate(row):
    if t in eos_ids:
      return row[:j + 1]
  return row
