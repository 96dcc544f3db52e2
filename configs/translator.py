"""Stage 0: train the surrogate's translator on text-only chat data (the surrogate's other layers frozen).

  python -m graft_jax.main --config=configs/translator.py [--config.init_from=runs/<previous stage>]
"""
from graft_jax.config_lib import train_config


def get_config(arg=None):
  return train_config("translator", arg or "smollm2-135m")
