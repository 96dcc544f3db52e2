"""Stage 1: adapter, start/end-of-image, encoder post-norm and translator on the surrogate, image + text data.

  python -m graft_jax.main --config=configs/pretrain.py [--config.init_from=runs/<previous stage>]
"""
from graft_jax.config_lib import train_config


def get_config(arg=None):
  return train_config("pretrain", arg or "smollm2-135m")
