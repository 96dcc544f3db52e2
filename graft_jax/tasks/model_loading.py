"""Load the decoder a config's `model` block names, and check it against its preset."""
from __future__ import annotations

import logging

from graft_jax.convert.load import load_model, tokenizer_source
from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.models.config import LlamaConfig
from graft_jax.models.presets import preset


def load_from_config(model_cfg) -> tuple[dict, LlamaConfig, object]:
  """(params, LlamaConfig, tokenizer) for a config's `model` block."""
  expected = preset(model_cfg.preset)
  if not model_cfg.source and model_cfg.preset != "smollm2-135m":
    raise ValueError(f"Preset {model_cfg.preset!r} needs --config.model.source=<local HF directory>")
  params, config = load_model(model_cfg.source or None, param_dtype=model_cfg.param_dtype,
                              dtype=model_cfg.dtype, remat_policy=model_cfg.remat_policy)
  if (config.num_layers, config.hidden_size, config.vocab_size) != (
      expected.num_layers, expected.hidden_size, expected.vocab_size):
    logging.warning("Source %s has %d layers / hidden %d / vocab %d, not the %s preset's shapes; "
                    "using the source's.", model_cfg.source, config.num_layers, config.hidden_size,
                    config.vocab_size, model_cfg.preset)
  return params, config, load_tokenizer(tokenizer_source(model_cfg.source or None))
