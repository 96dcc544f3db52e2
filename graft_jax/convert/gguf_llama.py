"""GGUF Llama files (any quantisation the `gguf` package can dequantize) -> params."""
from __future__ import annotations

import os

import gguf
import numpy as np

from graft_jax.convert.hf_config import config_from_gguf_fields
from graft_jax.convert.llama_names import params_from_hf_tensors
from graft_jax.models.config import LlamaConfig

# GGUF name -> HF name (per layer names use {i}).
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _hf_name(gguf_name: str) -> str | None:
  if gguf_name in _GLOBAL:
    return _GLOBAL[gguf_name]
  parts = gguf_name.split(".")
  if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER:
    return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"
  return None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Undo llama.cpp's Q/K row permutation (interleaved rope pairs -> HF's rotate-half layout)."""
  out, rest = w.shape[0], w.shape[1:]
  return w.reshape(n_head, out // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def read_gguf_fields(reader: gguf.GGUFReader) -> dict:
  fields = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
      continue  # large vocab arrays; transformers reads the tokenizer itself
    try:
      fields[key] = field.contents()
    except Exception:  # pylint: disable=broad-except
      continue
  return fields


def load_gguf_llama(path: str) -> tuple[dict, LlamaConfig]:
  """(float32 params, config) from a Llama GGUF file, dequantized."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No GGUF file at {path!r}")
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the gguf package raises assorted errors on non-GGUF bytes
    raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
  tensors = {t.name: t for t in reader.tensors}
  model_config = config_from_gguf_fields(read_gguf_fields(reader), set(tensors), path)
  by_hf = {h: t for t in tensors.values() if (h := _hf_name(t.name)) is not None}

  def get_tensor(name: str) -> np.ndarray:
    t = by_hf[name]
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape([int(d) for d in reversed(t.shape)])
    if name.endswith("q_proj.weight"):
      w = _unpermute(w, model_config.num_heads)
    elif name.endswith("k_proj.weight"):
      w = _unpermute(w, model_config.num_kv_heads)
    return w

  params = params_from_hf_tensors(get_tensor, set(by_hf), model_config, path)
  return params, model_config
