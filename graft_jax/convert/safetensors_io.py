"""Lazy reading of HF safetensors checkpoints: one file, or shards listed in an index JSON."""
from __future__ import annotations

import json
import os
from typing import Iterator, Mapping

import jax
import numpy as np
from safetensors import safe_open

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def _open(path: str):
  # The "flax" backend reads bfloat16 (numpy's doesn't); keep its arrays on the host.
  with jax.default_device(jax.devices("cpu")[0]):
    return safe_open(path, framework="flax")


class SafetensorsCheckpoint(Mapping[str, np.ndarray]):
  """name -> np.ndarray over a model directory's safetensors, loading one tensor per lookup."""

  def __init__(self, model_dir: str):
    index = os.path.join(model_dir, INDEX_NAME)
    single = os.path.join(model_dir, SINGLE_NAME)
    if os.path.isfile(index):
      with open(index) as f:
        try:
          weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
          raise ValueError(f"{index}: malformed index ({e})") from e
      self._files = {n: os.path.join(model_dir, fn) for n, fn in weight_map.items()}
      absent = sorted({p for p in self._files.values() if not os.path.isfile(p)})
      if absent:
        raise FileNotFoundError(f"{index} names shard files that are missing: {absent}")
    elif os.path.isfile(single):
      self._files = {n: single for n in _open(single).keys()}
    else:
      raise FileNotFoundError(f"{model_dir}: neither {SINGLE_NAME} nor {INDEX_NAME} found")
    self._handles: dict[str, object] = {}

  def __getitem__(self, name: str) -> np.ndarray:
    path = self._files[name]
    if path not in self._handles:
      self._handles[path] = _open(path)
    with jax.default_device(jax.devices("cpu")[0]):
      return np.asarray(self._handles[path].get_tensor(name))

  def __iter__(self) -> Iterator[str]:
    return iter(self._files)

  def __len__(self) -> int:
    return len(self._files)
