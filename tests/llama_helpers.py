"""Tiny random transformers Llama models, saved with save_pretrained, for oracle tests."""
from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16, "rope_theta": 500000.0}


def tiny_hf_llama(tied: bool = False, heads: int = 4, kv_heads: int = 2, layers: int = 3,
                  rope: dict | None = None, seed: int = 0) -> LlamaForCausalLM:
  torch.manual_seed(seed)
  kw = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=8 if heads == 4 else None,
            rms_norm_eps=1e-5, tie_word_embeddings=tied, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
  kw = {k: v for k, v in kw.items() if v is not None}
  if rope is not None:
    kw["rope_parameters"] = rope
  model = LlamaForCausalLM(HFLlamaConfig(**kw)).eval()
  with torch.no_grad():  # random norms, so a wrong norm mapping cannot hide behind ones
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
  return model


def hf_logits(model: LlamaForCausalLM, tokens: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  with torch.no_grad():
    out = model(torch.tensor(tokens), attention_mask=None if mask is None else torch.tensor(mask),
                use_cache=False)
  return out.logits.float().numpy()
