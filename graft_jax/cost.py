"""Parameters and FLOPs per token of a decoder layout, from shapes alone (jax.eval_shape)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from graft_jax.models.config import LlamaConfig, Segments
from graft_jax.models.llama import abstract_params


@dataclasses.dataclass(frozen=True)
class DecoderCost:
  """params: all parameters; matmul_params: those used as matmul weights per token (layers and
  the LM head, which for tied models is the embedding); fwd_flops_per_token at `seq_len`."""
  layers: int
  params: int
  matmul_params: int
  fwd_flops_per_token: float
  seq_len: int


def decoder_cost(config: LlamaConfig, segments: Segments | None = None, seq_len: int = 4096) -> DecoderCost:
  """Forward FLOPs per token = 2 x matmul params + causal attention (QK^T and AV):
  4 x layers x heads x head_dim x (seq_len + 1) / 2, the mean context of a causal sequence."""
  tree = abstract_params(config, segments)
  count = lambda t: int(sum(np.prod(x.shape) for x in jax.tree.leaves(t)))
  layer_params = count(tree["segments"])
  head = config.vocab_size * config.hidden_size
  layers = sum(n for _, n in (segments or ((None, config.num_layers),)))
  matmul = layer_params - layers * 2 * config.hidden_size + head  # minus the two RMSNorm scales
  attention = 4 * layers * config.num_heads * config.head_dim * (seq_len + 1) / 2
  return DecoderCost(layers=layers, params=count(tree), matmul_params=matmul,
                     fwd_flops_per_token=2 * matmul + attention, seq_len=seq_len)
