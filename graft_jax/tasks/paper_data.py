"""Convert downloaded training and evaluation data for the paper's recipe (configs/paper/data.py)."""
from __future__ import annotations

import os

from graft_jax.data.converters.choice import convert_choice
from graft_jax.data.converters.common import write_json
from graft_jax.data.converters.pope import convert_pope
from graft_jax.data.converters.training import write_training_files
from graft_jax.data.converters.vqa import convert_gqa, convert_vqav2
from graft_jax.data.tfds_builders import build_dataset
from graft_jax.paper.recipe import STAGES


def convert_eval(config) -> dict[str, int]:
  """Each filled evaluation block -> {out_dir}/eval/<name>.json; returns {name: entries}."""
  e, out = config.eval, os.path.join(config.out_dir, "eval")
  written = {}
  if e.pope.files:
    written["pope"] = write_json(os.path.join(out, "pope.json"), convert_pope(list(e.pope.files), e.pope.images))
  if e.vqav2.questions:
    written["vqav2"] = write_json(os.path.join(out, "vqav2.json"),
                                  convert_vqav2(e.vqav2.questions, e.vqav2.annotations, e.vqav2.images))
  if e.gqa.questions:
    written["gqa"] = write_json(os.path.join(out, "gqa.json"), convert_gqa(e.gqa.questions, e.gqa.images))
  for path in e.choice.files:
    name = os.path.splitext(os.path.basename(path))[0]
    entries = convert_choice(path, e.choice.images, name=name, image_dir=os.path.join(out, f"{name}_images"))
    written[name] = write_json(os.path.join(out, f"{name}.json"), entries)
  return written


def run(config) -> dict:
  result = write_training_files(config.out_dir, config.llava.json, config.chat.jsonl,
                                chat_limit=config.chat.limit, seed=config.seed)
  print(f"training files: {result['counts']}; chats skipped: {result['chat_skips'] or 'none'}")
  image_root = config.llava.images or os.path.dirname(os.path.abspath(config.llava.json or "."))
  built = {}
  for kind, path in result["files"].items():
    name = f"{config.prefix}_{kind}"
    if config.build_tfds:
      builder = build_dataset(name, {"train": path}, image_root if kind != "text" else None, config.data_dir,
                              image_check=config.image_check, overwrite=True)
      skips = builder.skips["train"]
      built[name] = builder.info.splits["train"].num_examples
      print(f"{name}: {built[name]} samples under {config.data_dir} ({skips.summary() if skips.total else 'no skips'})")
  for stage, r in STAGES.items():  # one epoch of the converted data, for --config.train.steps
    name = f"{config.prefix}_{r.source.split('_', 1)[1]}"
    if name in built:
      print(f"recipe stage {stage}: one epoch of {name} = {built[name] // r.batch_size} steps at batch {r.batch_size}")
  written = convert_eval(config)
  for name, n in written.items():
    print(f"evaluation file {os.path.join(config.out_dir, 'eval', name + '.json')}: {n} questions")
  return {**result, "datasets": built, "eval": written}
