"""Shared pieces of the ml_collections configs in configs/."""
from __future__ import annotations

import ml_collections

from graft_jax.models.presets import preset


def model_config(name: str = "smollm2-135m", source: str = "") -> ml_collections.ConfigDict:
  """The `model` block: a preset, where its weights are, and numerics.

  `source` is a .gguf file, an HF safetensors directory or a converted graft_jax directory;
  empty means the embedded default, which only the smollm2-135m preset has.
  """
  preset(name)  # validates the name early
  return ml_collections.ConfigDict({
      "preset": name, "source": source, "param_dtype": "float32", "dtype": "float32",
      "remat_policy": "none"})


def default_template(preset_name: str) -> str:
  """The chat markup of a preset's family: ChatML for SmolLM2, Llama-3's otherwise."""
  return "chatml" if preset_name.startswith("smollm2") else "llama3"
