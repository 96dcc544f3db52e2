"""Prediction trajectory of SmolLM2 (or a preset with --config.model.source) and the suggested range.

  python -m graft_jax.main --config=configs/trajectory.py
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  name = arg or "smollm2-135m"
  return ml_collections.ConfigDict({
      "task": "trajectory",
      "model": model_config(name),
      "template": default_template(name),
      "text_source": "self",      # "self": the model answers the questions; "dataset": given answers
      "num_samples": 128,
      "max_answer_tokens": 96,
      "batch_size": 16,
      "seed": 0,
      "out_dir": "experiments/results/trajectory",
  })
