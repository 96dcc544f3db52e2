"""Stage 2: adapter, start/end-of-image and the encoder's trainable layers on the surrogate (translator frozen).
Control (encoder trained directly on the full target): --config.ranges='()'.

  python -m graft_jax.main --config=configs/finetune_encoder.py [--config.init_from=runs/<previous stage>]
"""
from graft_jax.config_lib import train_config


def get_config(arg=None):
  return train_config("finetune_encoder", arg or "smollm2-135m")
