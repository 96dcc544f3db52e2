"""HF safetensors Llama checkpoints (single file or sharded with an index JSON) -> params."""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open

from graft_jax.convert.hf_config import config_from_hf
from graft_jax.convert.llama_names import params_from_hf_tensors
from graft_jax.models.config import LlamaConfig

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_hf_config(model_dir: str) -> dict:
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{model_dir}: no config.json (expected an HF model directory)")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: malformed JSON: {e}") from e


def safetensors_weight_map(model_dir: str) -> dict[str, str]:
  """Tensor name -> file path, from the index JSON (sharded) or the single file."""
  index = os.path.join(model_dir, INDEX_NAME)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = {n: os.path.join(model_dir, fn) for n, fn in weight_map.items()}
    absent = sorted({p for p in files.values() if not os.path.isfile(p)})
    if absent:
      raise FileNotFoundError(f"{index} names shard files that are missing: {absent}")
    return files
  single = os.path.join(model_dir, SINGLE_NAME)
  if not os.path.isfile(single):
    raise FileNotFoundError(f"{model_dir}: neither {SINGLE_NAME} nor {INDEX_NAME} found")
  with safe_open(single, framework="flax") as f:
    return {n: single for n in f.keys()}


def load_safetensors_llama(model_dir: str, config: LlamaConfig | None = None
                           ) -> tuple[dict, LlamaConfig]:
  """(params, config) from an HF Llama directory; `config` overrides dtype/remat fields only."""
  hf_config = config_from_hf(read_hf_config(model_dir), os.path.join(model_dir, "config.json"))
  if config is not None:
    hf_config = hf_config.replace(param_dtype=config.param_dtype, dtype=config.dtype,
                                  remat_policy=config.remat_policy)
  weight_map = safetensors_weight_map(model_dir)
  handles: dict[str, object] = {}

  def get_tensor(name: str) -> np.ndarray:
    path = weight_map[name]
    if path not in handles:
      handles[path] = safe_open(path, framework="flax")
    return np.asarray(handles[path].get_tensor(name))

  params = params_from_hf_tensors(get_tensor, set(weight_map), hf_config, model_dir)
  return params, hf_config
