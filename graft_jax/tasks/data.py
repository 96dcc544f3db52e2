"""Generate the default datasets, write them as ArrayRecord through tfds, and print statistics."""
from __future__ import annotations

import json
import os

import numpy as np

from graft_jax.convert.tokenizer import load_tokenizer
from graft_jax.data.encode import encode_samples
from graft_jax.data.readers import read_chat_jsonl, read_llava_json
from graft_jax.data.stats import dataset_stats
from graft_jax.data.synthetic_shapes import generate_shapes_dataset
from graft_jax.data.synthetic_text import generate_text_dataset
from graft_jax.data.tfds_builders import build_dataset


def run(config) -> dict:
  shapes_dir = os.path.join(config.out_dir, "shapes")
  text_dir = os.path.join(config.out_dir, "text")
  shapes_splits = {split: int(n) for split, n in config.shapes_splits}
  text_splits = {split: int(n) for split, n in config.text_splits}
  generate_shapes_dataset(shapes_dir, config.seed, shapes_splits, config.image_size,
                          question_types=tuple(config.question_types),
                          turns={"train": int(config.get("train_turns", 1))})
  generate_text_dataset(text_dir, config.seed, text_splits)
  tokenizer = load_tokenizer(config.tokenizer or None)
  files = {("shapes", s): os.path.join(shapes_dir, f"{s}.json") for s in shapes_splits}
  files.update({("text", s): os.path.join(text_dir, f"{s}.jsonl") for s in text_splits})
  report = {}
  print("| dataset | split | samples | skipped | tokens/sample (mean, max) | image tokens | supervised tokens |")
  print("|---|---|---|---|---|---|---|")
  for (name, split), path in files.items():
    reader = read_llava_json if path.endswith(".json") else read_chat_jsonl
    samples, read_skips = reader(path)
    encoded, encode_skips = encode_samples(
        samples, tokenizer, config.template, config.mode, max_len=config.max_len,
        image_len=config.image_len, image_prompt_rng=np.random.default_rng(config.seed), source=path)
    stats = dataset_stats([e for _, e in encoded], config.image_len)
    skipped = read_skips.total + encode_skips.total
    report[f"{name}/{split}"] = {**stats.__dict__, "skipped": skipped}
    print(f"| {name} | {split} | {stats.samples} | {skipped} | {stats.tokens_mean:.1f}, {stats.tokens_max} | "
          f"{stats.image_tokens} | {stats.supervised_tokens} |")
  if config.build_tfds:
    for name in ("shapes", "text"):
      splits = {split: path for (n, split), path in files.items() if n == name}
      build_dataset(f"graft_{name}", splits, None, config.data_dir, overwrite=True)
    print(f"ArrayRecord datasets graft_shapes and graft_text written under {config.data_dir}")
  with open(os.path.join(config.out_dir, "stats.json"), "w") as f:
    json.dump(report, f, indent=1)
  return report
