"""A converted base model as an Orbax checkpoint: params + model config + tokenizer files.

Layout of `out_dir`:
  params/             Orbax (StandardCheckpointer) params tree
  model_config.json   LlamaConfig fields
  tokenizer/          tokenizer files (transformers `save_pretrained`), when a tokenizer is given
"""
from __future__ import annotations

import json
import os

import orbax.checkpoint as ocp

from graft_jax.models.config import LlamaConfig
from graft_jax.models.llama import abstract_params
from graft_jax.tree_check import check_tree

CONFIG_NAME = "model_config.json"


def is_converted_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_NAME)) and os.path.isdir(os.path.join(path, "params"))


def save_converted(out_dir: str, params: dict, config: LlamaConfig, tokenizer=None) -> None:
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(os.path.join(out_dir, "params")):
    raise FileExistsError(f"{out_dir} already holds a converted model; choose a new directory")
  os.makedirs(out_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, "params"), params)
  checkpointer.wait_until_finished()
  with open(os.path.join(out_dir, CONFIG_NAME), "w") as f:
    json.dump(config.to_dict(), f, indent=2)
  if tokenizer is not None:
    tokenizer.save_pretrained(os.path.join(out_dir, "tokenizer"))


def load_converted(path: str) -> tuple[dict, LlamaConfig]:
  """(params, config) from `save_converted`'s directory; shapes are checked against the config."""
  with open(os.path.join(path, CONFIG_NAME)) as f:
    model_config = LlamaConfig.from_dict(json.load(f))
  params = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(path, "params")))
  check_tree(params, abstract_params(model_config), f"Converted checkpoint {path}")
  return params, model_config
