"""One entry point for every model source a user may have."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from graft_jax.assets import default_gguf_path
from graft_jax.convert.checkpoint import is_converted_dir, load_converted
from graft_jax.convert.gguf_llama import load_gguf_llama
from graft_jax.convert.safetensors_llama import load_safetensors_llama
from graft_jax.models.config import LlamaConfig


def load_model(source: str | None = None, **numerics) -> tuple[dict, LlamaConfig]:
  """(params, config) from a `.gguf` file, an HF safetensors directory, or a converted
  graft_jax directory; None means the embedded default (SmolLM2-135M-Instruct GGUF).

  `numerics` (param_dtype, dtype, remat_policy) override the stored config; params are cast to
  its param_dtype.
  """
  source = source or default_gguf_path()
  if not os.path.exists(source):
    raise FileNotFoundError(f"Model source {source!r} does not exist")
  if os.path.isfile(source):
    params, config = load_gguf_llama(source)
  elif is_converted_dir(source):
    params, config = load_converted(source)
  else:
    params, config = load_safetensors_llama(source)
  config = config.replace(**numerics)
  dtype = config.jnp_param_dtype
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), params), config


def tokenizer_source(source: str | None) -> str | None:
  """Where the tokenizer of a model source lives (a converted directory keeps a copy)."""
  if source and os.path.isdir(source) and is_converted_dir(source):
    return os.path.join(source, "tokenizer")
  return source
