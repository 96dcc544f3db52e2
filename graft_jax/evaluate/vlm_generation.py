"""Answers from a VLM (target or surrogate): image questions in, generated text out."""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from graft_jax.data.padding import left_pad
from graft_jax.data.templates import EncodedSample, expand_image_slot
from graft_jax.evaluate.generation import generate_from_embeddings, trim_at_end
from graft_jax.models.vlm import VLM


@functools.partial(jax.jit, static_argnums=0)
def _embed_inputs(model: VLM, params: dict, tokens: jax.Array, images: jax.Array, image_pos: jax.Array) -> jax.Array:
  """VLM.embed_inputs, compiled once per model layout and shapes (models compare by value)."""
  return model.apply({"params": params}, tokens, images, image_pos, method=VLM.embed_inputs)


def generate_vlm(model: VLM, params: dict, prompts: Sequence[EncodedSample], images: np.ndarray, *,
                 max_new_tokens: int, eos_ids: Sequence[int], pad_id: int = 0, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, pad_multiple: int = 32) -> list[list[int]]:
  """Generated ids per prompt (end token included).

  prompts: encoded with `add_generation_prompt=True` (an image slot where the question has one);
  images: float32[B, S, S, 3] preprocessed (ignored for rows without an image).
  """
  expanded = [expand_image_slot(p, model.image_len, pad_id)[0] for p in prompts]
  ids, mask = left_pad(expanded, pad_id, pad_multiple)
  shift = ids.shape[1] - np.array([len(e) for e in expanded])
  image_pos = np.array([p.image_pos + s if p.has_image else -1 for p, s in zip(prompts, shift)], np.int32)
  embeddings = _embed_inputs(model, params, jnp.asarray(ids), jnp.asarray(images, jnp.float32), jnp.asarray(image_pos))
  out = generate_from_embeddings(
      params["llm"], embeddings, jnp.asarray(mask), jax.random.key(seed), config=model.llm,
      segments=model.segments, max_new_tokens=max_new_tokens, eos_ids=tuple(int(e) for e in eos_ids),
      pad_id=pad_id, temperature=float(temperature), top_p=float(top_p))
  return [trim_at_end(row, eos_ids) for row in np.asarray(out).tolist()]
