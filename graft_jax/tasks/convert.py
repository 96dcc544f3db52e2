"""Convert a model source (GGUF / HF safetensors) into an Orbax checkpoint that reloads alone."""
from __future__ import annotations

import jax
from absl import logging

from graft_jax.convert.checkpoint import save_converted
from graft_jax.convert.load import load_model
from graft_jax.convert.tokenizer import load_tokenizer


def run(config) -> str:
  if not config.out:
    raise ValueError("--config.out=<directory> is required")
  params, model_config = load_model(config.source or None, param_dtype=config.param_dtype)
  tokenizer = load_tokenizer(config.source or None) if config.save_tokenizer else None
  save_converted(config.out, params, model_config, tokenizer)
  n = sum(x.size for x in jax.tree.leaves(params))
  logging.info("Converted %s (%d layers, %.1fM params) to %s", config.source or "the default model",
               model_config.num_layers, n / 1e6, config.out)
  print(f"Converted {config.source or 'the default SmolLM2 GGUF'} -> {config.out} "
        f"({model_config.num_layers} layers, {n / 1e6:.1f}M params)")
  return config.out
