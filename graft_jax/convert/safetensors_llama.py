"""HF safetensors Llama checkpoints (single file or sharded with an index JSON) -> params."""
from __future__ import annotations

import json
import os

from graft_jax.convert.hf_config import config_from_hf
from graft_jax.convert.llama_names import params_from_hf_tensors
from graft_jax.convert.safetensors_io import SafetensorsCheckpoint
from graft_jax.models.config import LlamaConfig


def read_hf_config(model_dir: str) -> dict:
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{model_dir}: no config.json (expected an HF model directory)")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: malformed JSON: {e}") from e


def load_safetensors_llama(model_dir: str) -> tuple[dict, LlamaConfig]:
  """(float32 params, config) from an HF Llama directory."""
  hf_config = config_from_hf(read_hf_config(model_dir), os.path.join(model_dir, "config.json"))
  tensors = SafetensorsCheckpoint(model_dir)
  return params_from_hf_tensors(tensors.__getitem__, set(tensors), hf_config, model_dir), hf_config
