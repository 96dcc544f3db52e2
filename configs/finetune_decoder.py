"""Stage 3 (transfer): the whole decoder of the full target plus the stage-2 set, from a graft.

  python -m graft_jax.main --config=configs/finetune_decoder.py [--config.init_from=runs/<previous stage>]
"""
from graft_jax.config_lib import train_config


def get_config(arg=None):
  return train_config("finetune_decoder", arg or "smollm2-135m")
