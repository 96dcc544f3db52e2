"""The paper's reference recipe, one config per target and stage (graft_jax/paper/recipe.py).

  python -m graft_jax.main --config=configs/paper/recipe.py:TARGET,STAGE \
      --config.model.source=/ckpt/Llama-3.1-70B-Instruct \
      --config.vit.source=/ckpt/clip-vit-large-patch14-336 --config.data.data_dir=/data/paper/tfds
  ... --config.dry_run=True [--config.mesh='(("data", 1), ("fsdp", -1), ("tensor", 1))']

TARGET: llama-3.2-3b, llama-3.1-8b, llama-3.1-70b. STAGE: translator, pretrain, finetune_encoder,
finetune_decoder, finetune_encoder_full (the control: stage 2 on the full target).
"""
from graft_jax.paper.recipe import parse_arg, recipe_config


def get_config(arg=None):
  return recipe_config(*parse_arg(arg))
