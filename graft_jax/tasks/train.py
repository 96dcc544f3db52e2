"""Train one stage (translator, pretrain, finetune_encoder, finetune_decoder)."""
from __future__ import annotations

from graft_jax.train.loop import train


def run(config) -> dict:
  return train(config)
