"""Table-driven mapping from HF Llama tensor names to the graft_jax params tree.

Each entry: (HF name pattern with `{i}` for the layer, our path, hook). Per-layer tensors are
stacked on axis 0 into the single segment "blocks_0" (the full target's layout).
"""
from __future__ import annotations

import numpy as np

from graft_jax.models.config import LlamaConfig


def _transpose(w: np.ndarray) -> np.ndarray:
  """HF Linear weight [out, in] -> Flax Dense kernel [in, out]."""
  return np.ascontiguousarray(w.T)


def _same(w: np.ndarray) -> np.ndarray:
  return w


GLOBAL_TENSORS = [
    ("model.embed_tokens.weight", ("embed", "embedding"), _same),
    ("model.norm.weight", ("final_norm", "scale"), _same),
]
HEAD_TENSOR = ("lm_head.weight", ("head", "kernel"), _transpose)
LAYER_TENSORS = [
    ("model.layers.{i}.input_layernorm.weight", ("attn_norm", "scale"), _same),
    ("model.layers.{i}.self_attn.q_proj.weight", ("attn", "q_proj", "kernel"), _transpose),
    ("model.layers.{i}.self_attn.k_proj.weight", ("attn", "k_proj", "kernel"), _transpose),
    ("model.layers.{i}.self_attn.v_proj.weight", ("attn", "v_proj", "kernel"), _transpose),
    ("model.layers.{i}.self_attn.o_proj.weight", ("attn", "o_proj", "kernel"), _transpose),
    ("model.layers.{i}.post_attention_layernorm.weight", ("mlp_norm", "scale"), _same),
    ("model.layers.{i}.mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), _transpose),
    ("model.layers.{i}.mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), _transpose),
    ("model.layers.{i}.mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), _transpose),
]


def expected_hf_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> its shape as HF stores it, for every tensor the config needs."""
  c = config
  d, q, kv, f = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
  per_layer = {
      "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
      "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
      "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
      "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f),
  }
  shapes = {"model.embed_tokens.weight": (c.vocab_size, d), "model.norm.weight": (d,)}
  if not c.tie_word_embeddings:
    shapes["lm_head.weight"] = (c.vocab_size, d)
  for i in range(c.num_layers):
    shapes.update({f"model.layers.{i}.{k}": v for k, v in per_layer.items()})
  return shapes


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def params_from_hf_tensors(get_tensor, names: set[str], config: LlamaConfig, source: str) -> dict:
  """Builds the params tree from HF-named tensors.

  Args:
    get_tensor: name -> np.ndarray (loaded lazily, one tensor at a time).
    names: the tensor names available in the checkpoint.
    source: shown in error messages.
  Raises:
    ValueError naming every missing tensor, or the first tensor whose shape does not match the config.
  """
  expected = expected_hf_shapes(config)
  missing = sorted(set(expected) - names)
  if missing:
    shown = ", ".join(missing[:6]) + (f" ... ({len(missing)} in all)" if len(missing) > 6 else "")
    raise ValueError(f"{source}: missing tensors for this config: {shown}")
  dtype = np.dtype(config.jnp_param_dtype)

  def load(name):
    w = np.asarray(get_tensor(name))
    if tuple(w.shape) != expected[name]:
      raise ValueError(f"{source}: tensor {name} has shape {tuple(w.shape)} but the config "
                       f"(hidden={config.hidden_size}, heads={config.num_heads}/{config.num_kv_heads}, "
                       f"ffn={config.intermediate_size}, vocab={config.vocab_size}) needs {expected[name]}")
    return w.astype(dtype)

  params: dict = {}
  entries = GLOBAL_TENSORS + ([] if config.tie_word_embeddings else [HEAD_TENSOR])
  for name, path, hook in entries:
    _set(params, path, hook(load(name)))
  for pattern, path, hook in LAYER_TENSORS:
    stacked = np.stack([hook(load(pattern.format(i=i))) for i in range(config.num_layers)])
    _set(params, ("segments", "blocks_0") + path, stacked)
  return params
