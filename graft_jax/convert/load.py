"""One entry point for every model source a user may have."""
from __future__ import annotations

import os

from graft_jax.assets import default_gguf_path
from graft_jax.convert.checkpoint import is_converted_dir, load_converted
from graft_jax.convert.gguf_llama import load_gguf_llama
from graft_jax.convert.safetensors_llama import load_safetensors_llama
from graft_jax.models.config import LlamaConfig


def load_model(source: str | None = None, config: LlamaConfig | None = None
               ) -> tuple[dict, LlamaConfig]:
  """(params, config) from a `.gguf` file, an HF safetensors directory, or a converted
  graft_jax directory; None means the embedded default (SmolLM2-135M-Instruct GGUF).
  `config`, if given, supplies param/compute dtypes and the remat policy."""
  source = source or default_gguf_path()
  if not os.path.exists(source):
    raise FileNotFoundError(f"Model source {source!r} does not exist")
  if os.path.isfile(source):
    return load_gguf_llama(source, config)
  if is_converted_dir(source):
    return load_converted(source, config)
  return load_safetensors_llama(source, config)


def tokenizer_source(source: str | None) -> str | None:
  """Where the tokenizer of a model source lives (a converted directory keeps a copy)."""
  if source and os.path.isdir(source) and is_converted_dir(source):
    return os.path.join(source, "tokenizer")
  return source
