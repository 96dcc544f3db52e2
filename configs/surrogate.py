"""The main job: the surrogate route on the embedded default (SmolLM2-135M-Instruct).

  python -m graft_jax.main --config=configs/surrogate.py [--config.ranges="((24, 28),)"]

`ranges` is the translator plan: ((start, end) or (start, end, num_translators), ...).
The default [19, 28] is what configs/trajectory.py suggests for SmolLM2.
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "surrogate",
      "model": model_config(name),
      "template": default_template(name),
      "ranges": ((19, 28),),
      "num_eval_chats": 64,
      "batch_size": 16,
      "seed": 0,
      "prompts": ("What is the capital of France?", "What is 12 plus 30?",
                  "Name a shape with three corners."),
      "max_new_tokens": 24,
      "out_dir": "experiments/results/surrogate",
  })
