"""Checks of a recipe config that run before anything heavy: the checkpoints' shapes against the
recipe (read from their config files, no weights), the plan, the datasets, and the split of the
global batch over the mesh (which sets `train.microbatches` when it is 0, "auto")."""
from __future__ import annotations

import json
import os

from jax.sharding import Mesh

from graft_jax.convert.checkpoint import CONFIG_NAME, is_converted_dir
from graft_jax.convert.hf_config import config_from_gguf_fields, config_from_hf
from graft_jax.convert.safetensors_llama import read_hf_config
from graft_jax.convert.vision import vit_config_from_hf
from graft_jax.data.tfds_builders import dataset_dir
from graft_jax.models.config import LlamaConfig
from graft_jax.models.presets import preset
from graft_jax.surrogate import SurrogatePlan
from graft_jax.train import sharding

VIT_SHAPE_FIELDS = ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "variant")


class RecipeError(ValueError):
  """A recipe config that cannot run as given; the message says what to change."""


def source_config(source: str) -> LlamaConfig:
  """The LlamaConfig of a model source (HF directory, converted directory or .gguf), read from
  its config alone."""
  if not os.path.exists(source):
    raise FileNotFoundError(f"model.source={source!r} does not exist")
  if os.path.isfile(source):
    import gguf  # pylint: disable=g-import-not-at-top
    from graft_jax.convert.gguf_llama import read_gguf_fields  # pylint: disable=g-import-not-at-top
    reader = gguf.GGUFReader(source)
    return config_from_gguf_fields(read_gguf_fields(reader), {t.name for t in reader.tensors}, source)
  if is_converted_dir(source):
    with open(os.path.join(source, CONFIG_NAME)) as f:
      return LlamaConfig.from_dict(json.load(f))
  return config_from_hf(read_hf_config(source), os.path.join(source, "config.json"))


def check_decoder_source(config) -> None:
  """model.source must be the recipe's target: its layer count is what the translator range is for."""
  if not config.model.source:
    return
  found, expected = source_config(config.model.source), preset(config.model.preset)
  if found.num_layers != expected.num_layers:
    if config.ranges:
      ranges = ", ".join(f"[{r[0]}, {r[1]}]" for r in config.ranges)
      raise RecipeError(
          f"model.source={config.model.source!r} has {found.num_layers} layers, but the {config.recipe} "
          f"recipe's translator range {ranges} is for the {expected.num_layers}-layer {config.model.preset} "
          "(the range ends at its second-to-last layer); point model.source at that checkpoint or use "
          "the recipe of your model")
    raise RecipeError(f"model.source={config.model.source!r} has {found.num_layers} layers; the "
                      f"{config.recipe} recipe is for the {expected.num_layers}-layer {config.model.preset}")
  diffs = [f"{k} {getattr(found, k)} != {getattr(expected, k)}"
           for k in ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "vocab_size")
           if getattr(found, k) != getattr(expected, k)]
  if diffs:
    raise RecipeError(f"model.source={config.model.source!r} is not a {config.model.preset} checkpoint: "
                      + ", ".join(diffs))


def check_encoder_source(config) -> None:
  """vit.source (a transformers CLIP directory) must have the recipe's encoder shapes."""
  if not config.vit.source:
    return
  path = os.path.join(config.vit.source, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"vit.source={config.vit.source!r}: no config.json (expected an HF CLIP directory)")
  with open(path) as f:
    found = vit_config_from_hf(json.load(f))
  diffs = [f"{k} {getattr(found, k)} != {config.vit[k]}" for k in VIT_SHAPE_FIELDS
           if getattr(found, k) != config.vit[k]]
  if diffs:
    raise RecipeError(f"vit.source={config.vit.source!r} does not match the recipe's encoder: " + ", ".join(diffs))


def check_datasets(config) -> None:
  """Every dataset the stage reads is built under data.data_dir."""
  missing = [n for n in config.data.sources if not os.path.isdir(dataset_dir(n, config.data.data_dir))]
  if missing:
    raise RecipeError(f"Datasets {missing} are not under data.data_dir={config.data.data_dir!r}; build them "
                      "with configs/paper/data.py (or set --config.data.data_dir)")


def check_recipe(config) -> None:
  """Static checks of a recipe config (no devices needed). Training also needs its sources."""
  divisor = config.width_divisor
  if not isinstance(divisor, int) or divisor < 1:
    raise RecipeError(f"width_divisor must be an int >= 1, got {divisor!r}")
  if divisor != 1 and not config.dry_run:
    raise RecipeError(f"width_divisor={divisor} shrinks the model for dry runs only; set --config.dry_run=True "
                      "or --config.width_divisor=1")
  if config.topology and not config.dry_run:
    raise RecipeError(f"topology={config.topology!r} compiles for a TPU slice without one, in dry runs only; "
                      "set --config.dry_run=True or --config.topology=''")
  SurrogatePlan.create(preset(config.model.preset).num_layers, [tuple(r) for r in config.ranges])
  check_decoder_source(config)
  check_encoder_source(config)
  if not config.dry_run:
    if not config.model.source:
      raise RecipeError(f"The {config.recipe} recipe needs --config.model.source=<the {config.model.preset} "
                        "Instruct checkpoint: HF directory or converted directory>")
    if not config.vit.source and config.stage != "translator":
      raise RecipeError("The recipe's encoder is pretrained CLIP ViT-L/14-336: set "
                        "--config.vit.source=<HF directory of openai/clip-vit-large-patch14-336>")
    check_datasets(config)


def resolve_batch(config, mesh: Mesh) -> tuple[int, int]:
  """(rows per device per micro-batch, micro-batches) for the global batch on `mesh`.

  The rows of a micro-batch are split over the batch shards (data x fsdp); each device takes the
  largest number of rows <= train.per_device_batch that divides its share of the batch. With
  train.microbatches = 0 (auto) this sets it; an explicit value is checked instead.
  """
  batch, shards = config.train.batch_size, sharding.batch_size_multiple(mesh)
  if batch % shards:
    raise RecipeError(f"The global batch {batch} cannot be split over {shards} batch shards (mesh "
                      f"{dict(mesh.shape)}: data x fsdp = {shards}); use a mesh whose data x fsdp divides {batch}")
  share = batch // shards
  if config.train.microbatches:
    k = int(config.train.microbatches)
    if share % k:
      raise RecipeError(f"train.microbatches={k} does not divide the {share} rows each batch shard "
                        "gets; use 0 (auto)")
    return share // k, k
  cap = int(config.train.per_device_batch)
  if cap < 1:
    raise RecipeError(f"train.per_device_batch must be >= 1, got {cap}")
  rows = max(d for d in range(1, min(cap, share) + 1) if share % d == 0)
  config.train.microbatches = share // rows
  return rows, share // rows
