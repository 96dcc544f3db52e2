"""Generate the default synthetic datasets and print their statistics.

  python -m graft_jax.main --config=configs/data.py

Writes LLaVA JSON + PNGs (shapes) and chat JSONL (text) under out_dir, and ArrayRecord copies
through tensorflow-datasets under data_dir (read back by graft_jax.data.pipeline).
"""
from graft_jax.config_lib import data_config


def get_config(arg=None):
  del arg
  config = data_config()
  config.task = "data"
  # Image embeddings per image for the default encoder: (64 / 8)^2 patches + CLS + soi + eoi.
  config.image_len = 67
  config.tokenizer = ""       # empty: SmolLM2's
  config.template = "chatml"
  config.mode = "markers"     # stage 1-2 masking
  config.max_len = 512
  config.build_tfds = True
  return config
