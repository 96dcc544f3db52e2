"""LlamaConfig from an HF `config.json` dict or from GGUF metadata."""
from __future__ import annotations

from graft_jax.models.config import LlamaConfig, RopeScaling

SUPPORTED_MODEL_TYPES = ("llama",)


def _eos_ids(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def _rope_scaling(hf: dict) -> tuple[float, RopeScaling | None]:
  """(rope_theta, scaling) from either the transformers-4 or the transformers-5 layout."""
  params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type in (None, "default"):
    return theta, None
  if rope_type != "llama3":
    raise ValueError(f"Unsupported rope scaling type {rope_type!r} (supported: default, llama3)")
  return theta, RopeScaling(
      factor=float(params["factor"]), low_freq_factor=float(params["low_freq_factor"]),
      high_freq_factor=float(params["high_freq_factor"]),
      original_max_position_embeddings=int(params["original_max_position_embeddings"]))


def config_from_hf(hf: dict, source: str = "config.json") -> LlamaConfig:
  """LlamaConfig from an HF config.json dict; raises ValueError for non-Llama architectures."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{source}: unsupported architecture model_type={model_type!r} "
                     f"(architectures={hf.get('architectures')}); graft_jax supports {SUPPORTED_MODEL_TYPES}")
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise ValueError(f"{source}: {flag}=True is not supported")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported (Llama uses silu)")
  theta, scaling = _rope_scaling(hf)
  heads = int(hf["num_attention_heads"])
  return LlamaConfig(
      vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
      intermediate_size=int(hf["intermediate_size"]), num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
      bos_token_id=hf.get("bos_token_id"), eos_token_ids=_eos_ids(hf.get("eos_token_id")),
      pad_token_id=hf.get("pad_token_id"))


def config_from_gguf_fields(fields: dict, tensor_names: set[str], source: str) -> LlamaConfig:
  """LlamaConfig from GGUF metadata (`{key: value}`); raises ValueError for non-Llama files."""
  arch = fields.get("general.architecture")
  if arch != "llama":
    raise ValueError(f"{source}: GGUF architecture is {arch!r}, not 'llama'; graft_jax reads Llama GGUFs only")
  if "rope_freqs.weight" in tensor_names or fields.get("llama.rope.scaling.type") not in (None, "none"):
    raise ValueError(f"{source}: GGUF rope scaling (Llama-3.1 style) is not supported; "
                     "convert from the HF safetensors checkpoint instead")
  g = lambda k, default=None: fields.get(f"llama.{k}", default)
  hidden, heads = int(g("embedding_length")), int(g("attention.head_count"))
  vocab = g("vocab_size") or len(fields.get("tokenizer.ggml.tokens", []))
  eos = fields.get("tokenizer.ggml.eos_token_id")
  return LlamaConfig(
      vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(g("feed_forward_length")),
      num_layers=int(g("block_count")), num_heads=heads,
      num_kv_heads=int(g("attention.head_count_kv", heads)),
      head_dim=int(g("attention.key_length", g("rope.dimension_count", hidden // heads))),
      rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
      rope_theta=float(g("rope.freq_base", 10000.0)),
      tie_word_embeddings="output.weight" not in tensor_names,
      max_position_embeddings=int(g("context_length", 8192)),
      bos_token_id=fields.get("tokenizer.ggml.bos_token_id"), eos_token_ids=_eos_ids(eos),
      pad_token_id=fields.get("tokenizer.ggml.padding_token_id"))
