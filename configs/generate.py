"""Chat with a decoder: python -m graft_jax.main --config=configs/generate.py --config.prompt="..."

`--config=configs/generate.py:llama-3.1-8b --config.model.source=DIR --config.template=llama3`
for a local Llama-3 checkpoint.
"""
import ml_collections

from graft_jax.config_lib import default_template, model_config


def get_config(arg=None):
  return ml_collections.ConfigDict({
      "task": "generate",
      "model": model_config(arg or "smollm2-135m"),
      "template": default_template(arg or "smollm2-135m"),
      "prompt": "What is the capital of France?",
      "max_new_tokens": 128,
      "temperature": 0.0,
      "top_p": 1.0,
      "seed": 0,
  })
