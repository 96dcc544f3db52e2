"""The training data of a stage: the default datasets (generated once if missing) through grain."""
from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import logging

from graft_jax.data.pipeline import make_dataset
from graft_jax.data.tfds_builders import dataset_dir, load_source
from graft_jax.train.stages import Stage

DATASETS = {"image": "graft_shapes", "text": "graft_text"}


def ensure_default_datasets(data_cfg) -> None:
  """Generates the synthetic datasets into data_cfg's directories unless they are there; a shapes
  dataset there that was generated with other settings is refused (its files would be reused)."""
  check_shapes_metadata(data_cfg)
  missing = [name for name in DATASETS.values() if not os.path.isdir(dataset_dir(name, data_cfg.data_dir))]
  if not missing:
    return
  from graft_jax.tasks import data as data_task  # pylint: disable=g-import-not-at-top
  logging.info("Generating the default datasets (%s missing) under %s", missing, data_cfg.data_dir)
  cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  cfg.update({"image_len": 67, "tokenizer": "", "template": "chatml", "mode": "markers",
              "max_len": 512, "build_tfds": True})
  data_task.run(cfg)


def check_shapes_metadata(data_cfg) -> None:
  """ValueError if out_dir/shapes/metadata.json records other generation settings than data_cfg."""
  path = os.path.join(data_cfg.out_dir, "shapes", "metadata.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    meta = json.load(f)
  wanted = {"seed": int(data_cfg.seed), "image_size": int(data_cfg.image_size),
            "question_types": list(data_cfg.question_types),
            "turns": {"train": int(data_cfg.get("train_turns", 1))}}
  found = {k: meta.get(k) for k in wanted}
  if found.get("turns") is None:  # written before turns existed: one turn per sample
    found["turns"] = {"train": 1}
  diffs = {k: (found[k], v) for k, v in wanted.items() if found[k] != v}
  if diffs:
    raise ValueError(f"{os.path.dirname(path)} was generated with other settings (stored, asked): {diffs}; "
                     "point data.out_dir and data.data_dir at new directories, or delete these")


def make_train_iterator(config, stage: Stage, tokenizer, image_len: int, split: str = "train"):
  """(grain iterator of global batches for this process, Skips). `data.sources` (optional, e.g.
  configs/paper): dataset names under data_dir to read instead of the stage's default datasets;
  `data.shuffle` (optional, default True): False keeps the stored order."""
  names = tuple(config.data.get("sources", ()))
  if not names:
    ensure_default_datasets(config.data)
    names = tuple(DATASETS[s] for s in stage.sources)
  sources = [load_source(name, split, config.data.data_dir) for name in names]
  batch = config.train.batch_size
  if batch % jax.process_count():
    raise ValueError(f"batch_size {batch} is not divisible by the {jax.process_count()} hosts")
  dataset, skips = make_dataset(
      sources if len(sources) > 1 else sources[0], tokenizer, template=config.template,
      mode=stage.mask_mode, max_len=config.train.max_len, batch_size=batch // jax.process_count(),
      image_size=config.vit.image_size, image_len=image_len, seed=config.train.seed,
      shuffle=config.data.get("shuffle", True))
  return iter(dataset), skips
