"""Generate the default synthetic datasets and print their statistics.

  python -m graft_jax.main --config=configs/data.py

Writes LLaVA JSON + PNGs (shapes) and chat JSONL (text) under out_dir, and ArrayRecord copies
through tensorflow-datasets under data_dir (read back by graft_jax.data.pipeline).
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict({
      "task": "data",
      "out_dir": "data_cache/default",
      "data_dir": "data_cache/tfds",
      "seed": 0,
      # (split, samples) pairs in order: a split's index seeds its samples, so keep the order.
      "shapes_splits": (("train", 2000), ("val", 200), ("test", 300)),
      "text_splits": (("train", 4000), ("val", 200)),
      "image_size": 64,
      # Image embeddings per image for the default encoder: (64 / 8)^2 patches + CLS + soi + eoi.
      "image_len": 67,
      "tokenizer": "",           # empty: SmolLM2's
      "template": "chatml",
      "mode": "markers",         # stage 1-2 masking
      "max_len": 512,
      "build_tfds": True,
  })
