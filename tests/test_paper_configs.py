"""Every config under configs/paper/ loads, validates and dry-runs (AOT-compiled train step) on
8 simulated CPU devices at reduced width; the recipe's values and the full-size parameter counts
(against graft_jax/cost.py's report)."""
from __future__ import annotations

import glob
import os

import jax
import pytest

from graft_jax.cost import decoder_cost
from graft_jax.models.presets import preset
from graft_jax.paper.abstract import abstract_stage
from graft_jax.paper.launch import launch
from graft_jax.paper.recipe import STAGES, TARGET_ROWS, TARGETS, all_recipes
from graft_jax.surrogate import SurrogatePlan
from graft_jax.tasks.surrogate_report import report_rows
from tests.config_files import CONFIG_DIR, load_config

SURROGATE_LAYERS = {"llama-3.2-3b": 18, "llama-3.1-8b": 19, "llama-3.1-70b": 42}
WIDTH_DIVISOR = 32  # hidden 3072 -> 96, 4096 -> 128, 8192 -> 256; CLIP 1024 -> 32; depths kept


def test_configs_under_configs_paper_are_the_known_ones():
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "paper", "*.py")))
  assert files == ["data.py", "recipe.py"]  # a new file needs its own case below
  data = load_config("paper/data")
  data.lock()
  assert data.task == "paper_data" and data.prefix == "paper"


@pytest.mark.parametrize("arg", all_recipes())
def test_recipe_loads_validates_and_dry_runs(arg):
  target, stage = arg.split(",")
  r = STAGES[stage]
  config = load_config("paper/recipe", arg)
  config.lock()  # as main.py loads it: a typo'd override fails
  assert (config.task, config.recipe, config.train.batch_size, config.train.lr) == ("train", arg, r.batch_size, r.lr)
  assert config.ranges == (TARGETS[target] if r.on_surrogate else ())
  assert (config.train.warmup_ratio, config.train.clip_norm, config.train.weight_decay, config.train.max_len) == (
      0.03, 1.0, 0.0, 4096)
  assert (config.model.dtype, config.model.param_dtype, config.vit.image_size, config.vit.patch_size,
          config.vit.depth) == ("bfloat16", "bfloat16", 336, 14, 24)
  config.dry_run, config.width_divisor, config.train.max_len = True, WIDTH_DIVISOR, 64
  report = launch(config)
  layers = SURROGATE_LAYERS[target] if r.on_surrogate else preset(target).num_layers
  assert report["decoder_layers"] == layers and report["devices"] == 8
  assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  rows = min(r.per_device_batch, TARGET_ROWS[target], r.batch_size // 8)
  assert (report["per_device_batch"], report["microbatches"]) == (rows, r.batch_size // 8 // rows)
  assert report["tokens_per_row"] == 64 + (0 if stage == "translator" else 579)  # CLS kept: 577 + soi/eoi
  assert report["xla_memory"]["temp"] > 0 and report["flops_per_step"] > 0


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_full_size_parameter_counts_agree_with_the_cost_report(target):
  rows = {row["model"]: row for row in report_rows([(t, ranges) for t, ranges in TARGETS.items()], 4096)}
  for stage, on_surrogate in (("finetune_encoder", True), ("finetune_encoder_full", False)):
    config = load_config("paper/recipe", f"{target},{stage}")
    a = abstract_stage(config)  # shapes only: the 70B tree costs nothing
    llm = sum(x.size for x in jax.tree.leaves(a.params["llm"]))
    expected = rows[target]["surrogate_params" if on_surrogate else "target_params"]
    plan = SurrogatePlan.create(preset(target).num_layers, TARGETS[target]) if on_surrogate else None
    assert llm == expected == decoder_cost(preset(target), plan.segments if plan else None).params
    assert a.model.image_len == 579
