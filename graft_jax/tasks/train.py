"""Train one stage (translator, pretrain, finetune_encoder, finetune_decoder)."""
from __future__ import annotations

from graft_jax.paper.launch import launch
from graft_jax.train.loop import train


def run(config) -> dict:
  if "dry_run" in config:  # a paper recipe (configs/paper/recipe.py): checks, then dry run or training
    return launch(config)
  return train(config)
