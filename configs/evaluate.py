"""Score an encoder package on an evaluation file: on its surrogate and grafted onto the target.

  python -m graft_jax.main --config=configs/evaluate.py [--config.package=DIR] [--config.limit=100]
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "evaluate",
      "model": model_config(name),
      "template": default_template(name),
      "package": "runs/surrogate/seed0/encoder_surrogate/encoder_package",
      "surrogate_from": "runs/surrogate/translator",
      "decoders": ("surrogate", "target"),
      "decoder": "target",        # set per entry of `decoders`
      "eval_file": "data_cache/vqa_cs/shapes/test.json",  # the main job's test split
      "limit": 0,                 # 0: every sample
      "batch_size": 16,
      "max_new_tokens": 16,
      "out_dir": "experiments/results/evaluate",
  })
