"""Decoder LLM configuration (Llama family) and the segment layout of a decoder."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """HF `rope_scaling` of type "llama3" (Llama-3.1/3.2); `None` on the config means "default"."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int
  rope_type: str = "llama3"


ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Shapes and numerics of a Llama-architecture decoder (field names follow HF's LlamaConfig)."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 8192
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  # "xla": jax.nn.dot_product_attention with a dense boolean mask (the default, any platform).
  # "cudnn": cuDNN flash attention (GPU, bf16/fp16); without a KV cache or an attention_mask the
  # decoder then passes no dense mask and asks for the kernel's own causal masking.
  attention_impl: str = "xla"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl={self.attention_impl!r}; choose from {ATTENTION_IMPLS}")

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "LlamaConfig":
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"Unknown LlamaConfig keys: {sorted(unknown)}")
    if d.get("rope_scaling") is not None:
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
    return cls(**d)


# A decoder is an ordered list of named segments of stacked blocks: ((name, num_layers), ...).
Segments = tuple[tuple[str, int], ...]


def full_segments(config: LlamaConfig) -> Segments:
  """The full target's layout: one segment holding every layer."""
  return (("blocks_0", config.num_layers),)


def validate_segments(segments: Sequence[tuple[str, int]]) -> Segments:
  segments = tuple((str(n), int(k)) for n, k in segments)
  names = [n for n, _ in segments]
  if not segments or len(set(names)) != len(names) or any(k < 1 for _, k in segments):
    raise ValueError(f"Segments must be non-empty, uniquely named, each with >= 1 layer: {segments}")
  return segments
